"""Durable streams against the real daemon: history that survives kill -9, resume from
(seq, epoch) after a disconnect or past retention, cursors across restarts, a full disk and a
corrupt store."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import http_call, metrics_of, run_arqon, scaled

TARGET = {"room": "lab", "channel": "notes"}


async def everything(connect_peer, daemon, epoch: str, target: dict = TARGET) -> list[dict]:
    """Every message the channel's stream holds, by a resume from its very start."""
    reader = await connect_peer(daemon.ws_url)
    response = await reader.command("join_channel", {**target, "since": {"seq": 0,
                                                                         "epoch": epoch}})
    assert response["status"] == "success", response
    last = response["payload"]["data"]["resume"]["last_seq"]
    messages = [await reader.recv_type("message") for _ in range(last)]
    await reader.expect_silence(0.2)
    await reader.close()      # before arqond is killed under it
    return messages


def seqs(messages: list[dict]) -> list[int]:
    return [m["metadata"]["seq"] for m in messages]


async def test_every_acked_message_survives_kill_9_in_order_without_gaps(make_daemon,
                                                                         connect_peer):
    """A steady stream of publishes, arqond killed with SIGKILL three times in the middle of
    it: every message that was acknowledged is in the stream after each restart, once, with
    seqs 1, 2, 3, ... in the order of the acks."""
    # Kept whole: retention must not trim what the last check reads back.
    daemon = make_daemon({"streams": {"max_messages": 10_000_000}})
    acked: list[tuple[int, str]] = []          # (seq, payload id) in ack order
    epoch = None
    for life in range(3):
        async with connect(daemon.ws_url, open_timeout=scaled(5)) as ws:
            await ws.recv()
            async def publish() -> None:
                try:
                    for n in range(100_000):
                        frame = {"type": "message", **TARGET, "payload": {"mark": f"{life}-{n}"}}
                        await ws.send(orjson.dumps(frame).decode())
                        await asyncio.sleep(0)
                except ConnectionClosed:
                    pass

            async def collect() -> None:
                nonlocal epoch
                try:
                    async for raw in ws:
                        frame = orjson.loads(raw)
                        if frame["type"] == "message_response":
                            meta = frame["metadata"]
                            epoch = epoch or meta["epoch"]
                            assert meta["epoch"] == epoch   # one past: never started again
                            acked.append((meta["seq"], frame["payload"]["mark"]))
                except ConnectionClosed:
                    pass
            tasks = [asyncio.create_task(publish()), asyncio.create_task(collect())]
            await asyncio.sleep(scaled(0.6))
            daemon.kill()
            await asyncio.wait(tasks, timeout=scaled(5))
            for task in tasks:
                task.cancel()
        daemon.start()
        assert len(acked) > 50 * (life + 1), "the publisher hardly got going"
        stored = await everything(connect_peer, daemon, epoch)
        assert seqs(stored) == list(range(1, len(stored) + 1))          # no gap, no duplicate
        marks = {m["metadata"]["seq"]: m["payload"]["mark"] for m in stored}
        assert all(marks[seq] == mark for seq, mark in acked)           # every ack is there
    assert [seq for seq, _ in acked] == sorted(seq for seq, _ in acked)


async def test_a_client_that_reconnects_resumes_exactly_where_it_left(daemon, connect_peer):
    sender = await connect_peer(daemon.ws_url)
    reader = await connect_peer(daemon.ws_url)
    await reader.command("join_channel", TARGET)
    for n in range(3):
        await sender.send({"type": "message", **TARGET, "payload": {"n": n}})
    got = [await reader.recv_type("message") for _ in range(3)]
    last = got[-1]["metadata"]
    await reader.close()
    for n in range(3, 7):
        await sender.send({"type": "message", **TARGET, "payload": {"n": n}})
        await sender.recv_type("message_response")
    back = await connect_peer(daemon.ws_url)
    response = await back.command("join_channel", {**TARGET, "since": {
        "seq": last["seq"], "epoch": last["epoch"]}})
    assert response["payload"]["data"]["resume"] == {
        "recovered": True, "reason": None, "epoch": last["epoch"], "earliest_seq": 1,
        "last_seq": 7}
    missed = [await back.recv_type("message") for _ in range(4)]
    assert [m["payload"]["n"] for m in missed] == [3, 4, 5, 6]
    await sender.send({"type": "message", **TARGET, "payload": {"n": 7}})
    assert (await back.recv_type("message"))["payload"]["n"] == 7
    await back.expect_silence(0.2)


