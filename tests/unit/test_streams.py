"""Every channel an ordered stream (arqond/core/streams.py, replay.py, the Bus's pipeline):
seq and epoch, delivery once stored, a store that fails, resume from (seq, epoch), in-process
with the Store port driven by hand (tests/unit/harness.py ManualStore)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from arqond.core.access import Owners
from arqond.core.cursors import Cursors, Position
from arqond.core.errors import ErrorCode
from arqond.core.narrative.ids import message_id, stored_through
from arqond.core.streams import Retention, Stored, Stream, check_since, plan_resume
from tests.unit.harness import BusHarness, ManualStore, TestClient, assert_refused, local_user


def publish(client: TestClient, n: Any, target: str = "lab:notes") -> list[dict[str, Any]]:
    return client.send({"type": "message", "room": target, "payload": {"n": n}})


def numbers(frames: list[dict[str, Any]]) -> list[Any]:
    return [f["payload"]["n"] for f in frames if f["type"] == "message"]


def stamp(frame: dict[str, Any]) -> tuple[int, str]:
    return frame["metadata"]["seq"], frame["metadata"]["epoch"]


def resume(client: TestClient, seq: int, epoch: str,
           target: str = "lab:notes") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """join_channel with since: its response's resume section, and what followed the answer."""
    frames = client.send({"type": "command", "command": "join_channel",
                          "args": {"room": target, "since": {"seq": seq, "epoch": epoch}}})
    response, ack, *after = frames
    assert (response["type"], ack["type"]) == ("response", "command_response"), frames
    assert response["status"] == "success", response
    return response["payload"]["data"]["resume"], after


# -- numbering ---------------------------------------------------------------------------

def test_each_channel_numbers_its_messages_and_the_ack_says_where_each_went():
    bus = BusHarness()
    sender, watcher = bus.connect(), bus.connect()
    watcher.ok("join_channel", {"room": "*", "channel": "*"})
    acks = [publish(sender, n)[0] for n in range(3)] + [publish(sender, 9, "lab:other")[0]]
    got = watcher.take()
    assert [stamp(f)[0] for f in got] == [1, 2, 3, 1]
    notes, other = bus.bus.router.channel("lab", "notes"), bus.bus.router.channel("lab", "other")
    assert {stamp(f)[1] for f in got[:3]} == {notes.stream.epoch} != {other.stream.epoch}
    assert [a["metadata"] for a in acks] == [{"seq": s, "epoch": e, "stored": False}
                                             for s, e in map(stamp, got)]
    assert notes.summary()["stream"] == {"epoch": notes.stream.epoch, "first_seq": 1,
                                         "last_seq": 3, "retention": {
                                             "messages": 10000, "bytes": 64 << 20, "age": 0.0}}


def test_with_a_store_a_message_is_delivered_and_acked_once_stored_in_order():
    bus = BusHarness()
    store = ManualStore(bus.bus)
    sender, watcher = bus.connect(), bus.connect()
    watcher.ok("join_channel", {"room": "lab:notes"})
    assert publish(sender, 1) == [] and publish(sender, 2) == []
    watcher.assert_silent()
    assert not bus.bus.router.channel("lab", "notes").history.entries   # nor in history
    store.commit(1)
    assert numbers(watcher.take()) == [1] and [a["payload"] for a in sender.take()] == [{"n": 1}]
    store.commit()
    assert numbers(watcher.take()) == [2]
    assert sender.next("message_response")["metadata"] == {
        "seq": 2, "epoch": bus.bus.router.channel("lab", "notes").stream.epoch, "stored": True}
    assert (bus.bus.pending_bytes, len(bus.bus.pending)) == (0, 0)


def test_create_channel_answers_once_its_stream_is_stored_or_says_it_was_not():
    bus = BusHarness()
    store = ManualStore(bus.bus)
    admin = bus.connect(admin=True)
    admin.ok("create_channel", {"room": "lab:notes", "retention": {"messages": 3}})
    assert bus.bus.router.channel("lab", "notes").stream in store.stored
    store.failing = True
    response = admin.command("create_channel", {"room": "lab:other"})
    assert (response["error_code"], response["error"]) == (
        "STORE_FAILED", "channel lab:other is created but not stored (the disk is full); it "
                        "is kept once a message of it is")


