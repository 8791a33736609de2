"""A cluster whose NATS is away: at start, and lost while running (real nats-server)."""

from __future__ import annotations

import pytest

from tests.conftest import eventually, http_call, metrics_of
from tests.nats_harness import cluster_config, nats_server, nats_unstarted  # noqa: F401
from tests.test_cluster import joined, publish

pytestmark = pytest.mark.timeout(120)


async def test_a_node_serves_alone_while_nats_is_unreachable_and_shares_when_it_comes(
        make_daemon, nats_unstarted, connect_peer):
    server = nats_unstarted
    node = make_daemon(cluster_config(server, "alone"), name="alone")
    node.wait_for_line(f"cluster: NATS ({server.url}) not reachable within 5 s; node alone "
                       "serves its own clients alone and joins when it can")
    health = http_call(node, "GET", "/health").json()
    assert health["status"] == "degraded"
    assert len(health["faults"]) == 1 and health["faults"][0].startswith(
        "cluster: NATS unreachable since ")
    assert health["faults"][0].endswith(" (connecting); serving this node's clients alone, "
                                        "0 message(s) kept to share")
    metrics = metrics_of(node)
    assert (metrics["arqonbus_cluster_connected"], metrics["arqonbus_cluster_joined"]) == (0, 0)
    listener = await joined(connect_peer, node, "lab:talk")
    publisher = await connect_peer(node.ws_url)
    ack = await publish(publisher, "lab", "talk", {"n": 0})
    assert ack["metadata"] == {}      # delivered, not numbered: the ack says nothing more
    got = await listener.recv_type("message")
    assert (got["id"], got["payload"], got["metadata"]) == (ack["id"], {"n": 0}, {})
    assert metrics_of(node)["arqonbus_cluster_kept_total"] == 1

    server.start()
    node.wait_for_line("cluster: node alone shares cluster arqond", timeout=15)
    assert http_call(node, "GET", "/health").json()["status"] == "healthy"
    await listener.expect_silence(0.5)        # its numbered copy is kept, not sent again
    later = make_daemon(cluster_config(server, "later"), name="later")
    reader = await connect_peer(later.ws_url)
    history = (await reader.command("history", {"room": "lab", "channel": "talk"})
               )["payload"]["data"]["history"]
    assert [(m["message_id"], m["payload"], m["metadata"]["seq"]) for m in history] == \
        [(ack["id"], {"n": 0}, 1)]


async def test_nats_lost_while_running_keeps_local_delivery_and_shares_up_to_the_bound(
        make_daemon, nats_server, connect_peer):
    away, other = (make_daemon(cluster_config(nats_server, name, outage_buffer=2), name=name)
                   for name in ("away", "other"))
    here = await joined(connect_peer, away, "lab:talk")
    there = await joined(connect_peer, other, "lab:talk")
    publisher = await connect_peer(away.ws_url)
    before = await publish(publisher, "lab", "talk", {"n": "before"})
    assert (await there.recv_type("message"))["id"] == before["id"]
    assert (await here.recv_type("message"))["id"] == before["id"]

    nats_server.stop()
    away.wait_for_line("cluster: lost the connection to NATS; local delivery goes on")
    acks = [await publish(publisher, "lab", "talk", {"n": n}) for n in range(3)]
    assert [ack["metadata"] for ack in acks] == [{}, {}, {}]
    assert [(m["id"], m["metadata"]) for m in
            [await here.recv_type("message") for _ in acks]] == [(a["id"], {}) for a in acks]
    away.wait_for_line("cluster: NATS is unreachable and cluster.outage_buffer (2) messages "
                       "wait to be shared: 1 message(s) delivered here only, never shared")
    metrics = metrics_of(away)
    assert (metrics["arqonbus_cluster_kept_total"], metrics["arqonbus_cluster_unshared_total"],
            metrics["arqonbus_cluster_outage_kept"]) == (2, 1, 2)
    fault = http_call(away, "GET", "/health").json()["faults"]
    assert len(fault) == 1 and fault[0].endswith(" (lost); serving this node's clients "
                                                 "alone, 2 message(s) kept to share")

    nats_server.start()
    away.wait_for_line("cluster: node away shares cluster arqond", timeout=15)
    shared = [await there.recv_type("message", timeout=15) for _ in range(2)]
    seq = before["metadata"]["seq"]
    assert [(m["id"], m["payload"], m["metadata"]["seq"]) for m in shared] == \
        [(acks[0]["id"], {"n": 0}, seq + 1), (acks[1]["id"], {"n": 1}, seq + 2)]
    await there.expect_silence(0.5)           # the third was never shared
    await here.expect_silence(0.3)            # nothing twice here
    assert metrics_of(away)["arqonbus_cluster_outage_kept"] == 0

    async def kept_here() -> list[str]:   # recorded once this node's own copy has them
        history = (await here.command("history", {"room": "lab", "channel": "talk"})
                   )["payload"]["data"]["history"]
        return [m["message_id"] for m in history]
    assert await eventually(kept_here, done=lambda got: len(got) >= 3) == \
        [before["id"], acks[0]["id"], acks[1]["id"]]


async def test_a_node_whose_copy_is_behind_refuses_publishes_and_reads_the_stream_later(
        make_daemon, nats_server, connect_peer):
    """streams.max_pending_bytes bounds what waits for JetStream and for this node's copy:
    past it a client's publish is refused, and reading the stream waits (JetStream holds the
    rest); nothing accepted is lost or doubled."""
    slow = make_daemon({**cluster_config(nats_server, "slow"),
                        "streams": {"max_pending_bytes": 100}}, name="slow")
    other = make_daemon(cluster_config(nats_server, "other"), name="other")
    there = await joined(connect_peer, other, "lab:talk")
    publisher = await connect_peer(slow.ws_url)
    for n in range(10):       # one burst: the first waits for its copy while the rest come
        await publisher.send({"type": "message", "room": "lab", "channel": "talk",
                              "payload": {"n": n}})
    answers = [await publisher.recv(timeout=10) for _ in range(10)]
    accepted = [a for a in answers if a["type"] == "message_response"]
    refused = [a for a in answers if a["type"] == "error"]
    assert accepted and refused and len(accepted) + len(refused) == 10
    assert {(e["error_code"], e["error"]) for e in refused} == {(
        "LIMIT_EXCEEDED", "the store is behind: streams.max_pending_bytes (100) wait to be "
                          "written; try again shortly")}
    got = [await there.recv_type("message", timeout=10) for _ in accepted]
    assert [m["id"] for m in got] == [a["id"] for a in accepted]
    await there.expect_silence(0.3)
    slow.wait_for_line("cluster: streams.max_pending_bytes (100) wait for this node's copy of "
                       "the stream; reading it waits")
    metrics = metrics_of(slow)
    assert metrics["arqonbus_cluster_behind_total"] >= 1
    assert metrics["arqonbus_streams_pending_bytes"] == 0