async def test_resume_past_retention_says_what_was_lost_and_gives_what_is_kept(make_daemon,
                                                                                connect_peer):
    daemon = make_daemon({"streams": {"max_messages": 5}})
    sender = await connect_peer(daemon.ws_url)
    for n in range(12):
        await sender.send({"type": "message", **TARGET, "payload": {"n": n}})
        ack = await sender.recv_type("message_response")
    epoch = ack["metadata"]["epoch"]
    reader = await connect_peer(daemon.ws_url)
    response = await reader.command("join_channel", {**TARGET, "since": {"seq": 2,
                                                                         "epoch": epoch}})
    assert response["payload"]["data"]["resume"] == {
        "recovered": False, "reason": "seq 3 is no longer kept (retention); the earliest kept "
        "is 8", "epoch": epoch, "earliest_seq": 8, "last_seq": 12}
    assert [(await reader.recv_type("message"))["metadata"]["seq"] for _ in range(5)] == \
        [8, 9, 10, 11, 12]
    # The store holds just those five of the channel.
    stored = sqlite3.connect(daemon.state_dir / "streams.sqlite3").execute(
        "SELECT count(*), min(seq), max(seq) FROM messages JOIN streams ON stream=id "
        "WHERE room='lab' AND channel='notes'").fetchone()
    assert stored == (5, 8, 12)


async def test_history_and_arqon_history_show_messages_from_before_a_restart(daemon,
                                                                             connect_peer):
    sender = await connect_peer(daemon.ws_url)
    for n in range(3):
        await sender.send({"type": "message", **TARGET, "payload": {"n": n}})
        await sender.recv_type("message_response")
    daemon.stop()
    daemon.start()
    reader = await connect_peer(daemon.ws_url)
    history = (await reader.command("history", TARGET))["payload"]["data"]["history"]
    assert [m["payload"]["n"] for m in history] == [0, 1, 2]
    assert [m["metadata"]["seq"] for m in history] == [1, 2, 3]
    cli = run_arqon(daemon, "cmd", "history", "room=lab", "channel=notes")
    assert cli.returncode == 0, cli.stderr
    assert [m["payload"]["n"] for m in orjson.loads(cli.stdout)["history"]] == [0, 1, 2]
    # The numbering goes on where it was.
    await reader.send({"type": "message", **TARGET, "payload": {"n": 3}})
    assert (await reader.recv_type("message_response"))["metadata"]["seq"] == 4


async def test_a_named_cursor_survives_restarts(daemon, connect_peer):
    sender = await connect_peer(daemon.ws_url)
    for n in range(4):
        await sender.send({"type": "message", **TARGET, "payload": {"n": n}})
        await sender.recv_type("message_response")
    reader = await connect_peer(daemon.ws_url)
    first = (await reader.command("cursor.read", {**TARGET, "cursor": "catchup", "limit": 2})
             )["payload"]["data"]
    last = first["messages"][-1]["metadata"]
    assert (await reader.command("cursor.ack", {**TARGET, "cursor": "catchup", **last}))[
        "status"] == "success"
    daemon.kill()
    daemon.start()
    again = await connect_peer(daemon.ws_url)
    rest = (await again.command("cursor.read", {**TARGET, "cursor": "catchup"}))["payload"]["data"]
    assert [m["payload"]["n"] for m in rest["messages"]] == [2, 3]
    assert rest["position"] == {"seq": 2, "epoch": last["epoch"]} and rest["recovered"]


@pytest.fixture
def small_disk():
    """A 1 MiB tmpfs for a state dir: a disk that fills."""
    path = tempfile.mkdtemp(prefix="arqond-full-")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0750", "tmpfs", path],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        os.rmdir(path)
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield Path(path)
    subprocess.run(["umount", path], check=True)
    os.rmdir(path)