def test_a_store_that_fails_refuses_every_waiting_message_and_the_numbers_are_taken_back():
    bus = BusHarness()
    store = ManualStore(bus.bus)
    sender, watcher = bus.connect(), bus.connect()
    watcher.ok("join_channel", {"room": "lab:notes"})
    publish(sender, 1)
    store.commit()
    publish(sender, 2)
    publish(sender, 3)
    store.fail("the disk holding /var/lib/arqond/streams.sqlite3 is full")
    refusals = [f for f in sender.take() if f["type"] == "error"]
    assert [(f["error_code"], f["error"]) for f in refusals] == [
        (ErrorCode.STORE_FAILED, "not stored, so not sent: the disk holding "
         "/var/lib/arqond/streams.sqlite3 is full")] * 2
    assert numbers(watcher.take()) == [1]     # what was stored before went out; nothing since
    assert not store.failing                   # nothing pending any more: it may try again
    publish(sender, 4)
    store.commit()
    assert [stamp(f)[0] for f in watcher.take()] == [2]   # no gap where 2 and 3 were refused
    assert bus.bus.stats.store_refused_total == 2
    assert bus.events_named("store_failed")[0]["count"] == 2


def test_on_full_memory_goes_on_without_the_store_in_order_with_a_new_epoch():
    bus = BusHarness(on_full="memory")
    store = ManualStore(bus.bus)
    sender, watcher = bus.connect(), bus.connect()
    watcher.ok("join_channel", {"room": "lab:notes"})
    publish(sender, 1)
    store.commit()
    stream = bus.bus.router.channel("lab", "notes").stream
    before = stream.epoch
    publish(sender, 2)
    publish(sender, 3)
    store.fail("the disk holding /var/lib/arqond/streams.sqlite3 is full")
    got = watcher.take()
    assert [(f["payload"]["n"], stamp(f)) for f in got] == [
        (1, (1, before)), (2, (2, stream.epoch)), (3, (3, stream.epoch))]
    assert stream.epoch != before and bus.bus.store is None
    assert [a["metadata"] for a in sender.take()] == [
        {"seq": 1, "epoch": before, "stored": True},
        {"seq": 2, "epoch": stream.epoch, "stored": False},
        {"seq": 3, "epoch": stream.epoch, "stored": False}]
    assert bus.bus.store_lost == "the disk holding /var/lib/arqond/streams.sqlite3 is full"
    bus.bus.failed(1, "late news of one of them")      # already delivered: nothing more
    watcher.assert_silent()
    publish(sender, 4)
    assert [stamp(f) for f in watcher.take()] == [(4, stream.epoch)]


def test_a_client_publish_past_max_pending_bytes_is_refused_and_arqonds_own_are_not():
    bus = BusHarness(max_pending_bytes=1000)
    store = ManualStore(bus.bus)
    sender = bus.connect()
    publish(sender, "x" * 400)
    publish(sender, "y" * 400)               # about 600 bytes pending: under the bound
    [refused] = publish(sender, "z")         # about 1200: past it
    assert (refused["error_code"], refused["error"]) == (
        ErrorCode.LIMIT_EXCEEDED, "the store is behind: streams.max_pending_bytes (1000) wait "
        "to be written; try again shortly")
    bus.bus.publish({"room": "lab", "channel": "notes", "payload": {"n": "narrative"}})
    assert len(bus.bus.pending) == 3
    assert bus.events_named("limit_reached")[-1]["limit"] == "streams.max_pending_bytes"
    store.commit()
    assert [a["payload"]["n"][0] for a in sender.take()] == ["x", "y"]


# -- resume --------------------------------------------------------------------------------

@pytest.mark.parametrize("seq, epoch, earliest, expected", [
    (3, "e1", 1, (True, 3, None)),
    (0, "e1", 1, (True, 0, None)),
    (5, "e1", 1, (True, 5, None)),
    (6, "e1", 1, (False, 5, "seq 6 is ahead of the stream (its last is 5)")),
    (1, "e1", 4, (False, 3, "seq 2 is no longer kept (retention); the earliest kept is 4")),
    (2, "e1", 3, (True, 2, None)),
    (3, "e0", 2, (False, 1, "epoch e0 is gone (the stream's past was lost; it is now "
                            "epoch e1)")),
])
def test_what_a_resuming_client_gets(seq, epoch, earliest, expected):
    stream = Stream("lab", "notes", "e1", Retention(10, 100, 0), last_seq=5)
    assert tuple(plan_resume(stream, earliest, seq, epoch)) == expected


