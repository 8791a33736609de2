"""The bad-input corpus against the real daemon's telemetry port: one connection takes every
case in turn, and after each a marker event it sends must reach a sentinel watcher."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from tests.conftest import metrics_of, scaled
from tests.corpus import wsraw
from tests.corpus.oracle import syntax_error, utf8
from tests.corpus.telemetry import Broadcast, Pong, Refused, telemetry_corpus

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_DEPTH = 64
CORPUS = telemetry_corpus(MAX_DEPTH)


class Watcher:
    """A telemetry client that skips arqond's own events (channel_created when the first
    event reaches the bus, ...): the cases are about what answers the frames sent."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.dirty = False
        self.markers = 0

    async def recv(self) -> dict[str, Any]:
        while True:
            frame = orjson.loads(await asyncio.wait_for(self.connection.recv(), scaled(5)))
            if frame.get("source") != "arqonbus":
                return frame


@pytest.fixture(scope="module")
def corpus_daemon(shared_daemon):
    return shared_daemon({"server": {"max_json_depth": MAX_DEPTH}})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def watchers(corpus_daemon):
    opened = []
    for _ in range(2):
        watcher = Watcher(await connect(corpus_daemon.telemetry_url, max_size=None))
        assert (await watcher.recv())["event_type"] == "telemetry_connected"
        opened.append(watcher)
    yield opened
    for watcher in opened:
        await watcher.connection.close()


async def send_marker(sender: Watcher) -> int:
    sender.markers += 1
    await sender.connection.send(orjson.dumps({"eventType": "corpus_marker",
                                               "payload": {"marker": sender.markers}}).decode())
    return sender.markers


@contextlib.asynccontextmanager
async def one_case(sender: Watcher, sentinel: Watcher):
    """After a case that failed half-way, a marker first, everything before it dropped."""
    if sender.dirty:
        marker = await send_marker(sender)
        while (await sentinel.recv())["payload"] != {"marker": marker}:
            pass
        sender.dirty = False
    sender.dirty = True
    yield
    marker = await send_marker(sender)
    got = await sentinel.recv()
    assert (got["event_type"], got["payload"]) == ("corpus_marker", {"marker": marker}), got
    sender.dirty = False


@pytest.mark.parametrize("case", [case for case in CORPUS if utf8(case.data)],
                         ids=lambda case: case.name)
async def test_each_bad_event_gets_its_exact_answer_and_the_sentinel_keeps_receiving(
        case, watchers):
    sender, sentinel = watchers
    async with one_case(sender, sentinel):
        await sender.connection.send(case.data.decode())
        expect = case.expect
        if isinstance(expect, Refused):
            errors = list(expect.errors) if expect.errors is not None else \
                [f"frame is not valid JSON: {syntax_error(case.data.decode())}"]
            error = await sender.recv()
            assert (error["type"], error["event_type"], error["error_code"]) == (
                "error", "error", "VALIDATION_ERROR")
            assert (error["errors"], error["error"]) == (errors, "; ".join(errors))
        elif isinstance(expect, Pong):
            assert (await sender.recv())["type"] == "pong"
        else:
            assert isinstance(expect, Broadcast)
            got = await sentinel.recv()
            assert (got["event_type"], got["eventType"], got["payload"]) == (
                expect.event_type, expect.event_type, expect.payload)
            assert got["source"].startswith("arq_client_")


async def test_binary_frames_and_invalid_utf8(corpus_daemon, watchers):
    sender, sentinel = watchers
    async with one_case(sender, sentinel):
        await sender.connection.send(b'{"eventType":"corpus","payload":{}}')
        error = await sender.recv()
        assert error["errors"] == ["binary frames are not supported: send JSON in text frames"]
    host, _, port = corpus_daemon.listeners["telemetry"].rpartition(":")
    for case in (case for case in CORPUS if not utf8(case.data)):
        client = wsraw.RawClient((host, int(port)))
        try:
            client.read_frame()  # telemetry_connected
            client.send(wsraw.frame(wsraw.TEXT, case.data))
            with pytest.raises(UnicodeDecodeError) as decoding:
                case.data.decode()
            assert client.close_received() == (
                1007, f"{decoding.value.reason} at position {decoding.value.start}")
        finally:
            client.close()
    async with one_case(sender, sentinel):
        pass


async def test_the_telemetry_corpus_was_counted_and_left_no_internal_error(corpus_daemon,
                                                                            watchers):
    values = metrics_of(corpus_daemon)
    refused = sum(1 for case in CORPUS if utf8(case.data) and isinstance(case.expect, Refused))
    assert values["arqonbus_telemetry_rejected_total"] == refused + 1  # and the binary frame
    assert values['arqonbus_internal_errors_total{component="telemetry"}'] == 0