async def test_a_full_disk_refuses_publishes_says_why_and_recovers_without_a_gap(
        small_disk, make_daemon, connect_peer):
    daemon = make_daemon({"server": {"state_dir": str(small_disk)}})
    sender = await connect_peer(daemon.ws_url)
    watcher = await connect_peer(daemon.ws_url)
    await watcher.command("join_channel", TARGET)
    filler = small_disk / "filler"
    with open(filler, "wb") as out:
        try:
            out.write(b"x" * (1 << 20))
        except OSError:
            pass     # the disk is full: what was written stays
    refused = None
    for n in range(2000):
        await sender.send({"type": "message", **TARGET, "payload": {"n": n, "pad": "y" * 2000}})
        reply = await sender.recv()
        if reply["type"] == "error":
            refused = reply
            break
        await watcher.recv_type("message")
    assert refused is not None, "the disk never filled"
    assert refused["error_code"] == "STORE_FAILED"
    assert refused["error"] == (f"not stored, so not sent: the disk holding {small_disk}/"
                                "streams.sqlite3 is full")
    await watcher.expect_silence(0.3)                 # refused means not delivered either
    daemon.wait_for_line("streams store: the disk holding")
    assert metrics_of(daemon)["arqonbus_streams_write_errors_total"] >= 1
    filler.unlink()
    await sender.send({"type": "message", **TARGET, "payload": {"n": "after"}})
    ack = await sender.recv_type("message_response")
    got = await watcher.recv_type("message")
    assert got["payload"] == {"n": "after"}
    assert got["metadata"]["seq"] == ack["metadata"]["seq"] == n + 1   # no hole where it failed


async def test_a_corrupt_store_is_set_aside_and_every_stream_starts_a_new_epoch(
        make_daemon, connect_peer):
    daemon = make_daemon()
    sender = await connect_peer(daemon.ws_url)
    await sender.send({"type": "message", **TARGET, "payload": {"n": 0}})
    before = (await sender.recv_type("message_response"))["metadata"]["epoch"]
    daemon.stop()
    store = daemon.state_dir / "streams.sqlite3"
    store.write_bytes(b"this is not a database" * 100)
    daemon.start()
    daemon.wait_for_line("is unreadable")
    [aside] = list(daemon.state_dir.glob("streams.sqlite3.corrupt-*"))
    assert aside.read_bytes().startswith(b"this is not a database")
    again = await connect_peer(daemon.ws_url)
    await again.send({"type": "message", **TARGET, "payload": {"n": 1}})
    ack = (await again.recv_type("message_response"))["metadata"]
    assert ack["seq"] == 1 and ack["epoch"] != before
    response = await again.command("join_channel", {**TARGET, "since": {"seq": 1,
                                                                        "epoch": before}})
    assert response["payload"]["data"]["resume"]["recovered"] is False
    assert metrics_of(daemon)["arqonbus_streams_set_aside_total"] == 1


async def test_memory_durability_keeps_no_store_and_says_so_with_a_new_epoch(make_daemon,
                                                                             connect_peer):
    daemon = make_daemon({"streams": {"durability": "memory"}})
    sender = await connect_peer(daemon.ws_url)
    await sender.send({"type": "message", **TARGET, "payload": {"n": 0}})
    first = (await sender.recv_type("message_response"))["metadata"]["epoch"]
    daemon.stop()
    daemon.start()
    assert not (daemon.state_dir / "streams.sqlite3").exists()
    again = await connect_peer(daemon.ws_url)
    await again.send({"type": "message", **TARGET, "payload": {"n": 1}})
    ack = (await again.recv_type("message_response"))["metadata"]
    assert ack["seq"] == 1 and ack["epoch"] != first


async def test_on_full_memory_goes_on_without_the_store_and_health_says_so(
        small_disk, make_daemon, connect_peer):
    daemon = make_daemon({"server": {"state_dir": str(small_disk)},
                          "streams": {"on_full": "memory"}})
    sender = await connect_peer(daemon.ws_url)
    await sender.send({"type": "message", **TARGET, "payload": {"n": "before"}})
    before = (await sender.recv_type("message_response"))["metadata"]
    assert before["stored"] is True
    with open(small_disk / "filler", "wb") as out:
        try:
            out.write(b"x" * (1 << 20))
        except OSError:
            pass
    for n in range(2000):
        await sender.send({"type": "message", **TARGET, "payload": {"n": n, "pad": "y" * 2000}})
        ack = await sender.recv_type("message_response")     # never refused
        if not ack["metadata"]["stored"]:
            break
    assert ack["metadata"]["epoch"] != before["epoch"]
    health = http_call(daemon, "GET", "/health")
    body = orjson.loads(health.body)
    assert (health.status, body["status"]) == (200, "degraded")
    assert body["faults"] == [f"streams store: the disk holding {small_disk}/streams.sqlite3 is "
                              "full; going on in memory until arqond restarts"]
