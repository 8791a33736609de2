"""Faults during traffic: a node killed with SIGKILL, nats-server stopped for 5 s (real
nats-server with JetStream, real arqond nodes)."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import eventually, scaled, settle
from tests.nats_harness import nats_server  # noqa: F401
from tests.test_cluster import joined, start_nodes

pytestmark = pytest.mark.timeout(180)

LOG = {"room": "lab", "channel": "log"}


async def steady_publisher(url: str, acked: list[dict], interval: float) -> None:
    """Publish one message every ``interval`` until the connection ends; every ack kept."""
    with contextlib.suppress(ConnectionClosed, OSError):
        async with connect(url, open_timeout=scaled(5)) as ws:
            await ws.recv()

            async def send() -> None:
                for n in range(1_000_000):
                    await ws.send(orjson.dumps({"type": "message", **LOG,
                                                "payload": {"n": n}}).decode())
                    await asyncio.sleep(interval)
            sender = asyncio.create_task(send())
            try:
                async for raw in ws:
                    frame = orjson.loads(raw)
                    if frame["type"] == "message_response":
                        acked.append(frame)
            finally:
                sender.cancel()


async def everything(peer, node) -> list[dict]:
    """The whole history of lab:log on ``node``."""
    data = (await peer.command("history", {**LOG, "limit": 500}))["payload"]["data"]
    return data["history"]


async def test_a_node_killed_mid_stream_loses_nothing_it_acked_and_its_clients_resume_elsewhere(
        make_daemon, nats_server, connect_peer):
    doomed, survivor, third = start_nodes(make_daemon, nats_server, "x1", "x2", "x3")
    reader = await joined(connect_peer, doomed, "lab:log")
    witness = await joined(connect_peer, third, "lab:log")
    acked: list[dict] = []
    publishing = asyncio.create_task(steady_publisher(doomed.ws_url, acked, 0.005))
    while len(acked) < 50:
        await asyncio.sleep(0.05)
    seen = []
    while len(seen) < 30:
        seen.append(await reader.recv_type("message"))
    doomed.kill()
    await asyncio.wait_for(publishing, scaled(10))
    assert len(acked) >= 50

    # The survivor has every acked message once its own copy has read them (and what the
    # doomed node stored but could not ack, a moment later).
    observer = await connect_peer(survivor.ws_url)
    acked_ids = {ack["id"] for ack in acked}
    await eventually(lambda: everything(observer, survivor),
                     done=lambda got: acked_ids <= {m["message_id"] for m in got})
    await settle(0.5)
    # The reader comes back on another node and resumes from the last message it saw.
    moved = await connect_peer(survivor.ws_url)
    last = seen[-1]["metadata"]
    resume = (await moved.command("join_channel", {**LOG, "since": last})
              )["payload"]["data"]["resume"]
    assert resume["recovered"] is True, resume
    kept = await everything(observer, survivor)
    assert [m["message_id"] for m in kept[:len(seen)]] == [m["id"] for m in seen]
    after = [await moved.recv_type("message") for _ in kept[len(seen):]]
    assert [m["id"] for m in after] == [m["message_id"] for m in kept[len(seen):]]
    await moved.expect_silence(0.3)
    # Every acked message is there once, in the order of its ack, numbered as acked.
    ids = [m["message_id"] for m in kept]
    assert len(ids) == len(set(ids))
    assert [(m["message_id"], m["metadata"]["seq"]) for m in kept[:len(acked)]] == \
        [(ack["id"], ack["metadata"]["seq"]) for ack in acked]
    # The third node delivered the same, live.
    live = [await witness.recv_type("message", timeout=10) for _ in kept]
    assert [m["id"] for m in live] == ids
    await witness.expect_silence(0.3)


async def test_nats_stopped_for_five_seconds_during_traffic_loses_and_repeats_nothing(
        make_daemon, nats_server, connect_peer):
    busy, quiet = start_nodes(make_daemon, nats_server, "t1", "t2")
    here = await joined(connect_peer, busy, "lab:log")
    there = await joined(connect_peer, quiet, "lab:log")
    acked: list[dict] = []
    publishing = asyncio.create_task(steady_publisher(busy.ws_url, acked, 0.02))
    while len(acked) < 20:
        await asyncio.sleep(0.05)
    nats_server.stop()
    busy.wait_for_line("cluster: lost the connection to NATS")
    await asyncio.sleep(scaled(5))
    during = len(acked)
    nats_server.start()
    busy.wait_for_line("cluster: node t1 shares cluster arqond", timeout=20)
    while len(acked) < during + 20:
        await asyncio.sleep(0.05)
    publishing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await publishing
    assert any("seq" not in ack["metadata"] for ack in acked), "no message during the outage"
    expected = [ack["id"] for ack in acked]
    got_here = [(await here.recv_type("message", timeout=10))["id"] for _ in expected]
    assert got_here == expected
    got_there = [(await there.recv_type("message", timeout=20))["id"] for _ in expected]
    assert got_there == expected      # every one once, the outage's among them, in order
    for peer in (here, there):
        await peer.expect_silence(0.5)
    seqs = [m["metadata"]["seq"] for m in await everything(there, quiet)][-len(expected):]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
