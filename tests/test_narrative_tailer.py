"""The tailer in-process on a real Bus, real files and real inotify: its hooks for the MOO layer
(played here by stand-in callables) and its stat sweep when inotify says nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from arqond import config as configuration
from arqond.core.bus import Bus
from arqond.moo.tailer import NarrativeTailer
from tests.conftest import write_config

pytestmark = pytest.mark.timeout(30)


class Recorder:
    """Stand-ins for the MOO layer's callables, and every envelope the bus routes."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []
        self.queries: list[tuple[str, dict[str, Any]]] = []
        self.replies: list[tuple[str, dict[str, Any]]] = []
        self.published: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def on_zgent_seen(self, name: str, new_file: bool) -> None:
        self.seen.append((name, new_file))

    def on_query(self, name: str, obj: dict[str, Any]) -> None:
        self.queries.append((name, obj))

    def on_reply(self, requester: str, obj: dict[str, Any]) -> None:
        self.replies.append((requester, obj))

    def observe(self, env: dict[str, Any], _client: Any) -> None:
        self.published.append(env)
        self.changed.set()

    async def wait_published(self, count: int) -> list[dict[str, Any]]:
        while len(self.published) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)
        return self.published


async def started(tmp_path: Path, recorder: Recorder, **narrative: Any) -> NarrativeTailer:
    for name in ("log", "moo", "state"):
        (tmp_path / name).mkdir(exist_ok=True)
    path = write_config(tmp_path / "arqond.toml", {
        "server": {"state_dir": str(tmp_path / "state")},
        "moo": {"dir": str(tmp_path / "moo"), "log_dir": str(tmp_path / "log")},
        "narrative": narrative})
    bus = Bus()
    bus.plug(on_message=recorder.observe)
    tailer = NarrativeTailer(bus, configuration.load(str(path), environ={}),
                             on_zgent_seen=recorder.on_zgent_seen, on_query=recorder.on_query,
                             on_reply=recorder.on_reply)
    await tailer.start()
    return tailer


def append(path: Path, obj: dict[str, Any]) -> None:
    with open(path, "ab") as handle:
        handle.write(orjson.dumps(obj) + b"\n")


def message(sender: str, **fields: Any) -> dict[str, Any]:
    return {"ts": "2026-02-12T10:00:00Z", "from": sender, "type": "narrative",
            "content": "x", **fields}


async def test_zgent_seen_on_new_narrative_file_and_each_batch(tmp_path):
    recorder = Recorder()
    tailer = await started(tmp_path, recorder)
    try:
        log = tmp_path / "log"
        append(log / "dreader-narrative.jsonl", message("dreader"))
        await recorder.wait_published(1)
        append(log / "dreader-events.jsonl", message("dreader"))  # not a narrative: no hook
        await recorder.wait_published(2)
        append(log / "dreader-narrative.jsonl", message("dreader"))
        await recorder.wait_published(3)
        assert recorder.seen == [("dreader", True), ("dreader", False), ("dreader", False)]
    finally:
        await tailer.stop()


async def test_file_queries_reach_the_zgent_and_responses_go_back(tmp_path):
    recorder = Recorder()
    tailer = await started(tmp_path, recorder)
    try:
        log = tmp_path / "log"
        request = {"id": "q-456", "method": "query", "params": {"symbol": "SPX"},
                   "replyTo": "parseclipmate"}
        append(log / "dreader-queries.jsonl", request)
        asked_by_from = message("gamma", type="query", queryId="q-7")
        append(log / "dreader-queries.jsonl", asked_by_from)
        append(log / "dreader-queries.jsonl", {"garbage": True})  # malformed: not routed
        await recorder.wait_published(3)
        assert recorder.queries == [("dreader", request), ("dreader", asked_by_from)]
        unrelated = message("dreader", type="query-response", queryId="q-999")
        answer = message("dreader", type="query-response", queryId="q-456",
                         content={"volume": 125000})
        answer_7 = message("dreader", type="query-response", queryId="q-7")
        for obj in (unrelated, answer, answer, answer_7):
            append(log / "dreader-narrative.jsonl", obj)
        await recorder.wait_published(7)
        # Each open query is answered once; the repeated answer and the unknown id go nowhere.
        assert recorder.replies == [("parseclipmate", answer), ("gamma", answer_7)]
        assert [env["channel"] for env in recorder.published] == ["queries"] * 3 + \
            ["narrative"] * 4
    finally:
        await tailer.stop()


