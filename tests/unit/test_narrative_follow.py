"""The file follower in-process: observations in, actions out, on a log dir in memory.

One test per row of the table in arqond/core/narrative/follow.py, then the cases around it
(restarts, limits, links, lines), then a property: any interleaving of appends, rotations,
copytruncates, deletions and sweeps publishes every complete line once, in order.
"""

from __future__ import annotations

import logging
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arqond.core.narrative.actions import Announce, Close, Find, Open, OpenReason, Publish, Read
from arqond.core.narrative.files import Event, FollowError, Record, State
from arqond.core.narrative.follow import CHUNK
from arqond.core.narrative.ids import fingerprint, identity_key
from tests.unit.narrative_harness import (BROADCAST_TARGET, LOG, Bridge, assert_closes,
                                          assert_opens, assert_publishes, assert_state, lines_of,
                                          of)

NARRATIVE = f"{LOG}/d-narrative.jsonl"
ONE = len(lines_of(1))  # every test line has the same length


@pytest.fixture(autouse=True)
def _every_log_line(caplog):
    caplog.set_level(logging.DEBUG, logger="arqond")


def following(*seqs: int, name: str = "d-narrative.jsonl", **options) -> Bridge:
    """A bridge following ``name`` with ``seqs`` written and published."""
    bridge = Bridge(**options)
    bridge.disk.append(f"{LOG}/{name}", lines_of(*seqs))
    bridge.start()
    bridge.pump()
    return bridge


# -- the table, row by row ------------------------------------------------------------------

def test_a_new_narrative_file_is_opened_followed_and_its_zgent_announced():
    bridge = Bridge()
    bridge.disk.append(NARRATIVE, lines_of(1, 2))
    actions = bridge.see("d-narrative.jsonl")
    assert_opens(actions, NARRATIVE)
    assert of(Announce, actions) == [Announce("d")]
    assert_state(bridge, NARRATIVE, State.FOLLOWING)
    assert_publishes(bridge.pump(), offsets=[0, ONE], path=NARRATIVE)


def test_only_narrative_files_announce_a_zgent():
    bridge = Bridge()
    for name in ("d-events.jsonl", "presence.jsonl"):
        bridge.disk.append(f"{LOG}/{name}", lines_of(1))
        assert of(Announce, bridge.see(name)) == []


def test_a_file_that_cannot_be_opened_is_refused_once_and_retried(caplog):
    bridge = Bridge()
    bridge.disk.append(NARRATIVE, lines_of(1))
    bridge.disk.unreadable.add(NARRATIVE)
    for _ in range(3):
        assert_opens(bridge.see("d-narrative.jsonl"), NARRATIVE)
    assert bridge.follower.files == 0 and bridge.follower.files_refused == 1
    assert caplog.text.count("d-narrative.jsonl: cannot be read: Permission denied; not "
                             "followed") == 1
    bridge.disk.unreadable.clear()  # the admin fixed it: the next look follows it
    bridge.sweep()
    assert_publishes(bridge.pump(), offsets=[0])


def test_a_file_replaced_between_look_and_open_is_closed_quietly():
    bridge = Bridge()
    bridge.disk.append(NARRATIVE, lines_of(1))
    looked = bridge.disk.look("d-narrative.jsonl")
    bridge.disk.unlink(NARRATIVE)
    bridge.disk.append(NARRATIVE, lines_of(2))  # another inode at the name
    actions = bridge.run(bridge.follower.name_seen("d-narrative.jsonl", *looked))
    assert_closes(actions, NARRATIVE)
    assert bridge.follower.files == 0 and bridge.follower.files_refused == 0
    bridge.see("d-narrative.jsonl")  # its own event comes next
    assert_publishes(bridge.pump(), offsets=[0], data=[lines_of(2)[:-1]])


