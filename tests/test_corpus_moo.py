"""The bad-input corpus against the real daemon's MOO surfaces, driven from outside as a user
would: a Zgent socket (one JSON-RPC reply per line, or none), the Zgent's inbox FIFO and its
narrative file (every line becomes an envelope, nothing is dropped silently), and file names in
the log dir. After each case a marker goes the same way and a sentinel WebSocket subscriber
must receive it."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from tests.conftest import ZgentSocket, metrics_of, scaled
from tests.corpus.moo import (FILE_NAMES, JSON_SYNTAX, MAX_LINE,
                              ZGENT, good_line, inbox_cases, narrative_cases, socket_cases)
from tests.corpus.oracle import syntax_error

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_DEPTH = 64
CONFIG = {"zgents": {ZGENT: {}}, "server": {"max_json_depth": MAX_DEPTH},
          "moo": {"max_line_bytes": MAX_LINE}, "narrative": {"max_line_bytes": MAX_LINE}}


@pytest.fixture(scope="module")


def corpus_daemon(shared_daemon):
    return shared_daemon(CONFIG)


class Sentinel:
    def __init__(self, connection) -> None:
        self.connection = connection

    async def recv(self) -> dict[str, Any]:
        return orjson.loads(await asyncio.wait_for(self.connection.recv(), scaled(5)))

    async def until(self, predicate) -> dict[str, Any]:
        """The next frame ``predicate`` accepts; the ones before it belong to a case that
        failed half-way."""
        while not predicate(frame := await self.recv()):
            pass
        return frame

    async def before(self, is_marker) -> list[dict[str, Any]]:
        """Every frame up to the marker (which is read too), so that a case that fails has
        consumed what it caused and the next one starts clean."""
        frames = []
        while not is_marker(frame := await self.recv()):
            frames.append(frame)
        return frames


@pytest_asyncio.fixture(scope="module", loop_scope="module")


async def sentinel(corpus_daemon):
    connection = await connect(corpus_daemon.ws_url, max_size=None)
    await connection.recv()
    for room, channel in ((ZGENT, "inbox"), (ZGENT, "narrative"), ("corpus", "sentinel"),
                          (ZGENT, "events"), ("moo", "presence"), ("a-b", "c")):
        await connection.send(orjson.dumps({"type": "command", "command": "join_channel",
                                            "args": {"room": room, "channel": channel}}).decode())
        assert orjson.loads(await connection.recv())["status"] == "success"
        await connection.recv()
    yield Sentinel(connection)
    await connection.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")


async def zgent(corpus_daemon):
    sock = await ZgentSocket.open(corpus_daemon.moo_dir / f"{ZGENT}.sock")
    yield sock
    await sock.close()

markers = iter(range(1, 1 << 30))


# -- the Zgent socket ---------------------------------------------------------------------


async def socket_marker(zgent: ZgentSocket, sentinel: Sentinel) -> None:
    """A bus envelope on the same socket reaches the sentinel, and a ping is answered."""
    marker = next(markers)
    await zgent.send({"id": f"m{marker}", "type": "message", "room": "corpus",
                      "channel": "sentinel", "payload": {"marker": marker}})
    while (await zgent.recv()).get("id") != f"m{marker}":
        pass  # a case that failed half-way left a reply
    await sentinel.until(lambda frame: frame["payload"] == {"marker": marker})
    assert (await zgent.call("arqon.ping", request_id=f"p{marker}"))["result"]["pong"] is True


@pytest.mark.parametrize("case", list(socket_cases(MAX_DEPTH)), ids=lambda case: case.name)


async def test_each_bad_socket_line_gets_its_exact_json_rpc_answer(case, zgent, sentinel):
    await zgent.send(case.line + b"\n")
    expect = case.expect
    if expect.silent:
        await zgent.expect_silence(scaled(0.2))
    else:
        reply = await zgent.recv()
        assert (reply["jsonrpc"], reply["id"]) == ("2.0", expect.id)
        if expect.code is None:
            assert reply["result"]["pong"] is True
        else:
            message = expect.message if expect.message is not None else \
                f"parse error: not valid JSON: {syntax_error(case.line)}"
            assert reply["error"] == {"code": expect.code, "message": message}
    await socket_marker(zgent, sentinel)


async def test_a_socket_line_cut_by_end_of_stream_and_bus_frames_on_the_socket(
        corpus_daemon, zgent, sentinel):
    """A bus envelope on a Zgent socket is answered as on the WebSocket (an error frame),
    and a last line without its newline is whole."""
    await zgent.send(b'{"type":"message","room":"corpus","channel":"sentinel","payload":""}\n')
    error = await zgent.recv()
    assert (error["type"], error["error_code"], error["error"]) == (
        "error", "VALIDATION_ERROR", "payload is required for a message")
    other = await ZgentSocket.open(corpus_daemon.moo_dir / f"{ZGENT}.sock")
    other.writer.write(b'{"id":"last","method":"arqon.ping"}')
    other.writer.write_eof()
    assert (await other.recv())["result"]["pong"] is True
    await other.close()
    await socket_marker(zgent, sentinel)


# -- the inbox FIFO --------------------------------------------------------------------------


def write_fifo(daemon, data: bytes) -> None:
    fd = os.open(daemon.moo_dir / f"{ZGENT}-inbox", os.O_WRONLY)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def is_marker(marker: int):
    return lambda frame: frame["payload"] == {"marker": marker}


@pytest.mark.parametrize("case", list(inbox_cases(MAX_DEPTH)), ids=lambda case: case.name)
async def test_each_inbox_line_becomes_exactly_its_message(case, corpus_daemon, sentinel):
    marker = next(markers)
    write_fifo(corpus_daemon, case.line + b"\n" + orjson.dumps({"marker": marker}) + b"\n")
    frames = await sentinel.before(is_marker(marker))
    if case.payload is None:
        assert frames == []
        return
    assert [(f["type"], f["room"], f["channel"], f["payload"]) for f in frames] == [
        ("message", ZGENT, "inbox", case.payload)]


async def test_an_inbox_line_that_is_no_json_object_says_why_in_metadata_malformed(
        corpus_daemon, sentinel):
    marker = next(markers)
    write_fifo(corpus_daemon, b"plain words\n" + orjson.dumps({"marker": marker}) + b"\n")
    frames = await sentinel.before(is_marker(marker))
    assert frames[0]["payload"] == {"raw": "plain words"}
    assert frames[0]["metadata"]["malformed"] == ("not valid JSON: unexpected character, "
                                                  "expected a JSON value: line 1 column 1 "
                                                  "(char 0)")


async def test_an_inbox_line_too_long_is_refused_logged_and_counted(corpus_daemon, sentinel):
    before = metrics_of(corpus_daemon)["arqonbus_moo_inbox_refused_total"]
    mark = len(corpus_daemon.lines)
    marker = next(markers)
    write_fifo(corpus_daemon, b"q" * (MAX_LINE + 1) + b"\n" + orjson.dumps({"marker": marker}) +
               b"\n")
    assert await sentinel.before(is_marker(marker)) == []
    corpus_daemon.wait_for_line(f"{ZGENT}-inbox: {MAX_LINE + 1} byte(s) refused: line longer "
                                f"than {MAX_LINE} bytes", start=mark)
    assert metrics_of(corpus_daemon)["arqonbus_moo_inbox_refused_total"] == before + 1


# -- the narrative file and the log dir's names ---------------------------------------------


def append(daemon, name: str, data: bytes) -> str:
    path = daemon.log_dir / name
    with open(path, "ab") as log:
        log.write(data)
    return str(path)


def marker_line(marker: int) -> bytes:
    return orjson.dumps(good_line(**{"from": ZGENT, "type": "marker", "content": str(marker)}))


def is_marker_line(marker: int):
    return lambda frame: frame["payload"].get("content") == str(marker) and \
        frame["payload"].get("type") == "marker"


@pytest.mark.parametrize("case", list(narrative_cases(MAX_DEPTH)), ids=lambda case: case.name)


async def test_each_narrative_line_becomes_exactly_its_event(case, corpus_daemon, sentinel):
    marker = next(markers)
    path = append(corpus_daemon, f"{ZGENT}-narrative.jsonl",
                  case.line + b"\n" + marker_line(marker) + b"\n")
    frames = await sentinel.before(is_marker_line(marker))
    assert len(frames) == 1, frames
    got = frames[0]
    assert (got["type"], got["room"], got["channel"], got["payload"]) == (
        "event", ZGENT, "narrative", case.payload)
    assert got["metadata"]["source"]["path"] == path
    malformed = case.malformed
    if malformed == JSON_SYNTAX:
        malformed += syntax_error(case.line)
    assert got["metadata"].get("malformed") == malformed
    assert got["sender"] == (case.payload.get("from") if malformed is None else ZGENT)


async def test_the_line_corpora_left_no_internal_error(corpus_daemon):
    """Before the names below: one of them (a known bug) costs lines."""
    values = metrics_of(corpus_daemon)
    for component in ("moo", "narrative", "ws"):
        assert values[f'arqonbus_internal_errors_total{{component="{component}"}}'] == 0
    assert values["arqonbus_narrative_lines_cut_total"] == 1
    assert not [line for line in corpus_daemon.lines if "Traceback" in line]


@pytest.mark.parametrize("name, target, reason", [
    pytest.param(*row, id=repr(row[0])) for row in FILE_NAMES])


async def test_each_log_dir_name_is_followed_or_refused_with_its_reason(
        name, target, reason, corpus_daemon, sentinel):
    mark = len(corpus_daemon.lines)
    marker = next(markers)
    path = append(corpus_daemon, name, marker_line(marker) + b"\n")
    if reason is not None:
        # A control character in the name is logged escaped: one event, one line.
        shown = str(path).replace("\n", "\\n")
        corpus_daemon.wait_for_line(f"{shown}: {reason}; not followed", start=mark)
    # The Zgent's own narrative is followed as ever; before its line, the file's if followed.
    own = next(markers)
    append(corpus_daemon, f"{ZGENT}-narrative.jsonl", marker_line(own) + b"\n")
    frames = await sentinel.before(is_marker_line(own))
    assert [(f["room"], f["channel"], f["payload"]["content"]) for f in frames] == (
        [(*target, str(marker))] if target is not None else [])
