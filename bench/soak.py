"""The soak (issue 12): mixed traffic and abuse against one arqond, killed -9 twice and
restarted at once, as systemd would. ``python -m bench.soak [--duration SECONDS]``; ``make
soak`` runs the default ten minutes. Not part of ``make test``.

Ordinary traffic, whose every record is accounted for:
- bus: a publisher on the WebSocket port and one on HTTP /v1/publish, a subscriber that reads
  everything. Before each kill (and at the end) publishing pauses and every acknowledged message
  must have reached the subscriber, which stayed connected for the whole epoch: lost = 0.
- inbox: a writer keeps NAME-inbox open (so the pipe, and what it holds, outlives a kill, as
  the fd store makes it under systemd) and counts each line whose write succeeded; a Zgent
  reads the mailbox with arqon.recv on its socket, reconnecting after each kill. Every line
  written must be received (at least once).
- narrative: a writer appends to NAME-narrative.jsonl whatever happens; a subscriber follows
  NAME:narrative and, after each reconnect, reads history to fill the gap. Every line must be
  seen.

Abuse, all the while: frames nested past server.max_json_depth, frames over
server.max_message_size, channel, store and cron floods, clients that never read (cut off at
server.client_buffer_bytes and server.output_budget_bytes), reserved and deep telemetry
events, bad control lines and one too long, bad Zgent socket lines, bad HTTP heads and bodies,
and slowloris heads. Reported: RSS over time, losses, and every bound hit (from /metrics, summed
over the daemon's three lives); --output FILE keeps the report as JSON. Exit status 1 when
anything was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bench.procs import rss_mb
from tests.conftest import free_ports, parse_metrics, write_config
from tests.corpus.wsraw import frame, upgrade_request

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
ZGENT = "soak"
TRAFFIC = ("science", "explore")   # hard-coded channels: no flood can take their creation
BLAST = ("science", "design")
MAX_MESSAGE = 65536
# Counters that say a bound was hit (or a refusal made), reported summed over each life.
BOUNDS = (
    "arqonbus_slow_consumers_total", "arqonbus_output_budget_cuts_total",
    "arqonbus_channels_refused_total", "arqonbus_replies_too_large_total",
    "arqonbus_history_evicted_total", "arqonbus_quota_refusals_total",
    "arqonbus_store_refused_total", "arqonbus_ws_refused_total",
    "arqonbus_telemetry_rejected_total", "arqonbus_http_timeouts_total",
    "arqonbus_http_responses_total", "arqonbus_control_oversize_total",
    "arqonbus_moo_inbox_refused_total", "arqonbus_moo_socket_errors_total",
    "arqonbus_moo_mailbox_dropped_total", "arqonbus_narrative_lines_malformed_total",
    "arqonbus_narrative_lines_cut_total", "arqonbus_errors_total",
    "arqonbus_internal_errors_total", "arqonbus_webhook_dropped_total",
)


class Daemon:
    """One arqond on fixed ports and fixed dirs, so that what is restarted after a kill -9
    finds its state (checkpoints, mailboxes) and its clients find it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        ws, telemetry, http = free_ports(3)
        self.ws = ("127.0.0.1", ws)
        self.ws_url = f"ws://127.0.0.1:{ws}/"
        self.telemetry_url = f"ws://127.0.0.1:{telemetry}/"
        self.http = ("127.0.0.1", http)
        for name in ("moo", "log", "state"):
            (tmp / name).mkdir()
        self.moo, self.log_dir = tmp / "moo", tmp / "log"
        self.control = str(tmp / "control.sock")
        self.config = write_config(tmp / "arqond.toml", {
            "server": {"port": ws, "telemetry_port": telemetry, "http_port": http,
                       "log_level": "warning", "state_dir": str(tmp / "state"),
                       "control_socket": self.control, "bus_socket": str(tmp / "bus.sock"),
                       "max_message_size": MAX_MESSAGE, "client_buffer_bytes": 1 << 20,
                       "output_budget_bytes": 6 << 20, "max_channels": 2000,
                       "stats_interval": 3600.0},
            "moo": {"dir": str(self.moo), "log_dir": str(self.log_dir),
                    "max_line_bytes": 2048},
            "zgents": {ZGENT: {}},
        })
        self.log = open(tmp / "arqond.log", "ab")
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives: list[dict[str, float]] = []   # the last /metrics of each life

    def start(self) -> float:
        """Start and wait until /health answers; seconds it took."""
        began = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "arqond", "--config",
                                      str(self.config)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log, cwd=ROOT)
        while True:
            with contextlib.suppress(OSError):
                with socket.create_connection(self.http, timeout=1) as sock:
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return time.monotonic() - began
            if self.proc.poll() is not None:
                raise RuntimeError(f"arqond exited with {self.proc.returncode}; see "
                                   f"{self.tmp / 'arqond.log'}")
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)

    def rss(self) -> float:
        assert self.proc is not None
        return rss_mb(self.proc.pid)[0]

    def metrics(self) -> dict[str, float]:
        with socket.create_connection(self.http, timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        return parse_metrics(reply.partition(b"\r\n\r\n")[2].decode())


class Soak:
    def __init__(self, daemon: Daemon, duration: float, kills: int) -> None:
        self.daemon = daemon
        self.duration = duration
        self.kill_at = [duration * (n + 1) / (kills + 1) for n in range(kills)]
        self.started = 0.0
        self.done = asyncio.Event()
        self.up = asyncio.Event()          # the daemon serves
        self.publishing = asyncio.Event()  # bus publishers may send
        self.rss: list[tuple[float, float]] = []
        self.restarts: list[float] = []
        # bus: per epoch, ids acked and ids the subscriber received
        self.epoch = 0
        self.acked: set[str] = set()
        self.received: set[str] = set()
        self.subscriber_breaks = 0
        self.bus_epochs: list[dict[str, int]] = []
        # inbox and narrative
        self.inbox_written: set[int] = set()
        self.inbox_received: list[int] = []
        self.inbox_write_refused = 0   # writes that failed while arqond was down (retried)
        self.narrative_written = 0
        self.narrative_seen: set[int] = set()
        self.abuse: dict[str, int] = {}

    def now(self) -> float:
        return time.monotonic() - self.started

    def count(self, what: str, n: int = 1) -> None:
        self.abuse[what] = self.abuse.get(what, 0) + n

    async def forever(self, name: str, body: Callable[[], Awaitable[None]],
                      pause: float = 0.2) -> None:
        """Run ``body`` again and again until the end, riding out the daemon's deaths."""
        while not self.done.is_set():
            await self.up.wait()
            try:
                await body()
            except (OSError, ConnectionClosed, InvalidHandshake, asyncio.TimeoutError,
                    asyncio.IncompleteReadError, EOFError):
                self.count(f"{name}: reconnects")
            except Exception as exc:  # a surprise is reported, never silent
                self.count(f"{name}: {type(exc).__name__}: {exc}"[:120])
            await asyncio.sleep(pause)

    # -- ordinary traffic -----------------------------------------------------------------

    async def bus_subscriber(self) -> None:
        async with connect(self.daemon.ws_url, max_size=None) as ws:
            await ws.recv()
            await command(ws, "join_channel", {"room": TRAFFIC[0], "channel": TRAFFIC[1]})
            try:
                async for raw in ws:
                    frame = orjson.loads(raw)
                    if frame.get("channel") == TRAFFIC[1]:
                        self.received.add(frame["id"])
            except ConnectionClosed:
                if self.up.is_set():  # not a kill: the subscriber was cut off
                    self.subscriber_breaks += 1
                raise

    async def bus_publisher(self) -> None:
        async with connect(self.daemon.ws_url, max_size=None) as ws:
            await ws.recv()
            sent = 0
            while not self.done.is_set():
                await self.publishing.wait()
                message_id = f"ws-{self.epoch}-{sent}"
                await ws.send(orjson.dumps({"id": message_id, "type": "message",
                                            "room": TRAFFIC[0], "channel": TRAFFIC[1],
                                            "payload": {"n": sent, "pad": "p" * 200}}).decode())
                ack = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                if ack.get("type") == "message_response" and ack.get("id") == message_id:
                    self.acked.add(message_id)
                sent += 1
                await asyncio.sleep(0.005)

    async def http_publisher(self) -> None:
        sent = 0
        while not self.done.is_set():
            await self.publishing.wait()
            reader, writer = await asyncio.open_connection(*self.daemon.http)
            try:
                body = orjson.dumps({"http": sent})
                writer.write(f"POST /v1/publish?room={TRAFFIC[0]}&channel={TRAFFIC[1]} "
                             f"HTTP/1.1\r\nHost: s\r\nConnection: close\r\nContent-Length: "
                             f"{len(body)}\r\n\r\n".encode() + body)
                reply = await asyncio.wait_for(reader.read(), 10)
                if reply.startswith(b"HTTP/1.1 200"):
                    self.acked.add(orjson.loads(reply.partition(b"\r\n\r\n")[2])["id"])
            finally:
                writer.close()
            sent += 1
            await asyncio.sleep(0.1)

    async def inbox_writer(self) -> None:
        """Lines into NAME-inbox through one fd kept open: a write that succeeded is in the
        pipe, which lives as long as a writer holds it, across arqond's deaths."""
        fd = os.open(self.daemon.moo / f"{ZGENT}-inbox", os.O_WRONLY | os.O_NONBLOCK)
        n = 0
        try:
            while not self.done.is_set():
                line = orjson.dumps({"n": n, "from": "soak-writer"}) + b"\n"
                if n % 100 == 99:  # past moo.max_line_bytes, within PIPE_BUF: refused whole
                    line = orjson.dumps({"n": -n, "pad": "o" * 3000}) + b"\n"
                try:
                    os.write(fd, line)
                except OSError as exc:
                    # EPIPE: arqond is dead, and no one reads until it is back; the fd stays
                    # open so that the lines already in the pipe wait for it. EAGAIN: full.
                    if exc.errno not in (errno.EPIPE, errno.EAGAIN):
                        raise
                    self.inbox_write_refused += 1
                    await asyncio.sleep(0.05)
                    continue
                if n % 100 != 99:
                    self.inbox_written.add(n)
                n += 1
                await asyncio.sleep(0.02)
        finally:
            os.close(fd)

    async def inbox_reader(self) -> None:
        reader, writer = await asyncio.open_unix_connection(str(self.daemon.moo /
                                                                f"{ZGENT}.sock"))
        try:
            request = 0
            while not self.done.is_set() or self.draining:
                request += 1
                writer.write(orjson.dumps({"jsonrpc": "2.0", "id": request,
                                           "method": "arqon.recv", "params": {"wait": 1}})
                             + b"\n")
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 10)
                if not line:
                    raise EOFError("the Zgent socket closed")
                result = orjson.loads(line).get("result")
                if isinstance(result, dict) and result.get("from") == "soak-writer":
                    self.inbox_received.append(result["n"])
                elif result is None and self.draining:
                    return
        finally:
            writer.close()

    draining = False

    async def narrative_writer(self) -> None:
        path = self.daemon.log_dir / f"{ZGENT}-narrative.jsonl"
        with open(path, "ab", buffering=0) as log:
            while not self.done.is_set():
                n = self.narrative_written
                log.write(orjson.dumps({"ts": "2026-01-01T00:00:00Z", "from": ZGENT,
                                        "type": "soak", "content": str(n)}) + b"\n")
                self.narrative_written += 1
                if n % 50 == 0:  # and, now and then, lines that are not the schema's
                    log.write(b"not json at all\n" + b"\x00" * 10 + b"\n")
                await asyncio.sleep(0.02)

    async def narrative_reader(self) -> None:
        async with connect(self.daemon.ws_url, max_size=None) as ws:
            await ws.recv()
            await command(ws, "join_channel", {"room": ZGENT, "channel": "narrative"})
            history = await command(ws, "history", {"room": ZGENT, "channel": "narrative",
                                                    "limit": 500})
            for entry in history["payload"]["data"]["history"]:
                self.saw_narrative(entry.get("payload"))
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame.get("channel") == "narrative":
                    self.saw_narrative(frame.get("payload"))

    def saw_narrative(self, payload: Any) -> None:
        if isinstance(payload, dict) and payload.get("type") == "soak":
            self.narrative_seen.add(int(payload["content"]))

    # -- abuse --------------------------------------------------------------------------------

    async def deep_and_huge_frames(self) -> None:
        async with connect(self.daemon.ws_url, max_size=None) as ws:
            await ws.recv()
            for _ in range(20):
                await ws.send('{"type":"message","room":"science","channel":"share",'
                              '"payload":' + "[" * 200 + "]" * 200 + "}")
                await ws.recv()
                self.count("deep frames")
                await asyncio.sleep(0.05)
            await ws.send("x" * (MAX_MESSAGE + 1))  # closed 1009
            self.count("frames over max_message_size")
            await ws.recv()

    async def floods(self) -> None:
        """Channels, store keys and cron jobs until the quotas and bounds refuse them."""
        async with connect(self.daemon.ws_url, max_size=None) as ws:
            await ws.recv()
            n = 0
            while not self.done.is_set():
                n += 1
                await ws.send(orjson.dumps({"type": "message", "room": "flood",
                                            "channel": f"c{n}", "payload": {"n": n}}).decode())
                await ws.recv()
                await command(ws, "op.store.set", {"key": f"k{n % 2000}",
                                                   "value": "v" * 20000})
                if n % 50 == 0:  # a reply past half of server.client_buffer_bytes
                    await command(ws, "history", {"room": BLAST[0], "channel": BLAST[1],
                                                  "limit": 500})
                if n % 10 == 0:
                    await command(ws, "op.cron.schedule", {
                        "room": "flood", "channel": "cron", "payload": {"n": n},
                        "delay_seconds": 0.5, "interval_seconds": 0.05, "repeat_count": 1000})
                self.count("flood requests", 3)
                await asyncio.sleep(0.02)

    async def blaster(self) -> None:
        """Traffic for the clients that never read: 4 kB messages on a busy channel."""
        async with connect(self.daemon.ws_url, max_size=None) as ws:
            await ws.recv()
            blob = "b" * 4000
            while not self.done.is_set():
                await ws.send(orjson.dumps({"type": "message", "room": BLAST[0],
                                            "channel": BLAST[1], "payload": blob}).decode())
                await ws.recv()
                await asyncio.sleep(0.002)

    async def non_reader(self) -> None:
        """Joins the busy channel, then never reads: cut off when its buffer fills."""
        host, port = self.daemon.ws_url[5:-1].rsplit(":", 1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (host, int(port)))
        await loop.sock_sendall(sock, upgrade_request())
        await loop.sock_sendall(sock, frame(1, orjson.dumps({
            "type": "command", "command": "join_channel",
            "args": {"room": BLAST[0], "channel": BLAST[1]}})))
        self.count("non-reading clients")
        deadline = time.monotonic() + 20
        try:
            while not self.done.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
        finally:
            sock.close()

    async def telemetry_abuse(self) -> None:
        async with connect(self.daemon.telemetry_url, max_size=None) as ws:
            await ws.recv()
            for name in ("client_connected", "channel_created", "casil_decision"):
                await ws.send(orjson.dumps({"eventType": name, "payload": {}}).decode())
            await ws.send('{"eventType":"x","payload":' + "{\"a\":" * 300 + "1" +
                          "}" * 300 + "}")
            await ws.send("{not json")
            self.count("telemetry bad events", 5)
            await asyncio.sleep(0.5)

    async def control_abuse(self) -> None:
        reader, writer = await asyncio.open_unix_connection(self.daemon.control, limit=1 << 22)
        try:
            await reader.readline()
            writer.write(b"not json\n[1]\n{\"type\":\"nope\"}\n\n")
            for _ in range(3):
                await reader.readline()
            writer.write(b"y" * (MAX_MESSAGE + 10) + b"\n")  # too long: answered, closed
            await reader.readline()
            self.count("control bad lines", 4)
        finally:
            writer.close()

    async def zgent_socket_abuse(self) -> None:
        reader, writer = await asyncio.open_unix_connection(str(self.daemon.moo /
                                                                f"{ZGENT}.sock"))
        try:
            for line in (b"nope", b"[1]", b'{"method":5,"id":1}', b'{"method":"arqon.x","id":2}',
                         b"[" * 100 + b"]" * 100, b"z" * 70000):
                writer.write(line + b"\n")
                await asyncio.wait_for(reader.readline(), 10)
            self.count("zgent socket bad lines", 6)
        finally:
            writer.close()

    async def http_abuse(self) -> None:
        http, ws = self.daemon.http, self.daemon.ws
        for address, raw in (
                (http, b"GARBAGE\r\n\r\n"),
                (http, b"GET /v1/history?room=%FF HTTP/1.1\r\nHost: s\r\n\r\n"),
                (http, b"POST /v1/publish?room=flood&channel=x HTTP/1.1\r\nHost: s\r\n"
                       b"Content-Length: 9\r\n\r\n[[[[[[[[["),
                (http, b"HEAD /metrics HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n"),
                (ws, b"GET /?screen_name=%FF HTTP/1.1\r\nHost: s\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: c29hay1zb2FrLXNvYWstMQ==\r\n\r\n")):
            reader, writer = await asyncio.open_connection(*address)
            writer.write(raw)
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.close()
            self.count("HTTP bad requests")
        await asyncio.sleep(0.5)

    async def slowloris(self) -> None:
        """A request head trickled a byte at a time, closed at the request deadline."""
        reader, writer = await asyncio.open_connection(*self.daemon.http)
        try:
            self.count("slowloris heads")
            for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"s" * 10000:
                writer.write(bytes((byte,)))
                await writer.drain()
                await asyncio.sleep(1.0)
                if reader.at_eof() or self.done.is_set():
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    if await asyncio.wait_for(reader.read(1), 0.01) == b"":
                        break
        finally:
            writer.close()

    # -- the conductor -------------------------------------------------------------------------

    async def sample(self) -> None:
        while not self.done.is_set():
            if self.up.is_set():
                with contextlib.suppress(OSError, FileNotFoundError, KeyError):
                    self.rss.append((round(self.now(), 1), round(self.daemon.rss(), 1)))
            await asyncio.sleep(5)

    async def end_epoch(self) -> None:
        """Publishing stops; every acked message must reach the subscriber."""
        self.publishing.clear()
        await asyncio.sleep(0.5)  # answers in flight come back
        deadline = time.monotonic() + 15
        while not self.acked <= self.received and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        lost = len(self.acked - self.received)
        self.bus_epochs.append({"epoch": self.epoch, "acked": len(self.acked),
                                "received": len(self.acked & self.received), "lost": lost})
        self.daemon.lives.append(self.daemon.metrics())

    async def conduct(self) -> None:
        loop = asyncio.get_running_loop()
        for kill_at in self.kill_at:
            await asyncio.sleep(max(kill_at - self.now(), 0))
            await self.end_epoch()
            self.up.clear()
            self.daemon.kill()
            self.epoch += 1
            self.acked, self.received = set(), set()
            self.restarts.append(await loop.run_in_executor(None, self.daemon.start))
            self.up.set()
            await asyncio.sleep(1.0)  # the subscriber reconnects before anyone publishes
            self.publishing.set()
        await asyncio.sleep(max(self.duration - self.now(), 0))
        await self.end_epoch()

    async def run(self) -> dict[str, Any]:
        self.started = time.monotonic()
        self.restarts.append(self.daemon.start())
        self.up.set()
        tasks = [asyncio.create_task(self.forever("bus subscriber", self.bus_subscriber, 0)),
                 asyncio.create_task(self.sample())]
        await asyncio.sleep(1.0)
        self.publishing.set()
        tasks += [asyncio.create_task(coroutine) for coroutine in (
            self.forever("bus publisher", self.bus_publisher),
            self.forever("http publisher", self.http_publisher),
            self.forever("inbox writer", self.inbox_writer),
            self.forever("inbox reader", self.inbox_reader),
            self.forever("narrative writer", self.narrative_writer),
            self.forever("narrative reader", self.narrative_reader),
            self.forever("deep and huge frames", self.deep_and_huge_frames),
            self.forever("floods", self.floods, 1.0),
            self.forever("blaster", self.blaster),
            *(self.forever("non-reader", self.non_reader, 1.0) for _ in range(8)),
            self.forever("telemetry abuse", self.telemetry_abuse),
            self.forever("control abuse", self.control_abuse, 0.5),
            self.forever("zgent socket abuse", self.zgent_socket_abuse, 0.5),
            self.forever("http abuse", self.http_abuse),
            *(self.forever("slowloris", self.slowloris, 1.0) for _ in range(3)))]
        await self.conduct()
        self.done.set()
        # Writers stop; the inbox reader drains what is left, then everything stops.
        await asyncio.sleep(1.0)
        self.draining = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.inbox_reader(), 60)
        await asyncio.sleep(2.0)  # the narrative reader sees the last lines
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return self.report()

    def report(self) -> dict[str, Any]:
        bounds: dict[str, float] = {}
        for life in self.daemon.lives:
            for key, value in life.items():
                if key.split("{")[0] in BOUNDS and (value or "internal_errors" in key):
                    bounds[key] = bounds.get(key, 0) + value
        received = set(self.inbox_received)
        return {
            "duration_s": self.duration, "kills": len(self.kill_at),
            "restart_s": [round(seconds, 2) for seconds in self.restarts],
            "rss_mb": self.rss,
            "bus": {"epochs": self.bus_epochs,
                    "lost": sum(epoch["lost"] for epoch in self.bus_epochs),
                    "subscriber_cut_off": self.subscriber_breaks},
            "inbox": {"written": len(self.inbox_written),
                      "received": len(received & self.inbox_written),
                      "duplicates": len(self.inbox_received) - len(received),
                      "lost": len(self.inbox_written - received),
                      "writes_refused_while_down": self.inbox_write_refused},
            "narrative": {"written": self.narrative_written,
                          "seen": len(self.narrative_seen),
                          "lost": self.narrative_written - len(self.narrative_seen)},
            "abuse": self.abuse, "bounds_hit": dict(sorted(bounds.items())),
        }


