"""Durable streams across the nodes of a cluster: resume and cursors on another node, a
node that was down catching up (real nats-server with JetStream, real arqond nodes)."""

from __future__ import annotations

import pytest

from tests.conftest import eventually
from tests.nats_harness import cluster_config, nats_server  # noqa: F401
from tests.test_cluster import joined, publish, start_nodes

pytestmark = pytest.mark.timeout(120)

LOG = {"room": "lab", "channel": "log"}


async def test_a_client_that_moves_to_another_node_resumes_where_it_left_off(
        make_daemon, nats_server, connect_peer):
    first, second = start_nodes(make_daemon, nats_server, "m1", "m2")
    witness = await joined(connect_peer, second, "lab:log")
    mover = await joined(connect_peer, first, "lab:log")
    publisher = await connect_peer(first.ws_url)
    seen = [await publish(publisher, "lab", "log", {"n": n}) for n in range(3)]
    for _ in seen:
        last = (await mover.recv_type("message"))["metadata"]
    await mover.close()
    missed = [await publish(publisher, "lab", "log", {"n": n}) for n in range(3, 7)]
    for _ in [*seen, *missed]:        # the second node has them all
        await witness.recv_type("message", timeout=10)

    moved = await connect_peer(second.ws_url)
    answer = await moved.command("join_channel", {**LOG, "since": last})
    resume = answer["payload"]["data"]["resume"]
    assert (resume["recovered"], resume["reason"], resume["epoch"], resume["last_seq"]) == \
        (True, None, last["epoch"], missed[-1]["metadata"]["seq"])
    got = [await moved.recv_type("message") for _ in missed]
    assert [(m["id"], m["payload"]["n"], m["metadata"]["seq"]) for m in got] == \
        [(ack["id"], n, ack["metadata"]["seq"]) for n, ack in zip(range(3, 7), missed)]
    live = await publish(publisher, "lab", "log", {"n": 7})
    assert (await moved.recv_type("message", timeout=10))["id"] == live["id"]
    await moved.expect_silence(0.3)


async def test_resuming_past_retention_on_another_node_says_what_is_gone(
        make_daemon, nats_server, connect_peer):
    first, second = (make_daemon({**cluster_config(nats_server, name),
                                  "streams": {"max_messages": 3}}, name=name)
                     for name in ("k1", "k2"))
    witness = await joined(connect_peer, second, "lab:log")
    publisher = await connect_peer(first.ws_url)
    acks = [await publish(publisher, "lab", "log", {"n": n}) for n in range(6)]
    for _ in acks:
        await witness.recv_type("message", timeout=10)
    late = await connect_peer(second.ws_url)
    since = {"seq": acks[0]["metadata"]["seq"], "epoch": acks[0]["metadata"]["epoch"]}
    resume = (await late.command("join_channel", {**LOG, "since": since})
              )["payload"]["data"]["resume"]
    earliest = acks[2]["metadata"]["seq"] + 1     # one past the last dropped
    assert (resume["recovered"], resume["earliest_seq"]) == (False, earliest)
    assert resume["reason"] == (f"seq {since['seq'] + 1} is no longer kept (retention); the "
                                f"earliest kept is {earliest}")
    got = [await late.recv_type("message") for _ in range(3)]
    assert [m["id"] for m in got] == [ack["id"] for ack in acks[3:]]
    await late.expect_silence(0.3)


async def test_a_named_cursor_acked_on_one_node_reads_on_from_there_on_another(
        make_daemon, nats_server, connect_peer):
    first, second = start_nodes(make_daemon, nats_server, "c1", "c2")
    witness = await joined(connect_peer, second, "lab:log")
    publisher = await connect_peer(first.ws_url)
    acks = [await publish(publisher, "lab", "log", {"n": n}) for n in range(5)]
    for _ in acks:
        await witness.recv_type("message", timeout=10)
    here = await connect_peer(first.ws_url)
    read = (await here.command("cursor.read", {**LOG, "cursor": "worker", "limit": 2})
            )["payload"]["data"]
    position = read["messages"][-1]["metadata"]
    assert (await here.command("cursor.ack", {**LOG, "cursor": "worker", **position})
            )["status"] == "success"
    there = await connect_peer(second.ws_url)

    async def moved_on():
        data = (await there.command("cursor.read", {**LOG, "cursor": "worker"})
                )["payload"]["data"]
        return data if data["position"] == position else None
    data = await eventually(moved_on)
    assert data is not None, "the other node never heard of the cursor"
    assert data["recovered"] is True
    assert [m["payload"]["n"] for m in data["messages"]] == [2, 3, 4]


async def test_a_node_that_was_down_has_what_was_published_meanwhile(make_daemon, nats_server,
                                                                      connect_peer):
    steady, sleeper = start_nodes(make_daemon, nats_server, "d1", "d2")
    publisher = await connect_peer(steady.ws_url)
    before = [await publish(publisher, "lab", "log", {"n": n}) for n in range(2)]
    sleeper.stop()
    during = [await publish(publisher, "lab", "log", {"n": n}) for n in range(2, 5)]
    sleeper.start()
    reader = await connect_peer(sleeper.ws_url)
    history = (await reader.command("history", LOG))["payload"]["data"]["history"]
    assert [(m["message_id"], m["metadata"]["seq"]) for m in history] == \
        [(ack["id"], ack["metadata"]["seq"]) for ack in [*before, *during]]
    await reader.expect_silence(0.3)      # kept, not delivered as new
