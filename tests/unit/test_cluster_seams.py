"""The core's seams a cluster plugs into, in process: a store that numbers messages itself
(Store.numbers, Bus.arrived), the cluster's epoch for new streams (Router.epoch), a Zgent
another node serves (Served.elsewhere), a registry entry that names its node; and the name
encoding for NATS (arqond/cluster/names.py); a shared cursor's acknowledgement
(arqond/cluster/cursors.py). The wire is proven by tests/test_cluster*.py."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import orjson
import pytest

from arqond.cluster.cursors import SharedCursors
from arqond.cluster.names import Subjects, decode, encode
from arqond.core.cursors import Cursors, Position
from arqond.core.moo.registry import CLUSTER, Registry, Spec, Zgent, check_registry, \
    registry_document
from arqond.core.streams import Record, Stream
from tests.unit.harness import BusHarness
from tests.unit.moo_harness import Moo

TARGET = {"room": "lab", "channel": "notes"}


class NumberingStore:
    """A store that numbers what it keeps (as JetStream does for a cluster), driven by hand:
    ``hand`` gives an appended record a seq and hands it to the Bus."""

    durability = "write"
    numbers = True

    def __init__(self, harness: BusHarness) -> None:
        self.bus = harness.bus
        self.appended: list[Record] = []
        harness.bus.store = self

    def append(self, record: Record) -> None:
        self.appended.append(record)

    def hand(self, record: Record, seq: int, *, deliver: bool = True) -> None:
        assert record.env is not None
        record.seq = seq
        record.env["metadata"] = {**(record.env.get("metadata") or {}), "seq": seq,
                                  "epoch": record.stream.epoch}
        record.frame = orjson.dumps(record.env)
        self.bus.arrived([record], {}, deliver=deliver)

    def published(self, sender, n: int, seq: int, *, deliver: bool = True) -> None:
        """``sender`` publishes {"n": n} on lab:notes, and the cluster numbers it ``seq``."""
        publish(sender, n)
        self.hand(self.appended[-1], seq, deliver=deliver)

    def forget(self, stream: Stream) -> None:
        pass

    def save_cursor(self, principal: str, name: str, stream: Stream, seq: int,
                    then: Callable[[str | None], None]) -> None:
        then(None)


def publish(client, n: int) -> list[dict[str, Any]]:
    return client.send({"type": "message", **TARGET, "payload": {"n": n}})


def test_a_store_that_numbers_gets_the_envelope_unnumbered_and_nothing_goes_out_before():
    harness = BusHarness()
    store = NumberingStore(harness)
    sender, watcher = harness.connect(), harness.connect()
    watcher.ok("join_channel", {"room": "lab:notes"})
    assert publish(sender, 1) == []
    [record] = store.appended
    assert record.seq == 0 and record.env is not None and record.env["payload"] == {"n": 1}
    assert "seq" not in orjson.loads(record.frame).get("metadata", {})
    assert record.exclude is sender.client
    watcher.assert_silent()
    assert harness.bus.router.channel("lab", "notes").stream.last_seq == 0


def test_what_it_hands_back_is_delivered_with_its_seqs_even_when_they_skip_numbers():
    harness = BusHarness()
    store = NumberingStore(harness)
    sender, watcher = harness.connect(), harness.connect()
    watcher.ok("join_channel", {"room": "lab:notes"})
    publish(sender, 1)
    publish(sender, 2)
    first, second = store.appended
    store.hand(first, 7)
    store.hand(second, 12)
    got = watcher.take()
    assert [(m["payload"], m["metadata"]["seq"]) for m in got] == [({"n": 1}, 7), ({"n": 2}, 12)]
    acks = sender.take()
    assert [a["metadata"]["seq"] for a in acks] == [7, 12]
    assert all(a["metadata"]["stored"] is True for a in acks)
    stream = harness.bus.router.channel("lab", "notes").stream
    assert (stream.committed_seq, stream.last_seq) == (12, 12)
    history = watcher.ok("history", TARGET)["history"]
    assert [m["metadata"]["seq"] for m in history] == [7, 12]
    # A client that saw 7 resumes with exactly what followed it.
    late = harness.connect()
    frames = late.send({"type": "command", "command": "join_channel",
                        "args": {**TARGET, "since": {"seq": 7, "epoch": stream.epoch}}})
    assert [f["type"] for f in frames] == ["response", "command_response", "message"]
    resumed = frames[0]["payload"]["data"]["resume"]
    assert (resumed["recovered"], resumed["last_seq"]) == (True, 12)
    assert frames[2]["metadata"]["seq"] == 12


def test_a_record_of_seq_0_is_delivered_and_acked_but_neither_numbered_nor_kept():
    harness = BusHarness()
    store = NumberingStore(harness)
    sender, watcher = harness.connect(), harness.connect()
    watcher.ok("join_channel", {"room": "lab:notes"})
    publish(sender, 1)
    [record] = store.appended
    harness.bus.arrived([record], {})
    assert [m["payload"] for m in watcher.take()] == [{"n": 1}]
    assert sender.next("message_response")["metadata"] == {}
    channel = harness.bus.router.channel("lab", "notes")
    assert (channel.stream.committed_seq, list(channel.history)) == (0, [])


def test_what_is_handed_back_undelivered_is_kept_numbered_and_wakes_a_waiting_reader():
    harness = BusHarness()
    store = NumberingStore(harness)
    sender, watcher = harness.connect(), harness.connect()
    watcher.ok("join_channel", {"room": "lab:notes"})
    woken = []
    channel = harness.bus.router.channel("lab", "notes")
    harness.bus.waiting[channel.stream] = [lambda: woken.append(True)]
    publish(sender, 1)
    store.hand(store.appended[0], 3, deliver=False)
    watcher.assert_silent()
    sender.assert_silent()
    assert channel.stream.committed_seq == 3 and woken == [True]
    assert [entry.seq for entry in channel.history] == [3]


def test_new_streams_take_the_epoch_the_router_is_given():
    harness = BusHarness()
    before = harness.bus.router.ensure_channel("lab", "old")[0].stream.epoch
    harness.bus.router.epoch = "c1a55e5d"
    made = [harness.bus.router.ensure_channel("lab", name)[0].stream.epoch
            for name in ("a", "b")]
    assert made == ["c1a55e5d", "c1a55e5d"] and before != "c1a55e5d"


class Away:
    """A Zgent another node serves, as the core sees it (the Elsewhere protocol)."""

    def __init__(self, zgent: str, node: str) -> None:
        self.zgent = zgent
        self.node = node
        self.written: list[dict[str, Any]] = []
        self.lines: list[dict[str, Any]] = []

    def write(self, obj: dict[str, Any]) -> None:
        self.written.append(obj)

    def line(self, message: dict[str, Any]) -> None:
        self.lines.append(message)


def served_elsewhere(moo: Moo, name: str, node: str) -> Away:
    served = moo.zgents.served[name]
    away = Away(name, node)
    served.elsewhere = served.handler = away
    return away


def test_a_message_to_a_zgent_another_node_serves_goes_there_and_nothing_stays_here():
    moo = Moo("dreader", "parseclipmate")
    away = served_elsewhere(moo, "dreader", "node-b")
    inbox = moo.watch("dreader", "inbox")
    moo.zgents.inbox_line("dreader", {"note": 1})
    moo.zgents.inbox_line("dreader", {"id": "q", "method": "query", "replyTo": "parseclipmate"})
    assert away.lines == [{"note": 1}, {"id": "q", "method": "query",
                                        "replyTo": "parseclipmate"}]
    assert (inbox, moo.mailbox("dreader"), away.written) == ([], [], [])


def test_a_request_on_this_nodes_socket_goes_to_the_serving_node_and_its_answer_back():
    moo = Moo("dreader")
    away = served_elsewhere(moo, "dreader", "node-b")
    asker = moo.connect()
    asker.send({"id": "q-1", "method": "query", "params": {"symbol": "SPX"}})
    [out] = away.written
    assert (out["method"], out["params"]) == ("query", {"symbol": "SPX"})
    moo.zgents.calls.answer(away, {"jsonrpc": "2.0", "id": out["id"], "result": {"v": 1}})
    asker.assert_reply("q-1", {"v": 1})


@pytest.mark.parametrize("method, what", [("arqon.recv", "its inbox is read"),
                                          ("arqon.serve", "its handler attaches")])
def test_its_inbox_and_its_handler_are_refused_here_naming_the_node(method, what):
    moo = Moo("dreader")
    served_elsewhere(moo, "dreader", "node-b")
    answer = moo.connect().call(method, {})
    assert answer["error"] == {"code": -32001,
                               "message": f"dreader is served on node node-b: {what} there"}


def test_a_handler_elsewhere_is_no_sign_of_life_here():
    moo = Moo("dreader", moo={"stale_after": 10})
    served_elsewhere(moo, "dreader", "node-b")
    moo.timers.advance(11)
    moo.zgents.sweep()
    assert moo.entry("dreader")["status"] == "stale"


def test_a_registry_entry_may_name_its_node_and_a_zgent_of_another_node_is_never_saved():
    registry = Registry()
    mine = Zgent(Spec.from_table("dreader", {}, "command"), "/m/i", "/m/s", "/l/n", 0.0,
                 node="node-a")
    theirs = Zgent(Spec.from_table("far", {}, CLUSTER), "/m/i2", "/m/s2", "/l/n2", 0.0,
                   node="node-b")
    registry.add(mine)
    registry.add(theirs)
    entries = registry.entries()
    assert (entries["dreader"]["node"], entries["far"]["node"]) == ("node-a", "node-b")
    assert check_registry(registry_document(entries)) == entries
    assert list(registry.saved()) == ["dreader"]
    alone = Zgent(Spec.from_table("solo", {}, "command"), "/m/i", "/m/s", "/l/n", 0.0)
    assert "node" not in alone.entry()


@pytest.mark.parametrize("name, token", [
    ("science", "science"), ("team/alpha", "team=2Falpha"), ("Lab Room", "Lab=20Room"),
    ("a.b*c>", "a=2Eb=2Ac=3E"), ("é", "=C3=A9"), ("=41", "=3D41"), ("_x-y", "_x-y")])
def test_a_name_is_one_subject_token_and_decodes_to_itself(name, token):
    assert encode(name) == token and decode(token) == name


@pytest.mark.parametrize("token", ["", "a.b", "a=4", "a=zz", "a b", "=G1"])
def test_a_token_encode_cannot_have_made_is_refused(token):
    with pytest.raises(ValueError):
        decode(token)


def test_a_channels_subject_and_back():
    subjects = Subjects("arqond")
    subject = subjects.channel("team/alpha", "a.b")
    assert subject == "arqond.ch.team=2Falpha.a=2Eb"
    assert subjects.target(subject) == ("team/alpha", "a.b")
    with pytest.raises(ValueError):
        subjects.target("other.ch.a.b")


def resume_from(client, seq: int, epoch: str) -> dict[str, Any]:
    frames = client.send({"type": "command", "command": "join_channel",
                          "args": {**TARGET, "since": {"seq": seq, "epoch": epoch}}})
    assert [f["type"] for f in frames[:2]] == ["response", "command_response"], frames
    return frames[0]["payload"]["data"]["resume"]


def test_a_client_that_saw_more_on_another_node_waits_for_this_one_and_gets_nothing_twice():
    harness = BusHarness()
    store = NumberingStore(harness)
    sender, watcher = harness.connect(), harness.connect()
    watcher.ok("join_channel", {"room": "lab:notes"})
    store.published(sender, 5, 5)
    stream = harness.bus.router.channel("lab", "notes").stream
    moved = harness.connect()
    # It saw up to seq 9 on another node; this node has read up to 5.
    resume = resume_from(moved, 9, stream.epoch)
    assert (resume["recovered"], resume["last_seq"]) == (True, 5)
    assert ("lab", "notes") not in moved.client.subscriptions and harness.timers.armed == {}
    store.published(sender, 7, 7)
    # Kept here, not delivered (from before this node joined): still what it missed.
    store.published(sender, 99, 11, deliver=False)
    assert [m["metadata"]["seq"] for m in moved.take()] == [11]
    for seq in (12, 13):
        store.published(sender, seq, seq)
    assert [m["metadata"]["seq"] for m in moved.take()] == [12, 13]
    assert [m["metadata"]["seq"] for m in watcher.take()] == [5, 7, 12, 13]
    assert (harness.bus.waiting, harness.bus.replays) == ({}, set())


def test_a_client_that_resumes_again_or_goes_away_while_it_waits_leaves_nothing_behind():
    harness = BusHarness()
    store = NumberingStore(harness)
    sender = harness.connect()
    store.published(sender, 1, 3)
    stream = harness.bus.router.channel("lab", "notes").stream
    moved = harness.connect()
    resume_from(moved, 8, stream.epoch)
    # It resumes again from what this node has: the wait for seq 8 is over.
    resume = resume_from(moved, 3, stream.epoch)
    assert resume["recovered"] is True and stream not in harness.bus.waiting
    store.published(sender, 4, 4)
    assert [m["metadata"]["seq"] for m in moved.take()] == [4]
    resume_from(moved, 1_000_000, stream.epoch)
    assert len(harness.bus.waiting[stream]) == 1
    harness.bus.detach(moved.client)
    assert (harness.bus.waiting, harness.bus.replays) == ({}, set())


def test_a_cursor_ahead_of_this_node_reads_nothing_twice_and_waits_for_what_follows():
    """The cursor was acked at seq 9 through another node; this node has read up to 5."""
    harness = BusHarness()
    store = NumberingStore(harness)
    harness.plug(Cursors(harness.bus, harness.timers, 10))
    sender, reader = harness.connect(), harness.connect()
    store.published(sender, 5, 5)
    stream = harness.bus.router.channel("lab", "notes").stream
    cursor = {**TARGET, "cursor": "mine"}
    assert reader.ok("cursor.ack", {**cursor, "seq": 9, "epoch": stream.epoch})["seq"] == 9
    read = reader.ok("cursor.read", cursor)
    assert (read["messages"], read["recovered"], read["reason"]) == ([], True, None)
    assert reader.send({"type": "command", "command": "cursor.read",
                        "args": {**cursor, "wait": 30}}) == []
    for seq in (7, 9, 12):
        store.published(sender, seq, seq)
        if seq < 12:
            reader.assert_silent()
    [message] = reader.next("response")["payload"]["data"]["messages"]
    assert message["metadata"]["seq"] == 12
    assert harness.bus.waiting == {} and harness.timers.armed == {}


class Bucket:
    """A key-value bucket that takes every put, or fails each with ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.puts: list[tuple[str, Any]] = []

    async def put(self, key: str, value: bytes) -> int:
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        self.puts.append((key, orjson.loads(value)))
        return len(self.puts)


async def test_a_shared_cursor_is_acknowledged_once_the_bucket_has_it_or_with_why_not():
    shared = SharedCursors(None, None, "arqond", 1)  # type: ignore[arg-type]
    key, heard = ("alice", "worker", "lab", "log"), []
    shared.put(key, Position(3, "e1"), heard.append)     # NATS away: kept for the bucket
    assert heard == [None] and shared.waiting == {key: Position(3, "e1")}
    shared.kv, shared.task = Bucket(), asyncio.current_task()
    shared.put(key, Position(4, "e1"), heard.append)
    assert heard == [None]                               # not before the bucket has it
    await asyncio.sleep(0.01)
    assert heard == [None, None]
    assert shared.kv.puts == [("alice.worker.lab.log", {"seq": 4, "epoch": "e1"})]
    shared.kv = Bucket(asyncio.TimeoutError())
    shared.put(key, Position(5, "e1"), heard.append)
    await asyncio.sleep(0.01)
    assert heard[2] == "the cluster's cursors bucket did not take it: TimeoutError"
