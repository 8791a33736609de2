"""The tailer in-process on a real Bus, real files and real inotify: its hooks for the MOO layer
(played here by stand-in callables) and its stat sweep when inotify says nothing."""

from __future__ import annotations

import asyncio
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