def test_a_cluster_node_behind_the_client_plans_to_wait_for_it():
    stream = Stream("lab", "notes", "e1", Retention(10, 100, 0), last_seq=5)
    assert tuple(plan_resume(stream, 1, 9, "e1", shared=True)) == (True, 9, None)
    assert plan_resume(stream, 1, 9, "e0", shared=True).recovered is False


@pytest.mark.parametrize("since", [None, 3, {"seq": 1}, {"seq": -1, "epoch": "e"},
                                   {"seq": True, "epoch": "e"}, {"seq": 1, "epoch": 2},
                                   {"seq": 1, "epoch": "e", "x": 1}])
def test_since_must_be_a_seq_and_an_epoch(since):
    with pytest.raises(ValueError, match=r'since must be \{"seq": N, "epoch": "E"\}'):
        check_since(since)


def test_a_client_that_comes_back_gets_exactly_what_it_missed_then_the_live_ones():
    bus = BusHarness()
    sender, reader = bus.connect(), bus.connect()
    reader.ok("join_channel", {"room": "lab:notes"})
    for n in range(3):
        publish(sender, n)
    last = stamp(reader.take()[-1])
    reader.ok("leave_channel", {"room": "lab:notes"})
    for n in range(3, 6):
        publish(sender, n)
    report, replayed = resume(reader, *last)
    assert report == {"recovered": True, "reason": None, "epoch": last[1], "earliest_seq": 1,
                      "last_seq": 6}
    assert numbers(replayed) == [3, 4, 5]
    publish(sender, 6)
    assert numbers(reader.take()) == [6]


def test_resuming_a_channel_it_is_in_already_gives_nothing_twice():
    bus = BusHarness()
    sender, reader = bus.connect(), bus.connect()
    reader.ok("join_channel", {"room": "lab:notes"})
    publish(sender, 0)
    publish(sender, 1)
    first = stamp(reader.take()[0])
    report, replayed = resume(reader, *first)
    assert report["recovered"] and numbers(replayed) == [1]
    publish(sender, 2)
    assert numbers(reader.take()) == [2]


def test_another_epoch_or_a_past_that_is_gone_is_said_and_what_there_is_comes():
    bus = BusHarness(history_size=3)
    sender, reader = bus.connect(), bus.connect()
    for n in range(5):
        publish(sender, n)
    epoch = bus.bus.router.channel("lab", "notes").stream.epoch
    report, replayed = resume(reader, 0, "deadbeef")
    assert report == {"recovered": False, "reason": f"epoch deadbeef is gone (the stream's "
                      f"past was lost; it is now epoch {epoch})", "epoch": epoch,
                      "earliest_seq": 3, "last_seq": 5}
    assert numbers(replayed) == [2, 3, 4]      # without a store, the window is the past
    other = bus.connect()
    report, replayed = resume(other, 1, epoch)
    assert (report["recovered"], report["reason"]) == (
        False, "seq 2 is no longer kept (retention); the earliest kept is 3")
    assert numbers(replayed) == [2, 3, 4]


def test_since_on_a_wildcard_or_a_channel_that_does_not_exist():
    bus = BusHarness()
    reader = bus.connect()
    [response, _] = reader.send({"type": "command", "command": "join_channel", "args": {
        "room": "*", "channel": "notes", "since": {"seq": 1, "epoch": "e"}}})
    assert (response["error_code"], response["error"]) == (
        ErrorCode.VALIDATION_ERROR, "since resumes one channel, not a wildcard")
    report, replayed = resume(reader, 4, "e", "lab:fresh")
    assert (report["recovered"], report["last_seq"], replayed) == (False, 0, [])
    assert report["reason"].startswith("epoch e is gone")


