"""Several arqond nodes as one bus through a real nats-server (JetStream) on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import pytest

from tests.conftest import ROOT, eventually, http_call, metrics_of, scaled, sh
from tests.nats_harness import cluster_config, nats_server  # noqa: F401 - a fixture

pytestmark = pytest.mark.timeout(90)


def start_nodes(make_daemon, server, *names: str, **cluster):
    return [make_daemon(cluster_config(server, name, **cluster), name=name) for name in names]


async def joined(connect_peer, node, *channels: str):
    """A client of ``node`` that joined every room:channel of ``channels``."""
    peer = await connect_peer(node.ws_url)
    for target in channels:
        room, _, channel = target.partition(":")
        answer = await peer.command("join_channel", {"room": room, "channel": channel})
        assert answer["status"] == "success", answer
    return peer


async def publish(peer, room: str, channel: str, payload, **extra):
    """Publish and return the ack (message_response) with its id."""
    await peer.send({"type": "message", "room": room, "channel": channel, "payload": payload,
                     **extra})
    ack = await peer.recv_type("message_response", timeout=10)
    return ack


def test_a_node_without_a_cluster_section_loads_no_nats_client(tmp_path):
    """Unset, arqond is a single node exactly as before: nats-py is never imported."""
    code = ("import sys, asyncio\n"
            "from arqond import config, app\n"
            "daemon = app.Daemon(config.load('/dev/null'), {})\n"
            "print('nats' in sys.modules, any(m.startswith('arqond.cluster') for m in "
            "sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=scaled(30))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


async def test_a_message_reaches_every_subscriber_on_every_node_once_with_one_seq_and_epoch(
        make_daemon, nats_server, connect_peer):
    nodes = start_nodes(make_daemon, nats_server, "n1", "n2", "n3")
    for node in nodes:
        node.wait_for_line("cluster: node ")
    subscribers = [await joined(connect_peer, node, "lab:talk") for node in nodes]
    neighbour = await joined(connect_peer, nodes[0], "lab:talk")
    publisher = await connect_peer(nodes[0].ws_url)
    acks = [await publish(publisher, "lab", "talk", {"n": n}) for n in range(3)]
    seqs = [ack["metadata"]["seq"] for ack in acks]
    epoch = acks[0]["metadata"]["epoch"]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert {ack["metadata"]["epoch"] for ack in acks} == {epoch}
    assert all(ack["metadata"]["stored"] is True for ack in acks)
    for peer in [*subscribers, neighbour]:
        got = [await peer.recv_type("message", timeout=10) for _ in range(3)]
        assert [(m["id"], m["payload"], m["metadata"]["seq"], m["metadata"]["epoch"])
                for m in got] == [(ack["id"], {"n": n}, ack["metadata"]["seq"], epoch)
                                  for n, ack in enumerate(acks)]
        assert all(m["sender"] == publisher.id for m in got)
        await peer.expect_silence(0.3)
    await publisher.expect_silence(0.3)


async def test_history_on_another_node_holds_the_same_messages(make_daemon, nats_server,
                                                               connect_peer):
    first, second = start_nodes(make_daemon, nats_server, "h1", "h2")
    watcher = await joined(connect_peer, second, "lab:notes")
    publisher = await connect_peer(first.ws_url)
    acks = [await publish(publisher, "lab", "notes", {"n": n}) for n in range(4)]
    for _ in acks:      # once delivered on the second node, it is in its history too
        await watcher.recv_type("message", timeout=10)
    reader = await connect_peer(second.ws_url)
    answer = await reader.command("history", {"room": "lab", "channel": "notes"})
    messages = answer["payload"]["data"]["history"]
    assert [(m["message_id"], m["payload"], m["metadata"]) for m in messages] == \
        [(ack["id"], {"n": n}, {"seq": ack["metadata"]["seq"],
                                "epoch": ack["metadata"]["epoch"]})
         for n, ack in enumerate(acks)]


def test_status_metrics_and_health_show_the_node_in_its_cluster(make_daemon, nats_server):
    node, = start_nodes(make_daemon, nats_server, "s1")
    status = http_call(node, "GET", "/status").json()["cluster"]
    assert (status["node"], status["name"], status["state"], status["joined"],
            status["stream"], status["server"]) == \
        ("s1", "arqond", "up", True, "arqond-channels", nats_server.url)
    assert len(status["epoch"]) == 8
    health = http_call(node, "GET", "/health").json()
    assert health["status"] == "healthy" and "faults" not in health
    metrics = metrics_of(node)
    assert (metrics["arqonbus_cluster_connected"], metrics["arqonbus_cluster_joined"],
            metrics["arqonbus_cluster_connects_total"]) == (1, 1, 1)
    # ArqonBus's storage views: JetStream, with the figures of the node's copy.
    assert http_call(node, "GET", "/status").json()["storage"] == \
        {"status": "healthy", "backend_type": "jetstream"}
    stats = http_call(node, "GET", "/storage/stats").json()
    assert (stats["backend_type"], stats["configuration"]["path"]) == \
        ("jetstream", str(node.state_dir / "cluster.sqlite3"))
    assert "stored_total" in stats["stats"]


async def test_a_wildcard_subscriber_gets_what_any_node_publishes(make_daemon, nats_server,
                                                                  connect_peer):
    left, right = start_nodes(make_daemon, nats_server, "w1", "w2")
    follower = await joined(connect_peer, right, "*:narrative")
    publisher = await connect_peer(left.ws_url)
    acks = [await publish(publisher, name, "narrative", {"from": name})
            for name in ("alice", "bob")]
    await publish(publisher, "alice", "events", {"not": "narrative"})
    got = [await follower.recv_type("message", timeout=10) for _ in acks]
    assert [(m["id"], m["room"], m["metadata"]["seq"]) for m in got] == \
        [(ack["id"], room, ack["metadata"]["seq"]) for ack, room in zip(acks, ("alice", "bob"))]
    await follower.expect_silence(0.5)


async def test_a_message_to_a_whole_room_reaches_its_members_on_every_node(
        make_daemon, nats_server, connect_peer):
    left, right = start_nodes(make_daemon, nats_server, "r1", "r2")
    there = await joined(connect_peer, right, "lab:a", "lab:b")
    here = await joined(connect_peer, left, "lab:a")
    outsider = await joined(connect_peer, right, "other:a")
    publisher = await connect_peer(left.ws_url)
    ack = await publish(publisher, "lab", None, {"to": "everyone in lab"})
    for peer in (here, there):
        got = await peer.recv_type("message", timeout=10)
        assert (got["id"], got["room"], got.get("channel"), got["payload"]) == \
            (ack["id"], "lab", None, {"to": "everyone in lab"})
        await peer.expect_silence(0.3)      # one copy, though a member of two channels
    await outsider.expect_silence(0.3)


async def test_a_private_message_reaches_a_client_of_another_node(make_daemon, nats_server,
                                                                  connect_peer):
    left, right = start_nodes(make_daemon, nats_server, "p1", "p2")
    target = await connect_peer(right.ws_url)
    sender = await connect_peer(left.ws_url)

    async def known():
        await sender.send({"type": "private", "payload": {"target": target.id, "n": 1}})
        answer = await sender.recv()
        return answer if answer["type"] == "message_response" else None
    ack = await eventually(known)
    assert ack is not None, "the other node's client never became known"
    got = await target.recv_type("private", timeout=10)
    assert (got["id"], got["sender"], got["payload"]) == \
        (ack["id"], sender.id, {"target": target.id, "n": 1})
    await sender.send({"type": "private", "payload": {"target": "arq_client_nobody"}})
    refused = await sender.recv_type("error")
    assert (refused["error_code"], refused["error"]) == \
        ("TARGET_NOT_FOUND", "no connected client with id arq_client_nobody")
    await target.expect_silence(0.3)


async def test_presence_shows_every_node_and_each_client_with_its_node(make_daemon,
                                                                       nats_server,
                                                                       connect_peer):
    left, right = start_nodes(make_daemon, nats_server, "q1", "q2")
    mine = await joined(connect_peer, left, "lab:talk")
    theirs = await joined(connect_peer, right, "lab:talk", "lab:quiet")

    async def counted():
        channels = (await mine.command("list_channels", {"room": "lab"}))["payload"]["data"]
        counts = {c["channel"]: c["participants"] for c in channels["channels"]}
        return counts if counts == {"talk": 2, "quiet": 1} else None
    assert await eventually(counted) == {"talk": 2, "quiet": 1}
    info = (await mine.command("channel_info", {"room": "lab", "channel": "talk"})
            )["payload"]["data"]
    assert sorted((p["client_id"], p["node"]) for p in info["participants"]) == \
        sorted([(mine.id, "q1"), (theirs.id, "q2")])
    status = (await mine.command("status"))["payload"]["data"]["cluster"]
    assert status["node"] == "q1" and status["joined"] is True
    assert [(n["node"], n["clients"]) for n in status["nodes"]] == [("q1", 1), ("q2", 1)]
    await theirs.close()

    async def left_alone():
        info = (await mine.command("channel_info", {"room": "lab", "channel": "talk"})
                )["payload"]["data"]
        return [p["client_id"] for p in info["participants"]] == [mine.id]
    assert await eventually(left_alone)


def test_the_nats_drop_in_is_the_one_the_page_shows():
    """systemd/nats.conf orders arqond after a NATS server on the same host, as arqond(8)
    CLUSTER tells to install it."""
    shipped = [line for line in (ROOT / "systemd" / "nats.conf").read_text().splitlines()
               if line and not line.startswith("#")]
    assert shipped == ["[Unit]", "Wants=nats-server.service", "After=nats-server.service"]
    page = (ROOT / "man" / "arqond.8").read_text().replace("\\-", "-")
    assert "\n".join(shipped) in page
    assert "/etc/systemd/system/arqond.service.d/nats.conf" in page


LINE = {"ts": "2026-02-12T10:00:00Z", "from": "alice", "type": "note",
        "content": "hello from l1"}


async def test_a_narrative_line_on_one_node_reaches_a_wildcard_follower_on_another(
        make_daemon, nats_server, connect_peer):
    writer, reader = start_nodes(make_daemon, nats_server, "l1", "l2")
    follower = await joined(connect_peer, reader, "*:narrative")
    local = await joined(connect_peer, writer, "*:narrative")
    with open(writer.log_dir / "alice-narrative.jsonl", "a") as log:
        log.write(orjson.dumps(LINE).decode() + "\n")
    there = await follower.recv_type("event", timeout=10)
    here = await local.recv_type("event", timeout=10)
    assert (there["id"], there["room"], there["channel"], there["payload"],
            there["metadata"]["seq"]) == \
        (here["id"], "alice", "narrative", LINE, here["metadata"]["seq"])
    await follower.expect_silence(0.3)


def test_a_message_then_end_of_input_on_the_control_socket_is_acked_before_it_closes(
        make_daemon, nats_server):
    """What waits for JetStream is waited for, as what waits for a single node's store is:
    the connection closes once its replies are out (Bus.after_pending)."""
    node, = start_nodes(make_daemon, nats_server, "e1")
    line = orjson.dumps({"type": "message", "room": "lab", "channel": "talk",
                         "payload": {"n": 1}}).decode()
    done = sh(f"echo '{line}' | socat -t 10 - UNIX-CONNECT:{node.control_path}")
    frames = [orjson.loads(text) for text in done.stdout.splitlines()]
    assert [f["type"] for f in frames] == ["message", "message_response"], done.stderr
    assert (frames[1]["payload"], frames[1]["metadata"]["seq"]) == ({"n": 1}, 1)


async def test_a_channel_deleted_on_one_node_is_gone_from_every_node(make_daemon, nats_server,
                                                                     connect_peer):
    here, there = start_nodes(make_daemon, nats_server, "g1", "g2")
    publisher = await connect_peer(here.ws_url)
    await publish(publisher, "lab", "tmp", {"n": 1})
    member = await joined(connect_peer, there, "lab:busy")
    admin = await connect_peer(here.control_path)
    reader = await connect_peer(there.ws_url)

    async def channels_there():
        data = (await reader.command("list_channels", {"room": "lab"}))["payload"]["data"]
        return sorted(c["channel"] for c in data["channels"])
    assert await eventually(lambda: _equal(channels_there, ["busy", "tmp"]))
    assert await eventually(lambda: _equal(channels_here_count(admin), 1))
    refused = await admin.command("delete_channel", {"room": "lab", "channel": "busy"})
    assert (refused["error_code"], refused["error"]) == (
        "CHANNEL_NOT_EMPTY", "channel lab:busy still has 1 participant(s); it can be deleted "
                             "only when empty")
    deleted = await admin.command("delete_channel", {"room": "lab", "channel": "tmp"})
    assert deleted["status"] == "success", deleted
    assert await eventually(lambda: _equal(channels_there, ["busy"]))
    history = (await reader.command("history", {"room": "lab", "channel": "tmp"})
               )["payload"]["data"]["history"]
    assert history == []
    await member.expect_silence(0.2)


def channels_here_count(admin):
    async def count():
        answer = await admin.command("channel_info", {"room": "lab", "channel": "busy"})
        return answer["payload"]["data"]["member_count"] \
            if answer["status"] == "success" else None
    return count


async def _equal(check, expected) -> bool:
    return await check() == expected