async def command(ws: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run a command: its response (the command_response ack is read too)."""
    await ws.send(orjson.dumps({"type": "command", "command": name, "args": args}).decode())
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame.get("type") == "response" and frame.get("command") == name:
            await asyncio.wait_for(ws.recv(), 10)
            return frame


def summary(report: dict[str, Any]) -> str:
    rss = report["rss_mb"]
    lines = [f"soak: {report['duration_s']:.0f} s, kill -9 x{report['kills']}, restarts took "
             f"{', '.join(f'{s} s' for s in report['restart_s'][1:])}",
             "RSS (MiB) over time: " + ", ".join(f"{t:.0f}s={m}" for t, m in rss[::max(
                 len(rss) // 12, 1)]),
             f"RSS min/max: {min(m for _, m in rss)}/{max(m for _, m in rss)} MiB",
             f"bus acked and lost: {report['bus']}",
             f"inbox: {report['inbox']}", f"narrative: {report['narrative']}",
             "bounds hit (summed over the lives):"]
    lines += [f"  {key} = {value:g}" for key, value in report["bounds_hit"].items()]
    lines += ["abuse sent:"] + [f"  {key}: {value}" for key, value in
                                sorted(report["abuse"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0,
                        help="seconds (default 600: ten minutes)")
    parser.add_argument("--kills", type=int, default=2, help="kill -9 and restart (default 2)")
    parser.add_argument("--output", metavar="FILE", help="also write the report as JSON")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="arqond-soak-"))
    daemon = Daemon(tmp)
    try:
        report = asyncio.run(Soak(daemon, args.duration, args.kills).run())
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
    if args.output:
        Path(args.output).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(summary(report))
    shutil.rmtree(tmp, ignore_errors=True)
    failed = report["bus"]["lost"] or report["inbox"]["lost"] or report["narrative"]["lost"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