def test_from_the_store_a_chunk_at_a_time_while_the_client_has_room():
    bus = BusHarness(history_size=2, client_buffer_bytes=8000)
    store = ManualStore(bus.bus)
    sender, reader = bus.connect(), bus.connect()
    for n in range(6):
        publish(sender, n)
    store.commit()
    epoch = bus.bus.router.channel("lab", "notes").stream.epoch
    report, replayed = resume(reader, 1, epoch)
    assert report["recovered"] and replayed == []       # asked of the store
    reader.sink.backlog = 4001                           # its buffer more than half full
    assert store.answer_reads() == 1
    assert reader.take() == [] and bus.timers.due(next(iter(bus.bus.replays))) == \
        pytest.approx(0.01)
    reader.sink.backlog = 0
    publish(sender, 6)                                   # stored, not yet delivered
    bus.timers.advance(0.01)
    # Seqs 2 to 4 from the store, 5 and 6 from the window; then a member: 7 comes live.
    assert numbers(reader.take()) == [1, 2, 3, 4, 5]
    assert bus.bus.replays == set()
    store.commit()
    assert numbers(reader.take()) == [6]


def test_what_the_store_holds_but_has_not_delivered_yet_comes_live_not_twice():
    bus = BusHarness(history_size=1)
    store = ManualStore(bus.bus)
    sender, reader = bus.connect(), bus.connect()
    for n in range(4):
        publish(sender, n)
    store.commit()
    publish(sender, 4)
    store.write()          # written by the store's thread, the Bus not told yet
    epoch = bus.bus.router.channel("lab", "notes").stream.epoch
    resume(reader, 0, epoch)
    store.answer_reads()
    assert numbers(reader.take()) == [0, 1, 2, 3]
    store.commit()
    assert numbers(reader.take()) == [4]


def test_after_a_restart_a_resume_reads_the_whole_gap_from_the_store_a_chunk_at_a_time(
        monkeypatch):
    """The window is empty after a start: a replay reads the store until it has caught up,
    however many chunks that takes, and only then joins."""
    monkeypatch.setattr("arqond.core.replay.CHUNK_MESSAGES", 2)
    bus = BusHarness()
    store = ManualStore(bus.bus)
    sender, reader = bus.connect(), bus.connect()
    for n in range(5):
        publish(sender, n)
    store.commit()
    channel = bus.bus.router.channel("lab", "notes")
    channel.history.entries.clear()            # as at a start: nothing read back yet
    channel.history.complete = False
    report, replayed = resume(reader, 0, channel.stream.epoch)
    assert report["recovered"] and replayed == []
    reads = 0
    while bus.bus.replays:
        reads += store.answer_reads()
    assert reads == 3 and numbers(reader.take()) == [0, 1, 2, 3, 4]
    publish(sender, 5)
    store.commit()
    assert numbers(reader.take()) == [5]


def test_a_restored_stream_reads_its_past_back_for_history():
    bus = BusHarness()
    store = ManualStore(bus.bus)
    sender = bus.connect()
    for n in range(3):
        publish(sender, n)
    store.commit()
    channel = bus.bus.router.channel("lab", "notes")
    # As at a start: a fresh window that has not read the store.
    channel.history.entries.clear()
    channel.history.complete = False
    history = sender.ok("history", {"room": "lab:notes"})["history"]
    assert [m["payload"]["n"] for m in history] == [0, 1, 2]


# -- the property: replay then live, whatever the interleaving -------------------------------

OPERATIONS = st.lists(st.tuples(st.sampled_from(["publish", "write", "tell", "read", "resume",
                                                "drain", "fill"]), st.integers(0, 30)),
                      max_size=60)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS, st.integers(1, 4))
# The case that needs its rule: the store has written a message the Bus has not heard of.
@example([("publish", 0), ("publish", 0), ("publish", 0), ("write", 0), ("tell", 0),
          ("resume", 3), ("publish", 0), ("write", 0), ("read", 0), ("tell", 0)], 1)