async def test_a_failing_hook_is_logged_and_lines_keep_flowing(tmp_path, caplog):
    recorder = Recorder()

    def broken(name: str, new_file: bool) -> None:
        raise RuntimeError("registry on fire")

    recorder.on_zgent_seen = broken  # type: ignore[method-assign]
    tailer = await started(tmp_path, recorder)
    try:
        append(tmp_path / "log" / "dreader-narrative.jsonl", message("dreader", n=1))
        append(tmp_path / "log" / "dreader-narrative.jsonl", message("dreader", n=2))
        published = await recorder.wait_published(2)
        assert [env["payload"]["n"] for env in published] == [1, 2]
        assert tailer.hook_errors >= 2
        assert "registry on fire" in caplog.text
    finally:
        await tailer.stop()


async def test_the_sweep_publishes_what_inotify_did_not_report(tmp_path):
    recorder = Recorder()
    tailer = await started(tmp_path, recorder, sweep_interval=0.1)
    try:
        assert tailer.inotify is not None
        asyncio.get_running_loop().remove_reader(tailer.inotify.fileno())  # events now unread
        append(tmp_path / "log" / "quiet-narrative.jsonl", message("quiet", n=1))
        append(tmp_path / "log" / "quiet-narrative.jsonl", message("quiet", n=2))
        published = await recorder.wait_published(2)
        assert [env["payload"]["n"] for env in published] == [1, 2]
    finally:
        await tailer.stop()


