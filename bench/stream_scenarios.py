"""B8, durable streams (issue 15): publish → ack latency under each durability, the time to
resume 100,000 missed messages, bytes on disk per 200-byte message, and start-up with 1 GB of
stored history. B1 and B2 show the throughput and latency cost against streams in memory only.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect

from arqond.streams.sqlite import FILE_NAME, SCHEMA
from bench import procs
from bench.startup import time_to_ready
from bench.stats import latency_row, percentile, row

TARGET = {"room": "bench", "channel": "stream"}
PAD = "x" * 200


async def _ack_latencies(url: str, count: int, rate: int) -> list[float]:
    """Publish ``count`` 200-byte messages at ``rate`` per second, each timed from its send to
    its acknowledgement (which comes once it is stored), in ns."""
    latencies = []
    async with connect(url, max_size=None) as ws:
        await ws.recv()
        began = time.monotonic()
        for n in range(count):
            delay = began + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.monotonic_ns()
            await ws.send(orjson.dumps({"type": "message", **TARGET,
                                        "payload": {"n": n, "pad": PAD}}).decode())
            while orjson.loads(await ws.recv())["type"] != "message_response":
                pass
            latencies.append(time.monotonic_ns() - sent)
    return latencies


async def _publish_fast(url: str, count: int) -> str:
    """Publish ``count`` 200-byte messages as fast as the acks come (64 in flight); the
    stream's epoch."""
    epoch = ""
    async with connect(url, max_size=None) as ws:
        await ws.recv()
        frames = [orjson.dumps({"type": "message", **TARGET, "payload": {"n": n, "pad": PAD}})
                  .decode() for n in range(count)]
        acked = sent = 0
        while acked < count:
            while sent < count and sent - acked < 64:
                await ws.send(frames[sent])
                sent += 1
            frame = orjson.loads(await ws.recv())
            if frame["type"] == "message_response":
                acked += 1
                epoch = frame["metadata"]["epoch"]
    return epoch


async def _resume_all(url: str, epoch: str, count: int) -> float:
    """Seconds from a resume at seq 0 to the last of ``count`` messages received."""
    async with connect(url, max_size=None) as ws:
        await ws.recv()
        began = time.monotonic()
        await ws.send(orjson.dumps({"type": "command", "command": "join_channel", "args": {
            **TARGET, "since": {"seq": 0, "epoch": epoch}}}).decode())
        received = 0
        while received < count:
            if orjson.loads(await ws.recv())["type"] == "message":
                received += 1
        return time.monotonic() - began


def b8_streams(settings: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    count, rate = settings["b8_acks"], settings["b8_rate"]
    for durability in ("write", "fsync", "memory"):
        with procs.arqond({"streams": {"durability": durability}}) as daemon:
            latencies = asyncio.run(_ack_latencies(daemon.ws_url, count, rate))
        rows.append(latency_row("B8", f"arqond durability={durability}", latencies,
                                note=f"publish → ack, {rate} msg/s"))
    missed = settings["b8_resume"]
    with procs.arqond({"streams": {"max_messages": missed * 2, "max_bytes": 1 << 30}}) \
            as daemon:
        began = time.monotonic()
        epoch = asyncio.run(_publish_fast(daemon.ws_url, missed))
        publish_seconds = time.monotonic() - began
        store = daemon.state_dir / FILE_NAME
        on_disk = sum(os.path.getsize(f"{store}{suffix}") for suffix in ("", "-wal")
                      if os.path.exists(f"{store}{suffix}"))
        seconds = asyncio.run(_resume_all(daemon.ws_url, epoch, missed))
    rows.append(row("B8", "arqond", f"resume {missed} missed messages", seconds * 1000, "ms",
                    note=f"{missed / seconds:,.0f} msg/s replayed; published at "
                         f"{missed / publish_seconds:,.0f} msg/s, each acked once stored"))
    rows.append(row("B8", "arqond", "bytes on disk per 200-byte message", on_disk / missed,
                    "bytes", note=f"{on_disk / 1e6:.1f} MB for {missed} messages (with the WAL; "
                                  "each stored frame is the whole envelope, ~330 bytes)"))
    rows.append(startup_with_history(settings["b8_history_bytes"]))
    return rows


def startup_with_history(total: int) -> dict[str, Any]:
    """B7's exec → ready with ``total`` bytes of history in the store (1 GB in the full suite),
    written straight into a store of arqond's own schema."""
    frame = orjson.dumps({"id": "arq_0_0_000000", "type": "message", **TARGET, "sender": "b",
                          "payload": {"pad": PAD}, "metadata": {"seq": 0, "epoch": "e"}})
    per_channel = 200_000
    messages = total // len(frame)
    times = []
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir(mode=0o750)
        db = sqlite3.connect(state / FILE_NAME)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        db.execute("INSERT INTO meta VALUES ('schema', '1')")
        channels = max(1, messages // per_channel)
        for c in range(channels):
            first, last = c * per_channel + 1, min(messages, (c + 1) * per_channel)
            db.execute("INSERT INTO streams VALUES (?, 'bench', ?, 'e', 1, ?, ?, ?, ?, '{}')",
                       (c + 1, f"c{c}", last - first + 1, last - first + 1,
                        (last - first + 1) * len(frame),
                        orjson.dumps({"messages": per_channel, "bytes": 1 << 30, "age": 0.0})
                        .decode()))
            db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?)",
                           ((c + 1, seq, 0.0, frame) for seq in range(1, last - first + 2)))
            db.commit()
        db.close()
        # On disk before the clock starts: a restart with history has no gigabyte of dirty
        # pages being written back under it (seen: +150 ms on the first starts).
        os.sync()
        size = sum(f.stat().st_size for f in state.iterdir())
        for _ in range(3):
            # The harness puts the state dir at TMP/state: the store written above.
            seconds, source = time_to_ready(Path(tmp))
            times.append(seconds * 1000)
    return {**row("B8", "arqond", f"exec → ready with {size / 1e9:.1f} GB of stored history",
                  None, "ms", target="≤ 300", note=f"{channels} channel(s), {source}"),
            "p50": percentile(times, 0.5), "p99": percentile(times, 0.99), "max": max(times)}