def test_every_resumed_client_sees_each_message_once_in_order(operations, window):
    """Publishes, store writes and the Bus hearing of them, store reads, resumes and full
    buffers in any order: every client that resumed from a point it saw gets every later
    message exactly once, in seq order."""
    bus = BusHarness(history_size=window, client_buffer_bytes=8000)
    store = ManualStore(bus.bus)
    sender, witness = bus.connect(), bus.connect()
    witness.ok("join_channel", {"room": "lab:notes"})
    readers: list[tuple[TestClient, int, list[dict[str, Any]]]] = []
    for n, (operation, back) in enumerate(operations):
        if operation == "publish":
            publish(sender, n)
        elif operation == "write":
            store.write()
        elif operation == "tell":
            store.tell()
        elif operation == "read":
            store.answer_reads()
        elif operation == "resume":
            channel = bus.bus.router.channel("lab", "notes")
            assert channel is not None     # the witness made it
            # From a point it saw: some way back, within what the store keeps (all of it).
            seen = max(0, channel.stream.committed_seq - back)
            reader = bus.connect()
            _, at_once = resume(reader, seen, channel.stream.epoch)
            readers.append((reader, seen, at_once))
        elif operation == "fill":
            for reader, _, _ in readers:
                reader.sink.backlog = 8000
        else:
            for reader, _, _ in readers:
                reader.sink.backlog = 0
            bus.timers.advance(0.01)
    for reader, _, _ in readers:
        reader.sink.backlog = 0
    while store.queue or store.reads or bus.bus.replays:
        store.commit()
        store.answer_reads()
        bus.timers.advance(0.01)
    everything = [stamp(f)[0] for f in witness.take() if f["type"] == "message"]
    assert everything == list(range(1, len(everything) + 1))
    for reader, seen, at_once in readers:
        got = [stamp(f)[0] for f in at_once + reader.take() if f["type"] == "message"]
        assert got == [seq for seq in everything if seq > seen]


# -- named cursors ---------------------------------------------------------------------------

def cursor_read(client: TestClient, name: str = "mine", **args: Any) -> dict[str, Any]:
    return client.ok("cursor.read", {"room": "lab:notes", "cursor": name, **args})


def test_a_cursor_reads_what_is_new_and_moves_only_when_acked():
    bus = BusHarness()
    bus.plug(Cursors(bus.bus, bus.timers, 10))
    sender, reader = bus.connect(), bus.connect()
    for n in range(3):
        publish(sender, n)
    first = cursor_read(reader, limit=2)
    assert [m["payload"]["n"] for m in first["messages"]] == [0, 1]
    assert (first["position"], first["recovered"]) == (None, True)
    assert [m["payload"]["n"] for m in cursor_read(reader)["messages"]] == [0, 1, 2]  # unmoved
    seq, epoch = stamp(first["messages"][-1])
    assert reader.ok("cursor.ack", {"room": "lab:notes", "cursor": "mine", "seq": seq,
                                    "epoch": epoch}) == {
        "room": "lab", "channel": "notes", "cursor": "mine", "seq": 2, "epoch": epoch}
    assert [m["payload"]["n"] for m in cursor_read(reader)["messages"]] == [2]
    # Another principal's cursor of the same name is another cursor.
    other = bus.connect(principal=local_user())
    assert len(cursor_read(other)["messages"]) == 3


def test_a_new_cursor_on_a_trimmed_channel_reads_from_the_earliest_kept_and_missed_nothing():
    bus = BusHarness(history_size=2)
    bus.plug(Cursors(bus.bus, bus.timers, 10))
    sender, reader = bus.connect(), bus.connect()
    for n in range(4):   # a window of 2: seqs 1 and 2 are gone
        publish(sender, n)
    first = cursor_read(reader)
    assert [m["payload"]["n"] for m in first["messages"]] == [2, 3]
    assert (first["recovered"], first["reason"]) == (True, None)


def test_a_waiting_read_answers_at_the_first_message_or_at_its_time():
    bus = BusHarness()
    bus.plug(Cursors(bus.bus, bus.timers, 10))
    sender, reader = bus.connect(), bus.connect()
    publish(sender, 0)
    seq, epoch = stamp(cursor_read(reader)["messages"][0])
    reader.ok("cursor.ack", {"room": "lab:notes", "cursor": "mine", "seq": seq, "epoch": epoch})
    assert reader.send({"type": "command", "command": "cursor.read", "args": {
        "room": "lab:notes", "cursor": "mine", "wait": 30}}) == []
    publish(sender, 1)
    response = reader.next("response")
    [message] = response["payload"]["data"]["messages"]
    assert message["payload"]["n"] == 1
    reader.take()
    seq, epoch = stamp(message)
    reader.ok("cursor.ack", {"room": "lab:notes", "cursor": "mine", "seq": seq, "epoch": epoch})
    assert reader.send({"type": "command", "command": "cursor.read", "args": {
        "room": "lab:notes", "cursor": "mine", "wait": 5}}) == []
    bus.timers.advance(4.9)
    reader.assert_silent()
    bus.timers.advance(0.1)
    assert reader.next("response")["payload"]["data"]["messages"] == []
    assert bus.bus.waiting == {}