async def wait_until(condition, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never: {what}")


async def test_a_rotated_file_is_closed_rotate_wait_after_it_was_read_to_its_end(tmp_path):
    recorder = Recorder()
    tailer = await started(tmp_path, recorder, rotate_wait=0.0, sweep_interval=0.1)
    try:
        path = tmp_path / "log" / "dreader-narrative.jsonl"
        append(path, message("dreader", n=1))
        await recorder.wait_published(1)
        path.rename(tmp_path / "log" / "dreader-narrative.jsonl.1")
        append(path, message("dreader", n=2))
        await recorder.wait_published(2)
        await wait_until(lambda: tailer.files == 1, "the rotated file closed")
        assert len(tailer.fds) == 1
    finally:
        await tailer.stop()


async def test_max_files_refuses_the_next_file_with_one_log_line(tmp_path, caplog):
    recorder = Recorder()
    tailer = await started(tmp_path, recorder, max_files=2)
    try:
        log = tmp_path / "log"
        for name in ("a", "b", "c"):
            append(log / f"{name}-narrative.jsonl", message(name))
        published = await recorder.wait_published(2)
        tailer.sweep()
        tailer.sweep()
        assert sorted(env["room"] for env in published) == ["a", "b"]
        assert caplog.text.count(f"{log}/c-narrative.jsonl: max_files (2) files are followed "
                                 "already; not followed") == 1
        assert tailer.files == 2 and tailer.follower.files_refused == 1
        assert ("arqonbus_narrative_files_refused_total", 1) in \
            [(sample.name, sample.value) for sample in tailer.samples()]
    finally:
        await tailer.stop()


async def test_a_step_failing_inside_arqond_holds_only_its_file_until_the_next_sweep(
        tmp_path, caplog):
    recorder = Recorder()
    tailer = await started(tmp_path, recorder, sweep_interval=3600.0)
    try:
        log = tmp_path / "log"
        sized = tailer.follower.sized
        failures = []

        def broken(file, size):
            if file.name == "bad-narrative.jsonl":
                failures.append(size)
                raise RuntimeError("a bug in the follower")
            return sized(file, size)

        tailer.follower.sized = broken  # type: ignore[method-assign]
        append(log / "bad-narrative.jsonl", message("bad", n=1))
        append(log / "good-narrative.jsonl", message("good", n=1))
        await recorder.wait_published(1)
        append(log / "bad-narrative.jsonl", message("bad", n=2))  # an event: still held
        append(log / "good-narrative.jsonl", message("good", n=2))
        published = await recorder.wait_published(2)
        assert [env["room"] for env in published] == ["good", "good"]
        assert len(failures) == 1 and tailer.internal_errors == 1
        assert f"{log}/bad-narrative.jsonl offset 0: reading failed inside arqond; the file " \
            "waits for the next sweep" in caplog.text and "a bug in the follower" in caplog.text
        tailer.follower.sized = sized  # type: ignore[method-assign]
        tailer.sweep()
        published = await recorder.wait_published(4)
        assert [env["payload"]["n"] for env in published if env["room"] == "bad"] == [1, 2]
        assert tailer.failed is None
    finally:
        await tailer.stop()


async def test_a_line_that_fails_to_publish_goes_out_raw_and_the_next_one_whole(tmp_path,
                                                                              caplog):
    recorder = Recorder()
    tailer = await started(tmp_path, recorder)
    publish = tailer.bus.publish

    def refusing(env, *args, **kwargs):
        if env["payload"].get("boom"):
            raise ValueError("cannot route this")
        return publish(env, *args, **kwargs)

    tailer.bus.publish = refusing  # type: ignore[method-assign]
    try:
        path = tmp_path / "log" / "dreader-narrative.jsonl"
        append(path, message("dreader", boom=True))
        append(path, message("dreader", n=2))
        raw, whole = await recorder.wait_published(2)
        assert raw["payload"] == {"raw": orjson.dumps(message("dreader", boom=True)).decode()}
        assert raw["metadata"]["malformed"] == \
            "arqond could not publish it (ValueError: cannot route this)"
        assert whole["payload"]["n"] == 2 and tailer.internal_errors == 1
        assert f"{path} offset 0: publishing failed; published as raw instead" in caplog.text
    finally:
        await tailer.stop()


async def test_a_task_that_ends_is_named_for_health(tmp_path, caplog):
    recorder = Recorder()
    tailer = await started(tmp_path, recorder)
    try:
        assert tailer.failed is None

        def broken():
            raise RuntimeError("the queue itself is broken")

        tailer.follower.next_ready = broken  # type: ignore[method-assign]
        tailer.wake.set()
        await wait_until(lambda: tailer.failed is not None, "the pump ended")
        assert tailer.failed == \
            "narrative pump ended: RuntimeError('the queue itself is broken')"
        assert "the narrative bridge stopped working: narrative pump ended" in caplog.text
    finally:
        await tailer.stop()


# -- what users put in the log dir ---------------------------------------------------------

SWAPS = {
    # A FIFO with no writer: an open without O_NONBLOCK would hang the whole loop.
    "fifo": (os.mkfifo, "a FIFO, not a regular file"),
    # A file this user may not read: an open that followed the link would read it.
    "symlink": (lambda path: os.symlink("/etc/shadow", path), "a symbolic link (only "
                "broadcast.jsonl pointing to"),
    "directory": (os.mkdir, "a directory, not a regular file"),
}


@pytest.mark.parametrize("swap", sorted(SWAPS))
async def test_a_name_swapped_between_look_and_open_is_never_read_and_never_blocks(
        tmp_path, caplog, swap):
    recorder = Recorder()
    tailer = await started(tmp_path, recorder, sweep_interval=3600.0)
    make, reason = SWAPS[swap]
    victim = tmp_path / "log" / "swap-narrative.jsonl"
    look = tailer._look

    def look_then_swap(name: str):
        found = look(name)
        if name == victim.name and victim.is_file() and not victim.is_symlink():
            victim.unlink()   # lstat saw a regular file; the open will find this instead
            make(str(victim))
        return found

    tailer._look = look_then_swap  # type: ignore[method-assign]
    try:
        append(victim, message("swap", n=1))
        append(tmp_path / "log" / "good-narrative.jsonl", message("good", n=1))
        published = await recorder.wait_published(1)
        tailer.sweep()
        append(tmp_path / "log" / "good-narrative.jsonl", message("good", n=2))
        published = await recorder.wait_published(2)
        assert [(env["room"], env["payload"]["n"]) for env in published] == \
            [("good", 1), ("good", 2)]
        assert caplog.text.count(f"{victim}: {reason}") == 1
        assert [file.name for file in tailer.follower.followed()] == ["good-narrative.jsonl"]
        assert len(tailer.fds) == 1 and tailer.internal_errors == 0
    finally:
        await tailer.stop()


async def test_a_huge_file_is_read_in_turns_and_never_holds_up_the_others(tmp_path):
    recorder = Recorder()
    tailer = await started(tmp_path, recorder, max_line_bytes=1024)
    size = 1 << 30   # a GiB of holes, without a single newline
    huge = tmp_path / "log" / "huge-narrative.jsonl"
    try:
        with open(huge, "wb") as handle:
            handle.truncate(size)
        append(tmp_path / "log" / "good-narrative.jsonl", message("good", n=1))
        [env] = await recorder.wait_published(1)
        assert (env["room"], env["payload"]["n"]) == ("good", 1)
        # Published while the huge file is still being read a chunk at a time, holding no
        # more than a line's bound of it.
        [followed] = [file for file in tailer.follower.followed() if file.name == huge.name]
        assert 0 < followed.framer.read_position < size
        assert len(followed.framer.pending) == 1024
    finally:
        await tailer.stop()
