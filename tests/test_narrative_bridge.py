"""The narrative bridge against the real daemon: real files, real inotify, real WebSockets.

Each case checks the exact sequence of lines a subscriber gets: none lost, none repeated.
Lines published while no client could listen (during a restart) are read back with the
``history`` command, which keeps every published envelope of a channel.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from arqond.core.narrative import ids
from tests.conftest import metrics_of, scaled

pytestmark = pytest.mark.timeout(90)


def line(name: str, seq: int, **extra: Any) -> str:
    return orjson.dumps({"ts": "2026-02-12T10:00:00Z", "from": name, "type": "narrative",
                         "content": f"{name} line {seq}", "seq": seq, **extra}).decode() + "\n"


def append(path: Path, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(text)


def lines(name: str, seqs: range | list[int]) -> str:
    return "".join(line(name, seq) for seq in seqs)


async def subscriber(connect_peer, daemon, *targets: str):
    peer = await connect_peer(daemon.ws_url)
    for target in targets:
        response = await peer.command("join_channel", {"room": target})
        assert response["status"] == "success", response
    return peer


async def receive(peer, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    got = []
    for _ in range(count):
        frame = await peer.recv(timeout)
        assert frame["type"] == "event", frame
        got.append(frame)
    return got


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [frame["payload"]["seq"] for frame in frames]


async def history(connect_peer, daemon, room: str, channel: str, count: int,
                  timeout: float = 15.0) -> list[dict[str, Any]]:
    """The channel's stored envelopes once at least ``count`` are there (and no more come),
    asked by a client of its own so that no live event gets in the way."""
    peer = await connect_peer(daemon.ws_url)
    deadline = asyncio.get_running_loop().time() + scaled(timeout)
    previous = None
    while True:
        response = await peer.command("history", {"room": room, "channel": channel,
                                                  "limit": 500})
        entries = response["payload"]["data"]["history"] if response["status"] == "success" \
            else []
        if len(entries) >= count and previous is not None and len(previous) == len(entries):
            return [{**entry, "id": entry["message_id"]} for entry in entries]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{room}:{channel} has {len(entries)} of {count} lines")
        previous = entries if len(entries) >= count else None
        await asyncio.sleep(0.2)


async def stop(daemon) -> int:
    """SIGTERM and wait, with this loop running so connected test clients answer the close."""
    return await asyncio.get_running_loop().run_in_executor(None, daemon.stop)


def checkpointed(daemon) -> list[dict[str, Any]]:
    """The records of the newest document in the checkpoint file (one JSON line per save)."""
    newest = (daemon.state_dir / "narrative-checkpoints.json").read_bytes().splitlines()[-1]
    return orjson.loads(newest)["files"]


def expected_id(path: Path, offset: int, generation: int = 0) -> str:
    st = os.stat(path)
    with open(path, "rb") as handle:
        fp = ids.fingerprint(handle.read(ids.FINGERPRINT_BYTES))
    return ids.message_id(ids.identity_key(st.st_dev, st.st_ino, fp, generation), offset)


# -- publishing ---------------------------------------------------------------------------

async def test_new_file_lines_arrive_once_in_order_with_the_envelope(daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    append(path, lines("dreader", range(1, 4)))
    got = await receive(peer, 3)
    assert seqs(got) == [1, 2, 3]
    first = got[0]
    assert (first["type"], first["room"], first["channel"], first["sender"]) == \
        ("event", "dreader", "narrative", "dreader")
    assert first["payload"] == orjson.loads(line("dreader", 1))
    assert first["metadata"] == {"source": {"path": str(path), "offset": 0}, "seq": 1,
                                 "epoch": first["metadata"]["epoch"]}
    offsets = [frame["metadata"]["source"]["offset"] for frame in got]
    assert offsets == [0, len(line("dreader", 1)), 2 * len(line("dreader", 1))]
    assert [frame["id"] for frame in got] == [expected_id(path, o) for o in offsets]
    await peer.expect_silence(0.3)


async def test_partial_line_waits_for_its_newline(daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    whole = line("dreader", 1)
    append(path, whole[:20])
    await peer.expect_silence(0.5)
    append(path, whole[20:-1])
    await peer.expect_silence(0.5)
    append(path, "\n" + line("dreader", 2))
    got = await receive(peer, 2)
    assert seqs(got) == [1, 2] and got[0]["payload"] == orjson.loads(whole)
    await peer.expect_silence(0.3)


async def test_sender_is_the_lines_from_and_moo_files_go_to_the_moo_room(daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "moo:presence", "gamma-watch:narrative")
    append(daemon.log_dir / "presence.jsonl", line("someone", 1))
    append(daemon.log_dir / "gamma-watch-narrative.jsonl", line("gamma-watch", 2))
    got = await receive(peer, 2)
    by_channel = {(f["room"], f["channel"]): f for f in got}
    assert by_channel[("moo", "presence")]["sender"] == "someone"
    assert by_channel[("gamma-watch", "narrative")]["sender"] == "gamma-watch"


async def test_malformed_lines_are_published_raw_with_the_reason(daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    append(path, "not json\n" + '{"ts":"2026-02-12T10:00:00Z","from":"dreader"}\n' + "[1]\n"
           + "\n" + line("dreader", 5))
    got = await receive(peer, 5)
    reasons = [frame["metadata"].get("malformed", "") for frame in got]
    assert [frame["payload"].get("raw") for frame in got[:4]] == \
        ["not json", '{"ts":"2026-02-12T10:00:00Z","from":"dreader"}', "[1]", ""]
    assert "not valid JSON" in reasons[0]
    assert "breaks the message schema: type missing; content missing" in reasons[1]
    assert reasons[2] == "not a JSON object" and reasons[3] == "empty line"
    assert got[4]["payload"]["seq"] == 5 and "malformed" not in got[4]["metadata"]
    assert all(frame["sender"] == "dreader" for frame in got)
    daemon.wait_for_line("offset 0: not valid JSON")


async def test_a_line_nested_deeper_than_can_be_sent_never_stops_the_bridge(daemon,
                                                                            connect_peer):
    """orjson reads 1024 levels but writes 254: such a line used to end the bridge for good,
    silently, and again after every restart (its checkpoint is before it)."""
    peer = await subscriber(connect_peer, daemon, "*:narrative")
    deep = ('{"ts":"2026-02-12T10:00:00Z","from":"mallory","type":"narrative","content":'
            + '{"a":' * 300 + "1" + "}" * 300 + "}")
    append(daemon.log_dir / "mallory-narrative.jsonl", deep + "\n" + line("mallory", 2))
    append(daemon.log_dir / "dreader-narrative.jsonl", line("dreader", 3))
    got = {frame["payload"].get("seq", "raw"): frame for frame in await receive(peer, 3)}
    assert got["raw"]["payload"] == {"raw": deep}
    assert got["raw"]["metadata"]["malformed"] == \
        "JSON nests deeper than 64 levels (server.max_json_depth)"
    assert set(got) == {"raw", 2, 3}
    # Still serving after a restart: the line is behind its checkpoint now.
    assert await stop(daemon) == 0
    daemon.start()
    peer = await subscriber(connect_peer, daemon, "*:narrative")
    append(daemon.log_dir / "mallory-narrative.jsonl", line("mallory", 4))
    assert seqs(await receive(peer, 1)) == [4]
    await peer.expect_silence(0.3)


async def test_overlong_line_is_cut_and_the_rest_keeps_flowing(make_daemon, connect_peer):
    daemon = make_daemon({"narrative": {"max_line_bytes": 1024}})
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    huge = '{"content":"' + "x" * 300000 + '"}'
    append(path, line("dreader", 1) + huge + "\n" + lines("dreader", range(3, 6)))
    got = await receive(peer, 5)
    cut = got[1]
    assert cut["payload"] == {"raw": huge[:1024]}
    assert "line of 300014 bytes is longer than max_line_bytes (1024)" in \
        cut["metadata"]["malformed"]
    assert [got[0]["payload"]["seq"]] + seqs(got[2:]) == [1, 3, 4, 5]
    await peer.expect_silence(0.3)


async def test_sighup_applies_a_new_line_limit(make_daemon, connect_peer):
    daemon = make_daemon({"narrative": {"max_line_bytes": 4096}})
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    append(path, line("dreader", 1, padding="p" * 200))
    assert "malformed" not in (await receive(peer, 1))[0]["metadata"]
    text = daemon.config_path.read_text().replace("max_line_bytes = 4096",
                                                  "max_line_bytes = 100")
    daemon.config_path.write_text(text.replace("[narrative]",
                                               '[narrative]\nread_from = "beginning"'))
    mark = len(daemon.lines)
    daemon.signal(signal.SIGHUP)
    reloaded = daemon.wait_for_line("configuration reloaded", start=mark)
    assert "restart to apply narrative.read_from" in reloaded
    append(path, line("dreader", 2, padding="p" * 200) + line("dreader", 3))
    got = await receive(peer, 2)
    assert "longer than max_line_bytes (100)" in got[0]["metadata"]["malformed"]
    assert got[1]["payload"]["seq"] == 3


async def test_wildcards_follow_every_zgent(daemon, connect_peer):
    every_narrative = await subscriber(connect_peer, daemon, "*:narrative")
    all_of_alpha = await subscriber(connect_peer, daemon, "alpha:*")
    append(daemon.log_dir / "alpha-narrative.jsonl", line("alpha", 1))
    append(daemon.log_dir / "beta-narrative.jsonl", line("beta", 2))
    append(daemon.log_dir / "alpha-events.jsonl", line("alpha", 3))
    got = await receive(every_narrative, 2)
    assert sorted((f["room"], f["payload"]["seq"]) for f in got) == [("alpha", 1), ("beta", 2)]
    got = await receive(all_of_alpha, 2)
    assert sorted((f["channel"], f["payload"]["seq"]) for f in got) == \
        [("events", 3), ("narrative", 1)]
    await every_narrative.expect_silence(0.3)
    await all_of_alpha.expect_silence(0.3)


async def test_query_and_response_files_are_published(daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "dreader:*")
    append(daemon.log_dir / "dreader-queries.jsonl", orjson.dumps(
        {"id": "q-456", "method": "query", "params": {"symbol": "SPX"},
         "replyTo": "parseclipmate"}).decode() + "\n")
    request = (await receive(peer, 1))[0]
    assert (request["channel"], request["payload"]["id"]) == ("queries", "q-456")
    assert "malformed" not in request["metadata"]
    append(daemon.log_dir / "dreader-narrative.jsonl", orjson.dumps(
        {"ts": "2026-02-12T10:00:01Z", "from": "dreader", "type": "query-response",
         "queryId": "q-456", "content": {"volume": 125000}}).decode() + "\n")
    response = (await receive(peer, 1))[0]
    assert response["channel"] == "narrative" and response["payload"]["queryId"] == "q-456"


# -- where reading starts -----------------------------------------------------------------

@pytest.mark.parametrize("read_from, expected", [("end", [3, 4]), ("beginning", [1, 2, 3, 4])])
async def test_files_present_at_first_start(make_daemon, connect_peer, read_from, expected):
    daemon = make_daemon({"narrative": {"read_from": read_from}}, start=False)
    path = daemon.log_dir / "dreader-narrative.jsonl"
    append(path, lines("dreader", [1, 2]) + line("dreader", 3)[:15])  # 3 is being written
    daemon.start()
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    append(path, line("dreader", 3)[15:] + line("dreader", 4))
    if read_from == "end":
        assert seqs(await receive(peer, 2)) == expected
        await peer.expect_silence(0.3)
    else:  # 1 and 2 may be published before the subscriber joins: history has them all
        stored = await history(connect_peer, daemon, "dreader", "narrative", 4)
        assert seqs(stored) == expected


# -- rotation, truncation, deletion ---------------------------------------------------------

async def test_rename_and_create_rotation_reads_the_old_file_to_its_end_first(daemon,
                                                                            connect_peer):
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    writer = open(path, "a")
    writer.write(lines("dreader", range(1, 4)))
    writer.flush()
    assert seqs(await receive(peer, 3)) == [1, 2, 3]
    writer.write(lines("dreader", range(4, 7)))  # written just before logrotate renames
    writer.flush()
    os.rename(path, str(path) + ".1")
    append(path, lines("dreader", range(7, 10)))
    assert seqs(await receive(peer, 6)) == [4, 5, 6, 7, 8, 9]
    writer.write(lines("dreader", [10]))  # a late write through the old descriptor
    writer.close()
    assert seqs(await receive(peer, 1)) == [10]
    append(path, lines("dreader", [11]))
    assert seqs(await receive(peer, 1)) == [11]
    await peer.expect_silence(0.3)
    daemon.wait_for_line("reading the old file to its end first")


async def test_copytruncate(daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    append(path, lines("dreader", range(1, 6)))
    assert seqs(await receive(peer, 5)) == [1, 2, 3, 4, 5]
    shutil.copyfile(path, str(path) + ".1")  # what logrotate's copytruncate does
    with open(path, "r+") as handle:
        handle.truncate(0)
    append(path, lines("dreader", range(6, 8)))
    got = await receive(peer, 2)
    assert seqs(got) == [6, 7]
    assert got[0]["metadata"]["source"]["offset"] == 0
    assert got[0]["id"] == expected_id(path, 0, generation=1)
    await peer.expect_silence(0.5)


async def test_truncation_in_place_with_longer_content(daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    append(path, lines("dreader", [1]))
    assert seqs(await receive(peer, 1)) == [1]
    path.write_text(lines("dreader", range(2, 12)))  # O_TRUNC then more than before
    assert seqs(await receive(peer, 10)) == list(range(2, 12))
    await peer.expect_silence(0.3)


async def test_deletion_and_recreation(daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    append(path, lines("dreader", range(1, 3)))
    old = await receive(peer, 2)
    path.unlink()
    await peer.expect_silence(0.3)
    append(path, lines("dreader", range(3, 5)))
    new = await receive(peer, 2)
    assert seqs(new) == [3, 4]
    assert new[0]["metadata"]["source"]["offset"] == 0
    assert new[0]["id"] != old[0]["id"]  # another file: its lines are not copies
    await peer.expect_silence(0.3)


# -- restarts -------------------------------------------------------------------------------

async def test_restart_resumes_at_the_checkpoint_without_repeats(daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    append(path, lines("dreader", range(1, 4)))
    first = await receive(peer, 3)
    assert await stop(daemon) == 0
    append(path, lines("dreader", range(4, 7)) + line("dreader", 7)[:10])
    daemon.start()
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    append(path, line("dreader", 7)[10:])
    # Kept across the restart (the stream's store), and nothing twice.
    stored = await history(connect_peer, daemon, "dreader", "narrative", 7)
    assert seqs(stored) == [1, 2, 3, 4, 5, 6, 7]
    assert stored[3]["id"] == expected_id(path, 3 * len(line("dreader", 1)))
    assert stored[0]["id"] == first[0]["id"] == expected_id(path, 0)


async def test_checkpoints_of_files_deleted_while_stopped_expire(daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "*:narrative")
    for name in ("stays", "goes"):
        append(daemon.log_dir / f"{name}-narrative.jsonl", lines(name, [1]))
    await receive(peer, 2)
    assert await stop(daemon) == 0

    def names() -> list[str]:  # the Zgents' files (the MOO layer's broadcast log aside)
        return sorted(f["name"] for f in checkpointed(daemon) if f["name"] != "broadcast.jsonl")

    assert names() == ["goes-narrative.jsonl", "stays-narrative.jsonl"]
    (daemon.log_dir / "goes-narrative.jsonl").unlink()
    daemon.start()
    assert names() == ["stays-narrative.jsonl"]


async def test_rotation_while_stopped_reads_the_rest_then_the_new_file(daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    append(path, lines("dreader", range(1, 4)))
    assert seqs(await receive(peer, 3)) == [1, 2, 3]
    assert await stop(daemon) == 0
    append(path, lines("dreader", range(4, 6)))
    os.rename(path, str(path) + ".1")
    append(path, lines("dreader", range(6, 8)))
    daemon.start()
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    assert seqs(await history(connect_peer, daemon, "dreader", "narrative", 7)) == \
        [1, 2, 3, 4, 5, 6, 7]
    daemon.wait_for_line("was rotated while arqond was stopped")


async def test_copytruncate_while_stopped_takes_the_lost_lines_from_the_copy(daemon,
                                                                           connect_peer):
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    append(path, lines("dreader", range(1, 6)))
    assert seqs(await receive(peer, 5)) == [1, 2, 3, 4, 5]
    assert await stop(daemon) == 0
    append(path, lines("dreader", range(6, 8)))
    shutil.copyfile(path, str(path) + ".1")
    with open(path, "r+") as handle:
        handle.truncate(0)
    append(path, lines("dreader", [8]))
    daemon.start()
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    assert seqs(await history(connect_peer, daemon, "dreader", "narrative", 8)) == \
        [1, 2, 3, 4, 5, 6, 7, 8]


async def test_same_inode_with_new_content_is_a_new_file(daemon, connect_peer):
    """What inode reuse looks like: the checkpoint's inode, another first line, a size past
    the old offset. Resuming at the old offset would skip lines (Vector #23076)."""
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    append(path, lines("dreader", range(1, 3)))
    assert seqs(await receive(peer, 2)) == [1, 2]
    inode = os.stat(path).st_ino
    assert await stop(daemon) == 0
    with open(path, "r+") as handle:
        handle.truncate(0)
        handle.write(lines("other", range(10, 16)))
    assert os.stat(path).st_ino == inode
    daemon.start()
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    stored = await history(connect_peer, daemon, "dreader", "narrative", 8)
    assert seqs(stored) == [1, 2, *range(10, 16)]


async def test_corrupt_checkpoint_is_set_aside_and_lines_come_again_with_their_ids(
        daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    append(path, lines("dreader", range(1, 3)))
    before = await receive(peer, 2)
    assert await stop(daemon) == 0
    checkpoint = daemon.state_dir / "narrative-checkpoints.json"
    checkpoint.write_text('{"version": 1, "files": [{"name": ')  # as after a torn write
    append(path, lines("dreader", [3]))
    daemon.start()
    line_ = daemon.wait_for_line("checkpoint file unusable")
    assert "moved to" in line_
    aside = list(daemon.state_dir.glob("narrative-checkpoints.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text().startswith('{"version": 1, "files"')
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    stored = await history(connect_peer, daemon, "dreader", "narrative", 3)
    assert seqs(stored) == [1, 2, 3]
    assert [f["id"] for f in stored[:2]] == [f["id"] for f in before]
    offsets = {f["name"]: f["offset"] for f in checkpointed(daemon)}
    assert offsets[path.name] == path.stat().st_size


async def test_a_save_cut_short_falls_back_to_the_one_before(daemon, connect_peer):
    """A power loss in the middle of a save leaves its line torn: the document before it is
    used, quietly; the lines after that one are in the stream's store already, so they are
    not published again."""
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    append(path, lines("dreader", [1]))
    await receive(peer, 1)
    append(path, lines("dreader", [2]))
    second = await receive(peer, 1)
    assert await stop(daemon) == 0
    checkpoint = daemon.state_dir / "narrative-checkpoints.json"
    documents = checkpoint.read_bytes().splitlines(keepends=True)
    one_line = len(line("dreader", 1))
    older = [d for d in documents if b'"offset":%d}' % one_line in d]
    assert older, "a save after the first line was published"
    checkpoint.write_bytes(older[-1] + documents[-1][:25])   # the newest one, torn
    daemon.start()
    peer = await subscriber(connect_peer, daemon, "dreader:narrative")
    stored = await history(connect_peer, daemon, "dreader", "narrative", 2)
    assert seqs(stored) == [1, 2] and stored[1]["id"] == second[0]["id"]
    daemon.wait_for_line("1 line(s) up to offset")
    assert metrics_of(daemon)["arqonbus_narrative_lines_already_stored_total"] == 1
    assert not any("checkpoint file unusable" in text for text in daemon.lines)
    assert {f["name"]: f["offset"] for f in checkpointed(daemon)}[path.name] == 2 * one_line


async def test_kill_9_again_and_again_loses_no_line(make_daemon, connect_peer):
    """A steady stream into two files while arqond is SIGKILLed and restarted ten times:
    every line reaches the bus, and every copy of a line carries the same id."""
    daemon = make_daemon({"server": {"log_level": "info"}})
    paths = {name: daemon.log_dir / f"{name}-narrative.jsonl" for name in ("k1", "k2")}
    seen: dict[tuple[str, int], set[str]] = {}
    written = {name: 0 for name in paths}
    stop_writing = asyncio.Event()

    async def write() -> None:
        while not stop_writing.is_set():
            for name, path in paths.items():
                written[name] += 1
                append(path, line(name, written[name]))
            await asyncio.sleep(0.01)

    def note(frames: list[dict[str, Any]]) -> None:
        for frame in frames:
            seen.setdefault((frame["room"], frame["payload"]["seq"]), set()).add(frame["id"])

    async def listen(peer) -> None:
        while True:
            try:
                frame = await peer.recv(30)
            except Exception:
                return
            if frame["type"] == "event":
                note([frame])

    writer = asyncio.create_task(write())
    for cycle in range(10):
        peer = await subscriber(connect_peer, daemon, "*:narrative")
        reader = await connect_peer(daemon.ws_url)
        for name in paths:  # what was published before this client joined
            response = await reader.command("history", {"room": name, "channel": "narrative",
                                                        "limit": 500})
            if response["status"] == "success":
                note([{**entry, "id": entry["message_id"]}
                      for entry in response["payload"]["data"]["history"]])
        listener = asyncio.create_task(listen(peer))
        await asyncio.sleep(0.3 + 0.05 * cycle)
        daemon.kill()
        await listener
        daemon.start()
    stop_writing.set()
    await writer
    peer = await subscriber(connect_peer, daemon, "*:narrative")
    for name in paths:
        # Possibly none: the last process may have found every line checkpointed already.
        note(await history(connect_peer, daemon, name, "narrative", 0))
    listener = asyncio.create_task(listen(peer))
    deadline = asyncio.get_running_loop().time() + 20
    while any((name, written[name]) not in seen for name in paths) and \
            asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    listener.cancel()
    for name in paths:
        missing = [seq for seq in range(1, written[name] + 1) if (name, seq) not in seen]
        assert missing == [], f"{name}: lost {missing}"
    assert all(len(ids) == 1 for ids in seen.values()), \
        {key: ids for key, ids in seen.items() if len(ids) > 1}
    assert sum(written.values()) > 500


# -- what is not followed -------------------------------------------------------------------

async def test_symlinks_fifos_dirs_and_unreadable_files_are_refused_once(make_daemon,
                                                                        connect_peer,
                                                                        tmp_path):
    # Without CAP_DAC_OVERRIDE even root gets EACCES on a mode 000 file.
    daemon = make_daemon({"narrative": {"sweep_interval": 0.2}},
                         wrapper=["setpriv", "--bounding-set",
                                  "-dac_override,-dac_read_search"])
    peer = await subscriber(connect_peer, daemon, "*:*")
    outside = tmp_path / "outside.jsonl"
    outside.write_text(lines("outside", [1]))
    os.symlink(outside, daemon.log_dir / "evil-narrative.jsonl")
    os.mkfifo(daemon.log_dir / "pipe-narrative.jsonl")
    (daemon.log_dir / "dir-narrative.jsonl").mkdir()
    secret = daemon.log_dir / "secret-narrative.jsonl"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0)  # unreadable from its creation on
    os.write(fd, lines("secret", [1]).encode())
    os.close(fd)
    append(daemon.log_dir / "Bad Name-narrative.jsonl", lines("bad", [1]))
    append(daemon.log_dir / "good-narrative.jsonl", lines("good", [1]))
    got = await receive(peer, 1)
    assert got[0]["room"] == "good"
    await asyncio.sleep(1.0)  # five sweeps: still one log line each
    append(daemon.log_dir / "good-narrative.jsonl", lines("good", [2]))
    assert seqs(await receive(peer, 1)) == [2]
    await peer.expect_silence(0.3)
    for name, reason in (("evil", "a symbolic link"), ("pipe", "a FIFO, not a regular file"),
                         ("dir", "a directory, not a regular file"),
                         ("Bad Name", "'Bad Name' is not a valid Zgent name"),
                         ("secret", "cannot be read: Permission denied")):
        found = [l for l in daemon.lines if f"{name}-narrative.jsonl: {reason}" in l]
        assert len(found) == 1, (name, found, daemon.lines[-20:])
    secret.chmod(0o644)  # fixed by the admin: picked up at the next sweep
    assert seqs(await receive(peer, 1)) == [1]


async def test_own_broadcast_link_is_followed(daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "moo:broadcast")
    target = daemon.moo_dir / "broadcast.jsonl"
    # The MOO layer made both: the log in MOO_DIR, the link in LOG_DIR.
    assert os.readlink(daemon.log_dir / "broadcast.jsonl") == str(target)
    append(target, line("orchestrator", 1))
    got = await receive(peer, 1)
    assert got[0]["payload"]["seq"] == 1 and got[0]["sender"] == "orchestrator"
    assert got[0]["metadata"]["source"]["path"] == str(daemon.log_dir / "broadcast.jsonl")
    append(target, line("orchestrator", 2))
    assert seqs(await receive(peer, 1)) == [2]


# -- load -----------------------------------------------------------------------------------

async def test_twenty_writers_on_twenty_files_at_once(daemon, connect_peer):
    peer = await subscriber(connect_peer, daemon, "*:narrative")
    count = 300
    writers = []
    for index in range(20):
        path = daemon.log_dir / f"w{index}-narrative.jsonl"
        script = (f'for i in $(seq 1 {count}); do printf \'{{"ts":"2026-02-12T10:00:00Z",'
                  f'"from":"w{index}","type":"narrative","content":"c","seq":%d}}\\n\' $i '
                  f'>> {path}; done')
        writers.append(await asyncio.create_subprocess_exec("sh", "-c", script))
    for writer in writers:
        assert await writer.wait() == 0
    got = await receive(peer, 20 * count, timeout=30)
    per_file: dict[str, list[int]] = {}
    for frame in got:
        per_file.setdefault(frame["room"], []).append(frame["payload"]["seq"])
    assert per_file == {f"w{i}": list(range(1, count + 1)) for i in range(20)}
    await peer.expect_silence(0.5)


async def test_burst_of_100000_lines_while_other_clients_are_served(make_daemon,
                                                                   connect_peer):
    daemon = make_daemon({"server": {"client_buffer_bytes": 1 << 30, "log_level": "info"}})
    peer = await subscriber(connect_peer, daemon, "burst:narrative")
    total = 100_000
    template = '{"ts":"2026-02-12T10:00:00Z","from":"burst","type":"narrative",' \
               '"content":"c","seq":%d}\n'
    (daemon.log_dir / "burst-narrative.jsonl").write_text(
        "".join(template % seq for seq in range(1, total + 1)))
    expected = 1
    pong_after = None
    while expected <= total:
        frame = await peer.recv(30)
        if frame["type"] == "event":
            assert frame["payload"]["seq"] == expected
            expected += 1
            if expected == 1001:
                await peer.send({"type": "command", "command": "ping"})
        elif frame["type"] == "response":
            assert (frame["command"], frame["status"]) == ("ping", "success"), frame
            pong_after = expected - 1
        else:
            assert frame["type"] == "command_response", frame
    # The tailer yields between chunks: the ping was answered amid the backlog, not after it.
    assert pong_after is not None and pong_after < total
    await peer.expect_silence(0.5)


def test_unusable_log_dir_stops_the_start_with_a_clear_error(make_daemon, tmp_path):
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("")
    daemon = make_daemon({"moo": {"log_dir": str(not_a_dir)}}, start=False)
    daemon.start(wait_ready=False)
    assert daemon.proc.wait(15) == 1
    daemon.wait_for_line(f"cannot use {not_a_dir}: File exists")
    assert not any("ready" in line_ for line_ in daemon.lines)


# -- the bridge and the MOO layer, wired in the daemon ----------------------------------------

async def test_a_new_narrative_file_registers_its_zgent(daemon, connect_peer):
    path = daemon.log_dir / "gamma-watch-narrative.jsonl"
    peer = await subscriber(connect_peer, daemon, "gamma-watch:narrative")
    append(path, line("gamma-watch", 1))
    assert seqs(await receive(peer, 1)) == [1]
    registry = orjson.loads((daemon.moo_dir / "registry.json").read_bytes())
    entry = registry["zgents"]["gamma-watch"]  # split at the last "-": Zgent gamma-watch
    assert entry["log"] == str(path) and entry["status"] == "active"
    assert entry["inbox"] == str(daemon.moo_dir / "gamma-watch-inbox")
    assert os.path.exists(entry["inbox"]) and os.path.exists(entry["socket"])


async def test_file_based_query_reaches_the_zgent_and_its_answer_the_requester(
        make_daemon, connect_peer, zgent_socket):
    daemon = make_daemon({"zgents": {"dreader": {}, "parseclipmate": {}}})
    asker = await zgent_socket(daemon.moo_dir / "parseclipmate.sock")
    answerer = await zgent_socket(daemon.moo_dir / "dreader.sock")
    query = {"ts": "2026-02-12T14:30:00Z", "from": "parseclipmate", "type": "query",
             "content": {"type": "volume", "symbol": "SPX"}, "queryId": "q-789"}
    append(daemon.log_dir / "dreader-queries.jsonl", orjson.dumps(query).decode() + "\n")
    got = await answerer.call("arqon.recv", {"wait": 10}, timeout=15)
    assert got["result"]["queryId"] == "q-789" and got["result"]["from"] == "parseclipmate"
    reply = {"ts": "2026-02-12T14:30:01Z", "from": "dreader", "type": "query-response",
             "content": {"volume": 125000}, "queryId": "q-789"}
    append(daemon.log_dir / "dreader-narrative.jsonl", orjson.dumps(reply).decode() + "\n")
    answer = await asker.call("arqon.recv", {"wait": 10}, timeout=15)
    assert answer["result"]["queryId"] == "q-789"
    assert answer["result"]["content"] == {"volume": 125000}
    # Nothing else lands in either mailbox: one query, one answer.
    assert (await answerer.call("arqon.recv"))["result"] is None
    assert (await asker.call("arqon.recv"))["result"] is None