@pytest.mark.parametrize("args, code, text", [
    ({"room": "lab:notes"}, ErrorCode.VALIDATION_ERROR, "cursor.read requires argument 'cursor'"),
    ({"room": "lab:nope", "cursor": "c"}, ErrorCode.NOT_FOUND,
     "channel lab:nope does not exist"),
    ({"room": "lab:notes", "cursor": "c", "wait": 3601}, ErrorCode.VALIDATION_ERROR,
     "wait must be 0 to 3600 seconds"),
    ({"room": "lab:notes", "cursor": "x" * 129}, ErrorCode.VALIDATION_ERROR,
     "cursor must be a name of 1 to 128 characters"),
])
def test_cursor_read_refuses_what_it_cannot_do(args, code, text):
    bus = BusHarness()
    bus.plug(Cursors(bus.bus, bus.timers, 10))
    client = bus.connect()
    publish(client, 0)
    assert_refused(client.command("cursor.read", args), code, text)


def test_cursor_ack_of_a_message_that_is_not_there_and_the_bound_on_cursors():
    bus = BusHarness()
    cursors = bus.plug(Cursors(bus.bus, bus.timers, 1))
    client = bus.connect()
    publish(client, 0)
    epoch = bus.bus.router.channel("lab", "notes").stream.epoch
    assert_refused(client.command("cursor.ack", {"room": "lab:notes", "cursor": "a", "seq": 2,
                                                 "epoch": epoch}), ErrorCode.VALIDATION_ERROR,
                   f"lab:notes has no message 2 in epoch {epoch} (it is at 1 in epoch {epoch})")
    assert_refused(client.command("cursor.ack", {"room": "lab:notes", "cursor": "a"}),
                   ErrorCode.VALIDATION_ERROR, "cursor.ack needs seq (an integer) and epoch (a "
                   "string), as the message carried them in its metadata")
    client.ok("cursor.ack", {"room": "lab:notes", "cursor": "a", "seq": 1, "epoch": epoch})
    assert_refused(client.command("cursor.ack", {"room": "lab:notes", "cursor": "b", "seq": 1,
                                                 "epoch": epoch}), ErrorCode.LIMIT_EXCEEDED,
                   "streams.max_cursors (1) cursors exist already")
    assert cursors.refused_total == 1
    client.ok("cursor.ack", {"room": "lab:notes", "cursor": "a", "seq": 1, "epoch": epoch})


def test_a_cursor_that_cannot_be_stored_is_refused_and_stays_where_it_was():
    bus = BusHarness()
    store = ManualStore(bus.bus)
    bus.plug(Cursors(bus.bus, bus.timers, 10))
    client = bus.connect()
    publish(client, 0)
    publish(client, 1)
    store.commit()
    epoch = bus.bus.router.channel("lab", "notes").stream.epoch
    client.ok("cursor.ack", {"room": "lab:notes", "cursor": "a", "seq": 1, "epoch": epoch})
    store.failing = True
    assert_refused(client.command("cursor.ack", {"room": "lab:notes", "cursor": "a", "seq": 2,
                                                 "epoch": epoch}), ErrorCode.STORE_FAILED,
                   "cursor a was not stored: the disk is full")
    assert [m["payload"]["n"] for m in cursor_read(client, "a")["messages"]] == [1]


def test_a_cursor_on_an_inbox_is_its_owners_alone():
    bus = BusHarness()
    bus.plug(Cursors(bus.bus, bus.timers, 10))
    bus.bus.access.owners["dreader"] = Owners("uid:1000")
    bus.bus.publish({"room": "dreader", "channel": "inbox", "payload": {"secret": 1}})
    stranger = bus.connect(principal=local_user(member=True))
    assert_refused(stranger.command("cursor.read", {"room": "dreader:inbox", "cursor": "c"}),
                   ErrorCode.AUTHORIZATION_ERROR, "not allowed to read dreader:inbox (allowed: "
                   "the owners of dreader: who registered it, its uids and groups; and admins)")


# -- the rest of the pipeline ---------------------------------------------------------------