def test_a_deleted_file_is_read_to_its_end(caplog):
    bridge = following(1)
    bridge.disk.append(NARRATIVE, lines_of(2, 3))
    bridge.disk.unlink(NARRATIVE)
    bridge.see("d-narrative.jsonl")
    assert_state(bridge, NARRATIVE, State.DRAINING)
    assert bridge.follower.rotations == 1
    assert f"{NARRATIVE} deleted or renamed; reading the old file to its end first" in \
        caplog.text
    assert_publishes(bridge.pump(), offsets=[ONE, 2 * ONE])
    assert_state(bridge, NARRATIVE, State.DRAINED)


def test_rename_and_create_reads_the_old_file_to_its_end_before_the_new_one():
    bridge = following(1)
    bridge.disk.append(NARRATIVE, lines_of(*range(2, 200)))  # written before the rename
    bridge.disk.rename(NARRATIVE, NARRATIVE + ".1")
    bridge.disk.append(NARRATIVE, lines_of(200, 201))
    bridge.see("d-narrative.jsonl.1", "d-narrative.jsonl")
    assert_state(bridge, NARRATIVE, State.DRAINING)  # the old one, still under its old path
    bridge.pump()
    assert [int(line.data.split(b":")[-1][:-1]) for line in bridge.published] == \
        list(range(1, 202))
    old, new = bridge.follower.away[0], bridge.follower.at_name["d-narrative.jsonl"]
    assert (old.state, new.state) == (State.DRAINED, State.FOLLOWING)
    assert old.key != new.key