@pytest.mark.parametrize("last_id, offset_of_key, expected", [
    (None, None, -1),
    ("not-an-id", None, -1),
    ("arq_1_x_abc", None, -1),
    ("ID", 120, 120),            # the last stored message is this file's line at 120
    ("OTHER", 120, -1),          # another file's line (or another generation of this one)
])
def test_where_a_file_stands_in_its_stream(last_id, offset_of_key, expected):
    key = "2049:77:abcd:0"
    if last_id == "ID":
        last_id = message_id(key, offset_of_key)
    elif last_id == "OTHER":
        last_id = message_id("2049:78:abcd:0", offset_of_key)
    assert stored_through(last_id, key) == expected


@pytest.mark.parametrize("given, expected", [
    (None, Retention(10, 100, 0.0)),
    ({"messages": 5}, Retention(5, 100, 0.0)),
    ({"bytes": 7, "age": 1.5}, Retention(10, 7, 1.5)),
    ({"age": 0}, Retention(10, 100, 0)),
    ({"messages": 0}, "retention.messages must be a positive integer"),
    ({"bytes": 2.5}, "retention.bytes must be a positive integer"),
    ({"age": -1}, "retention.age must be a positive number of seconds (0: any age)"),
    ({"messages": True}, "retention.messages must be a positive integer"),
    ({"count": 3}, "retention must be an object with messages, bytes and/or age"),
    ([1], "retention must be an object with messages, bytes and/or age"),
])
def test_a_retention_given_at_creation(given, expected):
    default = Retention(10, 100, 0.0)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=re.escape(expected)):
            Retention.of(given, default)
    else:
        assert Retention.of(given, default) == expected


def test_restored_streams_become_channels_and_read_their_past_back_once():
    bus = BusHarness(max_channels=9)
    store = ManualStore(bus.bus)
    kept = Stream("lab", "notes", "e0", Retention(10, 100, 0), first_seq=3, last_seq=4,
                  stored_id=1, details={"type": "alerts", "description": "pager",
                                        "created_by": "alice"})
    science = Stream("science", "general", "e1", Retention(10, 100, 0), last_seq=0,
                     stored_id=2)
    store.stored[kept] = [Stored(3, 1.0, b'{"id":"m3","room":"lab","channel":"notes"}'),
                          Stored(4, 2.0, b'{"id":"m4","room":"lab","channel":"notes"}')]
    assert bus.bus.restore([kept, science]) == 0
    channel = bus.bus.router.channel("lab", "notes")
    assert channel.stream is kept and not channel.history.complete
    assert (channel.type, channel.description, channel.created_by) == ("alerts", "pager",
                                                                       "alice")
    assert bus.bus.router.channel("science", "general").stream is science
    assert bus.bus.last_id("lab", "notes") == "m4" and channel.history.complete
    assert bus.bus.last_id("lab", "nope") is None
    assert bus.bus.earliest_seq(channel) == 3
    sender = bus.connect()
    publish(sender, "next")
    store.commit()
    assert sender.next("message_response")["metadata"] == {"seq": 5, "epoch": "e0",
                                                           "stored": True}


def test_restoring_more_streams_than_max_channels_leaves_the_rest_out():
    bus = BusHarness(max_channels=1)
    streams = [Stream("lab", f"c{n}", "e", Retention(1, 1, 0), last_seq=1) for n in range(3)]
    assert bus.bus.restore(streams) == 2
    assert [c.name for c in bus.bus.router.rooms["lab"].channels.values()] == ["c0"]


def test_after_pending_waits_for_what_is_pending_now_and_no_more():
    bus = BusHarness()
    store = ManualStore(bus.bus)
    sender = bus.connect()
    called: list[str] = []
    bus.bus.after_pending(lambda: called.append("at once"))
    publish(sender, 1)
    publish(sender, 2)
    bus.bus.after_pending(lambda: called.append("after 2"))
    publish(sender, 3)
    store.commit(1)
    assert called == ["at once"]
    store.commit(1)
    assert called == ["at once", "after 2"]
    assert [f["metadata"]["seq"] for f in sender.take()] == [1, 2]   # its ack came first


def test_one_message_that_fails_to_deliver_does_not_stop_the_others():
    bus = BusHarness()
    store = ManualStore(bus.bus)
    sender, watcher = bus.connect(), bus.connect()
    watcher.ok("join_channel", {"room": "lab:notes"})
    publish(sender, 1)
    publish(sender, 2)
    sends = watcher.sink.send

    def first_fails(frame: bytes) -> bool:
        watcher.sink.send = sends
        raise RuntimeError("a bug")
    watcher.sink.send = first_fails
    store.commit()
    assert numbers(watcher.take()) == [2]
    assert bus.events_named("internal_error")[0]["component"] == "streams"


def test_a_replay_stops_for_a_client_that_left_or_a_channel_that_was_deleted():
    bus = BusHarness(history_size=1)
    store = ManualStore(bus.bus)
    sender, leaving, staying = bus.connect(), bus.connect(), bus.connect()
    for n in range(3):
        publish(sender, n)
    store.commit()
    epoch = bus.bus.router.channel("lab", "notes").stream.epoch
    resume(leaving, 0, epoch)
    resume(staying, 0, epoch)
    bus.bus.detach(leaving.client)
    assert store.answer_reads() == 2
    assert numbers(staying.take()) == [0, 1, 2] and leaving.take() == []
    assert bus.bus.replays == set()
    late = bus.connect()
    resume(late, 0, epoch)
    admin = bus.admin()
    staying.ok("leave_channel", {"room": "lab:notes"})
    sender.send({"type": "command", "command": "leave_channel", "args": {"room": "lab:notes"}})
    admin.ok("delete_channel", {"room": "lab:notes"})
    store.answer_reads()
    assert late.take() == [] and bus.bus.replays == set()
    assert [(s.room, s.channel) for s in store.forgotten] == [("lab", "notes")]


def test_a_replay_that_finds_retention_took_its_gap_goes_on_from_the_window():
    bus = BusHarness(history_size=2)
    store = ManualStore(bus.bus)
    sender, reader = bus.connect(), bus.connect()
    for n in range(5):
        publish(sender, n)
    store.commit()
    stream = bus.bus.router.channel("lab", "notes").stream
    resume(reader, 0, stream.epoch)
    store.stored[stream] = []        # retention dropped them all meanwhile
    store.answer_reads()
    assert numbers(reader.take()) == [3, 4]       # what the window holds


def test_a_cursor_reads_older_messages_from_the_store_and_is_saved_there():
    bus = BusHarness(history_size=2)
    store = ManualStore(bus.bus)
    cursors = bus.plug(Cursors(bus.bus, bus.timers, 10))
    bus.bus.plug(on_event=cursors.on_event)
    sender, reader = bus.connect(), bus.connect()
    for n in range(5):
        publish(sender, n)
    store.commit()
    got = cursor_read(reader, limit=3)["messages"]
    assert [m["payload"]["n"] for m in got] == [0, 1, 2]
    seq, epoch = stamp(got[-1])
    reader.ok("cursor.ack", {"room": "lab:notes", "cursor": "mine", "seq": seq, "epoch": epoch})
    assert store.cursors == {(reader.client.principal.key, "mine", "lab", "notes"): (3, epoch)}
    assert [m["payload"]["n"] for m in cursor_read(reader)["messages"]] == [3, 4]
    cursors.restore({("uid:9", "old", "lab", "notes"): Position(1, epoch)})
    admin = bus.admin()
    admin.ok("delete_channel", {"room": "lab:notes"})
    assert cursors.positions == {}


def test_a_clients_own_seq_and_epoch_are_dropped_wherever_no_stream_sets_them():
    bus = BusHarness()
    sender, other = bus.connect(), bus.connect()
    forged = {"seq": 99, "epoch": "forged", "mine": 1}
    sender.send({"type": "private", "payload": {"target": other.id}, "metadata": forged})
    assert other.next("private")["metadata"] == {"mine": 1}
    sender.send({"type": "message", "room": "science", "payload": {}, "metadata": forged})
    assert other.next("message")["metadata"] == {"mine": 1}
    publish(sender, 1)
    other.ok("join_channel", {"room": "lab:notes"})
    sender.send({"type": "message", "room": "lab:notes", "payload": {"n": 2},
                 "metadata": forged})
    got = other.next("message")["metadata"]
    assert (got["seq"], got["mine"]) == (2, 1) and got["epoch"] != "forged"