def test_a_backlog_is_read_one_chunk_per_step_and_files_take_turns():
    bridge = Bridge()
    big = lines_of(*range(3 * CHUNK // ONE))
    bridge.disk.append(NARRATIVE, big)
    bridge.disk.append(f"{LOG}/e-narrative.jsonl", lines_of(1, 2))
    bridge.start()
    turns = []
    while (actions := bridge.step()) is not None:
        reads = of(Read, actions)
        assert len(reads) <= 1 and all(read.size <= CHUNK for read in reads)
        turns += [read.file.name for read in reads]
    assert turns[:3] == ["d-narrative.jsonl", "e-narrative.jsonl", "d-narrative.jsonl"]
    assert len(bridge.published) == big.count(b"\n") + 2


def test_a_partial_line_waits_for_its_newline():
    bridge = following(1)
    whole = lines_of(2)
    bridge.disk.append(NARRATIVE, whole[:7])
    bridge.see("d-narrative.jsonl")
    assert_publishes(bridge.pump(), offsets=[])
    bridge.disk.append(NARRATIVE, whole[7:])
    bridge.see("d-narrative.jsonl")
    assert_publishes(bridge.pump(), offsets=[ONE], data=[whole[:-1]])
    assert bridge.follower.records()[0].offset == 2 * ONE


def test_an_overlong_line_is_handed_out_cut_and_the_next_one_whole():
    bridge = following(1, max_line_bytes=40)
    bridge.disk.append(NARRATIVE, b"x" * 100 + b"\n" + lines_of(3))
    bridge.see("d-narrative.jsonl")
    actions = bridge.pump()
    cut, after = [line for publish in of(Publish, actions) for line in publish.lines]
    assert (cut.offset, cut.data, cut.length, cut.cut) == (ONE, b"x" * 40, 100, True)
    assert (after.offset, after.data) == (ONE + 101, lines_of(3)[:-1])


def test_a_drained_file_lets_its_successor_go_on():
    bridge = following(1)
    bridge.disk.rename(NARRATIVE, NARRATIVE + ".1")
    bridge.disk.append(NARRATIVE, lines_of(2))
    bridge.see("d-narrative.jsonl")
    first = bridge.step()  # the old file: nothing left, DRAINED
    assert of(Publish, first) == [] and bridge.follower.away[0].state is State.DRAINED
    assert_publishes(bridge.pump(), offsets=[0])


def test_truncation_in_place_reads_again_from_zero_as_the_next_generation(caplog):
    bridge = following(1, 2)
    key = bridge.published[0].key
    bridge.disk.truncate(NARRATIVE)
    bridge.disk.append(NARRATIVE, lines_of(3))
    bridge.see("d-narrative.jsonl")
    actions = bridge.pump()
    assert of(Find, actions)[0].record.offset == 2 * ONE  # no copy exists: nothing comes of it
    assert_publishes(actions, offsets=[0], data=[lines_of(3)[:-1]])
    file = bridge.file(NARRATIVE)
    assert file.generation == 1 and bridge.follower.truncations == 1
    assert bridge.published[-1].key == identity_key(file.dev, file.ino, fingerprint(
        lines_of(3)), 1) != key
    assert f"{NARRATIVE} was truncated or rewritten at offset {2 * ONE}; reading it again " \
        "from the start" in caplog.text


def test_copytruncate_takes_the_lines_not_yet_published_from_the_copy_first(caplog):
    bridge = following(1)
    bridge.disk.append(NARRATIVE, lines_of(2, 3))  # written, not yet read
    bridge.disk.copy(NARRATIVE, NARRATIVE + ".1")
    bridge.disk.truncate(NARRATIVE)
    bridge.disk.append(NARRATIVE, lines_of(4, 5))
    bridge.see("d-narrative.jsonl")
    bridge.pump()
    assert [(line.path, line.offset) for line in bridge.published] == [
        (NARRATIVE, 0), (NARRATIVE + ".1", ONE), (NARRATIVE + ".1", 2 * ONE), (NARRATIVE, 0),
        (NARRATIVE, ONE)]
    # The rescued lines keep the ids of the file they were written to.
    assert len({line.key for line in bridge.published[:3]}) == 1
    assert bridge.follower.recovered_from_copies == 1
    assert f"{NARRATIVE} was truncated; publishing its lines after offset {ONE} from the copy " \
        f"{NARRATIVE}.1 first" in caplog.text


def test_a_copy_without_unpublished_lines_is_not_read():
    bridge = following(1, 2)
    bridge.disk.copy(NARRATIVE, NARRATIVE + ".1")
    bridge.disk.truncate(NARRATIVE)
    bridge.see("d-narrative.jsonl")
    actions = bridge.pump()
    assert of(Open, actions) == [] and bridge.follower.recovered_from_copies == 0


def test_the_same_inode_with_another_first_line_is_a_new_file():
    bridge = following(1, 2)
    inode = bridge.disk.paths[NARRATIVE]
    inode.data[:] = lines_of(7, 8, 9)  # rewritten in place, longer than before
    bridge.see("d-narrative.jsonl")
    assert_publishes(bridge.pump(), offsets=[0, ONE, 2 * ONE])
    assert bridge.file(NARRATIVE).generation == 1


def test_a_drained_file_that_shrinks_is_drained_again():
    bridge = following(1, 2)
    bridge.disk.rename(NARRATIVE, NARRATIVE + ".1")
    bridge.see("d-narrative.jsonl")
    bridge.pump()
    assert_state(bridge, NARRATIVE, State.DRAINED)
    bridge.disk.truncate(NARRATIVE + ".1")
    bridge.disk.append(NARRATIVE + ".1", lines_of(5))
    bridge.see("d-narrative.jsonl.1")
    file = bridge.follower.away[0]
    assert bridge.step() is not None and file.state is State.DRAINING
    bridge.pump()
    assert file.state is State.DRAINED and bridge.published[-1].offset == 0


def test_a_drained_file_closes_rotate_wait_after_it_left_its_name():
    bridge = following(1, rotate_wait=5.0)
    bridge.disk.rename(NARRATIVE, NARRATIVE + ".1")
    bridge.see("d-narrative.jsonl")
    bridge.pump()
    assert_closes(bridge.sweep(4.0))
    bridge.pump()  # what the sweep queued: nothing new
    assert_closes(bridge.sweep(1.0), NARRATIVE)
    assert bridge.follower.files == 0 and bridge.open == {}


def test_a_drained_file_with_a_late_write_waiting_is_not_closed():
    bridge = following(1, rotate_wait=0.0)
    bridge.disk.rename(NARRATIVE, NARRATIVE + ".1")
    bridge.see("d-narrative.jsonl")
    bridge.pump()
    bridge.disk.append(NARRATIVE + ".1", lines_of(2))  # a writer still holding the old file
    bridge.see("d-narrative.jsonl.1")
    assert of(Close, bridge.run(bridge.follower.tick())) == []
    assert_publishes(bridge.pump(), offsets=[ONE])
    assert_closes(bridge.sweep(), NARRATIVE)


def test_a_file_whose_read_fails_is_closed_and_forgotten(caplog):
    bridge = following(1)
    file = bridge.file(NARRATIVE)
    actions = bridge.run(bridge.follower.read_failed(file, "Input/output error"))
    assert_closes(actions, NARRATIVE)
    assert file.state is State.CLOSED and bridge.follower.files == 0
    assert f"{NARRATIVE}: read failed: Input/output error; closing it" in caplog.text


def test_stopping_closes_every_file():
    bridge = following(1)
    bridge.disk.rename(NARRATIVE, NARRATIVE + ".1")
    bridge.disk.append(NARRATIVE, lines_of(2))
    bridge.see("d-narrative.jsonl")
    actions = bridge.run(bridge.follower.stop())
    assert sorted(action.file.state.name for action in of(Close, actions)) == ["CLOSED"] * 2
    assert bridge.follower.files == 0


@pytest.mark.parametrize("state, event", [(State.FOLLOWING, Event.EXPIRED),
                                          (State.CLOSED, Event.GREW),
                                          (State.OPENING, Event.LEFT_NAME)])
def test_an_event_with_no_row_in_the_table_is_a_bug_that_says_so(state, event):
    bridge = following(1)
    file = bridge.file(NARRATIVE)
    file.state = state
    with pytest.raises(FollowError, match=f"no transition from {state.name} when it "
                                          f"{event.value}"):
        file.fire(event)


def test_transitions_are_logged_at_debug_level(caplog):
    bridge = following(1)
    bridge.disk.unlink(NARRATIVE)
    bridge.see("d-narrative.jsonl")
    assert f"{NARRATIVE}: OPENING -> FOLLOWING (opened at its name)" in caplog.text
    assert f"{NARRATIVE}: FOLLOWING -> DRAINING (left its name)" in caplog.text


def test_a_file_whose_step_failed_waits_for_the_next_tick():
    bridge = following(1)
    file = bridge.file(NARRATIVE)
    bridge.disk.append(NARRATIVE, lines_of(2))
    bridge.see("d-narrative.jsonl")
    bridge.follower.step_failed(file)
    bridge.see("d-narrative.jsonl")  # more events: still held
    assert bridge.step() is None
    bridge.sweep()
    assert_publishes(bridge.pump(), offsets=[ONE])


# -- restarts: resuming from checkpoint records ------------------------------------------------

def test_a_restart_resumes_at_the_checkpoint_with_the_same_ids():
    bridge = following(1, 2)
    bridge.disk.append(NARRATIVE, lines_of(3))
    again = bridge.restart()
    assert_publishes(again.pump(), offsets=[2 * ONE])
    assert again.published[0].key == bridge.published[0].key


def test_rotation_while_stopped_reads_the_rest_of_the_old_file_then_the_new(caplog):
    bridge = following(1)
    records = bridge.follower.records()
    bridge.run(bridge.follower.stop())
    bridge.disk.append(NARRATIVE, lines_of(2, 3))
    bridge.disk.rename(NARRATIVE, NARRATIVE + ".1")
    bridge.disk.append(NARRATIVE, lines_of(4))
    again = Bridge(bridge.disk)
    actions = again.start(records)
    assert [action.why for action in of(Open, actions)] == [OpenReason.ROTATED, OpenReason.NEW]
    again.pump()
    assert [(line.path, line.offset) for line in again.published] == [
        (NARRATIVE + ".1", ONE), (NARRATIVE + ".1", 2 * ONE), (NARRATIVE, 0)]
    assert "d-narrative.jsonl was rotated while arqond was stopped; reading the rest of it " \
        f"from {NARRATIVE}.1" in caplog.text


def test_copytruncate_while_stopped_takes_the_lost_lines_from_the_copy():
    bridge = following(1)
    records = bridge.follower.records()
    bridge.run(bridge.follower.stop())
    bridge.disk.append(NARRATIVE, lines_of(2))
    bridge.disk.copy(NARRATIVE, NARRATIVE + ".1")
    bridge.disk.truncate(NARRATIVE)
    bridge.disk.append(NARRATIVE, lines_of(3))
    again = Bridge(bridge.disk)
    actions = again.start(records)
    assert [action.why for action in of(Open, actions)] == [
        OpenReason.RESUME, OpenReason.ROTATED, OpenReason.NEW]
    assert_closes(actions, NARRATIVE)  # the same inode holds another first line
    again.pump()
    assert [(line.path, line.offset) for line in again.published] == [
        (NARRATIVE + ".1", ONE), (NARRATIVE, 0)]
    assert again.follower.truncations == 1


def test_a_file_deleted_while_stopped_is_forgotten():
    bridge = following(1)
    records = bridge.follower.records()
    bridge.disk.unlink(NARRATIVE)
    again = Bridge(bridge.disk)
    actions = again.start(records)
    assert of(Find, actions)[0].record == records[0]
    assert of(Open, actions) == [] and again.follower.records() == []


def test_inode_reuse_while_stopped_reads_the_new_content_from_zero():
    bridge = following(1, 2)
    records = bridge.follower.records()
    bridge.disk.paths[NARRATIVE].data[:] = lines_of(7, 8, 9)
    again = Bridge(bridge.disk)
    again.start(records)
    assert_publishes(again.pump(), offsets=[0, ONE, 2 * ONE])
    assert again.follower.truncations == 1


def test_a_checkpoint_without_a_fingerprint_resumes_and_learns_it():
    bridge = Bridge()
    bridge.disk.append(NARRATIVE, b'{"partial"')
    bridge.start()
    bridge.pump()
    records = bridge.follower.records()
    assert records[0].fingerprint is None
    bridge.disk.append(NARRATIVE, b"}\n")
    again = Bridge(bridge.disk)
    again.start(records)
    assert_publishes(again.pump(), offsets=[0])
    assert again.follower.records()[0].fingerprint == fingerprint(b'{"partial"}\n')


def test_a_checkpoint_under_a_name_no_longer_published_is_dropped():
    record = Record("Bad-narrative.jsonl", 1, 2, "ab", "k", 0, 5)
    bridge = Bridge()
    assert bridge.run(bridge.follower.resume(record, None)) == []
    assert bridge.run(bridge.follower.found(Find(record, 5, frozenset()), None)) == []


@pytest.mark.parametrize("read_from, content, published", [
    ("end", lines_of(1, 2) + b'{"being written', [2 * ONE]),
    ("end", lines_of(1, 2), [2 * ONE]),
    ("end", b"no newline at all", [0]),
    ("end", b"x" * 2000, [2000]),  # no newline within max_line_bytes: starts at the end
    ("beginning", lines_of(1, 2) + b'{"being written', [0, ONE, 2 * ONE]),
])
def test_a_first_start_reads_files_found_from_where_read_from_says(read_from, content,
                                                                   published):
    bridge = Bridge(read_from=read_from)
    bridge.disk.append(NARRATIVE, content)
    bridge.start()
    bridge.disk.append(NARRATIVE, b'"}\n')
    bridge.see("d-narrative.jsonl")
    assert_publishes(bridge.pump(), offsets=published)


def test_files_appearing_after_a_first_start_are_read_from_their_beginning():
    bridge = Bridge(read_from="end")
    bridge.start()
    bridge.disk.append(NARRATIVE, lines_of(1, 2))
    bridge.see("d-narrative.jsonl")
    assert_publishes(bridge.pump(), offsets=[0, ONE])


# -- what is refused -----------------------------------------------------------------------

def test_max_files_refuses_the_next_file_once_until_one_closes(caplog):
    bridge = Bridge(max_files=2, rotate_wait=0.0)
    for name in ("a", "b", "c"):
        bridge.disk.append(f"{LOG}/{name}-narrative.jsonl", lines_of(1))
    bridge.start()
    bridge.sweep()
    assert sorted(bridge.follower.at_name) == ["a-narrative.jsonl", "b-narrative.jsonl"]
    assert caplog.text.count("c-narrative.jsonl: max_files (2) files are followed already; "
                             "not followed") == 1
    bridge.disk.unlink(f"{LOG}/a-narrative.jsonl")
    bridge.sweep()
    bridge.pump()
    bridge.sweep()  # a is read to its end and closed; c fits now
    assert sorted(bridge.follower.at_name) == ["b-narrative.jsonl", "c-narrative.jsonl"]


@pytest.mark.parametrize("make, reason", [
    (lambda disk: disk.symlink(f"{LOG}/evil-narrative.jsonl", "/etc/passwd"),
     "a symbolic link (only broadcast.jsonl pointing to /moo/broadcast.jsonl is followed)"),
    (lambda disk: disk.symlink(f"{LOG}/evil-narrative.jsonl", BROADCAST_TARGET),
     "a symbolic link (only broadcast.jsonl"),
    (lambda disk: disk.create(f"{LOG}/evil-narrative.jsonl", mode=stat.S_IFIFO | 0o600),
     "a FIFO, not a regular file"),
    (lambda disk: disk.create(f"{LOG}/evil-narrative.jsonl", mode=stat.S_IFDIR | 0o700),
     "a directory, not a regular file"),
    (lambda disk: disk.create(f"{LOG}/evil-narrative.jsonl", mode=stat.S_IFSOCK | 0o600),
     "a socket, not a regular file"),
])
def test_links_and_other_kinds_of_files_are_refused_once(caplog, make, reason):
    bridge = Bridge()
    if "broadcast" in reason and "pointing" not in reason:
        bridge.disk.append(BROADCAST_TARGET, lines_of(1))
    make(bridge.disk)
    for _ in range(3):
        assert bridge.see("evil-narrative.jsonl") == []
    assert caplog.text.count(f"{LOG}/evil-narrative.jsonl: {reason}") == 1
    assert bridge.follower.files_refused == 1


def test_the_own_broadcast_link_is_followed_and_published_under_its_name():
    bridge = Bridge()
    bridge.disk.append(BROADCAST_TARGET, lines_of(1))
    bridge.disk.symlink(f"{LOG}/broadcast.jsonl", BROADCAST_TARGET)
    actions = bridge.see("broadcast.jsonl")
    assert_opens(actions, BROADCAST_TARGET)
    assert_publishes(bridge.pump(), offsets=[0], path=f"{LOG}/broadcast.jsonl")
    bridge.disk.unlink(BROADCAST_TARGET)  # a dangling link: the file is gone
    bridge.see("broadcast.jsonl")
    assert_state(bridge, f"{LOG}/broadcast.jsonl", State.DRAINING)


@pytest.mark.parametrize("name, reason", [
    ("a..b-narrative.jsonl", "'a..b' is not a valid Zgent name (invalid Zgent name 'a..b': "),
    ("Bad Name-narrative.jsonl", "'Bad Name' is not a valid Zgent name"),
    ("d-.jsonl", "'' is not a valid channel name"),
])
def test_names_that_map_to_no_channel_are_refused_once(caplog, name, reason):
    bridge = Bridge()
    bridge.disk.append(f"{LOG}/{name}", lines_of(1))
    bridge.see(name)
    bridge.sweep()
    assert caplog.text.count(f"{LOG}/{name}: {reason}") == 1
    assert bridge.follower.files == 0


def test_other_names_are_ignored_quietly_and_a_vanished_name_may_be_refused_again(caplog):
    bridge = Bridge()
    for name in ("notes.txt", ".hidden.jsonl", "d-narrative.jsonl.1"):
        bridge.disk.append(f"{LOG}/{name}", b"x\n")
        bridge.see(name)
    assert bridge.follower.files_refused == 0 and bridge.follower.files == 0
    bridge.disk.append(f"{LOG}/a..b-narrative.jsonl", b"x\n")
    bridge.see("a..b-narrative.jsonl")
    bridge.disk.unlink(f"{LOG}/a..b-narrative.jsonl")
    bridge.see("a..b-narrative.jsonl")
    bridge.disk.append(f"{LOG}/a..b-narrative.jsonl", b"x\n")
    bridge.see("a..b-narrative.jsonl")
    assert bridge.follower.files_refused == 2


def test_a_followed_file_under_a_new_publishable_name_is_not_followed_twice():
    bridge = following(1)
    bridge.disk.rename(NARRATIVE, f"{LOG}/d-old.jsonl")
    bridge.see("d-old.jsonl", "d-narrative.jsonl")
    assert bridge.follower.files == 1 and bridge.follower.away[0].path == NARRATIVE


def test_reload_applies_a_new_line_limit_to_followed_files():
    bridge = following(1)
    bridge.follower.reload(bridge.settings.__class__(**{**bridge.settings.__dict__,
                                                        "max_line_bytes": 10}))
    bridge.disk.append(NARRATIVE, lines_of(2))
    bridge.see("d-narrative.jsonl")
    (line,) = [line for publish in of(Publish, bridge.pump()) for line in publish.lines]
    assert line.cut and len(line.data) == 10


# -- any interleaving ------------------------------------------------------------------------

NAMES = ("a-narrative.jsonl", "b-events.jsonl")
operations = st.one_of(
    st.tuples(st.just("append"), st.sampled_from(NAMES), st.integers(1, 40), st.booleans()),
    st.tuples(st.just("step"), st.integers(1, 5)),
    st.tuples(st.just("rename"), st.sampled_from(NAMES), st.booleans()),
    st.tuples(st.just("copytruncate"), st.sampled_from(NAMES)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("truncate"), st.sampled_from(NAMES)),
    st.tuples(st.just("sweep"), st.floats(0, 10)),
    st.tuples(st.just("restart"),),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(operations, max_size=40))
def test_any_interleaving_publishes_every_complete_line_once_in_order(ops):
    bridge = Bridge(max_line_bytes=64, rotate_wait=2.0)
    bridge.start()
    written = {name: 0 for name in NAMES}
    rotated = 0
    deleted = False
    published: list = []

    def look(name: str) -> None:
        bridge.see(name)

    for op in ops:
        kind = op[0]
        if kind == "append":
            _, name, count, split = op
            data = lines_of(*range(written[name] + 1, written[name] + count + 1), name=name)
            written[name] += count
            cut = len(data) // 2 if split else len(data)
            bridge.disk.append(f"{LOG}/{name}", data[:cut])
            look(name)
            bridge.step()  # maybe mid-line
            bridge.disk.append(f"{LOG}/{name}", data[cut:])
            look(name)
        elif kind == "step":
            for _ in range(op[1]):
                bridge.step()
        elif kind == "rename" and f"{LOG}/{op[1]}" in bridge.disk.paths:
            rotated += 1
            bridge.disk.rename(f"{LOG}/{op[1]}", f"{LOG}/{op[1]}.{rotated}")
            if op[2]:  # logrotate's create
                bridge.disk.create(f"{LOG}/{op[1]}")
            look(op[1])
            look(f"{op[1]}.{rotated}")
        elif kind == "copytruncate" and f"{LOG}/{op[1]}" in bridge.disk.paths:
            followed = bridge.follower.at_name.get(op[1])
            if followed is None or followed.fingerprint is None:
                # The copy is found by its first line: the file's must have been read.
                bridge.pump()
            rotated += 1
            bridge.disk.copy(f"{LOG}/{op[1]}", f"{LOG}/{op[1]}.{rotated}")
            bridge.disk.truncate(f"{LOG}/{op[1]}")
            look(op[1])
            # logrotate runs rarely: what it rotated is read before it rotates again.
            bridge.pump()
        elif kind == "delete" and f"{LOG}/{op[1]}" in bridge.disk.paths:
            bridge.disk.unlink(f"{LOG}/{op[1]}")
            look(op[1])
            deleted = True
        elif kind == "truncate" and f"{LOG}/{op[1]}" in bridge.disk.paths:
            bridge.pump()  # a truncation in place loses what was not read: only when caught up
            bridge.disk.truncate(f"{LOG}/{op[1]}")
            look(op[1])
            # Regrown to exactly the length read before it was looked at, it would be noticed
            # only by the first-line check of the next sweep: here it is looked at at once.
            bridge.pump()
        elif kind == "sweep":
            bridge.sweep(op[1])
        elif kind == "restart":
            if deleted:  # a deleted file is read through its descriptor, lost once closed
                bridge.pump()
                deleted = False
            published += bridge.published
            bridge = bridge.restart()
    bridge.pump()
    bridge.sweep(10.0)
    bridge.pump()
    published += bridge.published
    for name in NAMES:
        seqs = [int(line.data.split(b":")[-1].rstrip(b"}")) for line in published
                if line.data.startswith(b'{"n":"%s"' % name.encode())]
        assert seqs == list(range(1, written[name] + 1)), name
    ids = [(line.key, line.offset) for line in published]
    assert len(ids) == len(set(ids))


# -- blind spots the sweep or the inode closes ---------------------------------------------------

def test_a_copytruncate_before_anything_was_published_is_rescued_from_the_copy():
    bridge = Bridge()
    bridge.disk.append(NARRATIVE, lines_of(1, 2))
    bridge.see("d-narrative.jsonl")  # opened: its first line is known, nothing read yet
    bridge.disk.copy(NARRATIVE, NARRATIVE + ".1")
    bridge.disk.truncate(NARRATIVE)
    bridge.disk.append(NARRATIVE, lines_of(3))
    bridge.see("d-narrative.jsonl")
    bridge.pump()
    bridge.sweep()  # same length as before: the first-line check of the sweep notices it
    bridge.pump()
    assert [(line.path, line.offset) for line in bridge.published] == [
        (NARRATIVE + ".1", 0), (NARRATIVE + ".1", ONE), (NARRATIVE, 0)]


def test_a_file_rewritten_to_the_length_already_read_is_noticed_by_the_next_sweep():
    bridge = following(1, 2)
    bridge.disk.paths[NARRATIVE].data[:] = lines_of(3, 4)
    bridge.see("d-narrative.jsonl")
    assert_publishes(bridge.pump(), offsets=[])  # nothing grew: an event cannot tell
    bridge.sweep()
    assert_publishes(bridge.pump(), offsets=[0, ONE], data=[lines_of(3)[:-1], lines_of(4)[:-1]])


def test_a_checkpoint_without_a_fingerprint_is_found_by_its_inode_after_a_rename():
    bridge = Bridge()
    bridge.disk.append(NARRATIVE, b'{"partial"')
    bridge.start()
    bridge.pump()
    records = bridge.follower.records()
    bridge.disk.append(NARRATIVE, b"}\n")
    bridge.disk.rename(NARRATIVE, NARRATIVE + ".1")
    again = Bridge(bridge.disk)
    again.start(records)
    assert_publishes(again.pump(), offsets=[0], path=NARRATIVE + ".1")
