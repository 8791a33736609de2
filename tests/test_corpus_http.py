"""The bad-input corpus against the real daemon's HTTP port: each request's exact status,
headers and JSON body; after each, a marker published over the same connection when it stays
open (a fresh one when the answer closed it) must reach a sentinel WebSocket subscriber."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from tests.conftest import metrics_of, scaled
from tests.corpus.http import MAX_BODY, SENTINEL, Answer, HttpCase, http_corpus, reason, request
from tests.corpus.oracle import syntax_error

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_DEPTH = 64
CORPUS = http_corpus(MAX_DEPTH)


class HttpConnection:
    """A raw HTTP/1.1 client: bytes out, one response at a time in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, daemon) -> "HttpConnection":
        return cls(*await asyncio.open_connection(*daemon.http_address))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while True:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), scaled(10))
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            if status != 100:  # an interim answer to Expect: 100-continue
                break
        assert lines[0] == f"HTTP/1.1 {status} {reason(status)}", lines[0]
        headers = {name.lower(): value.strip() for name, _, value in
                   (line.partition(":") for line in lines[1:] if line)}
        length = 0 if head_only else int(headers["content-length"])
        body = await asyncio.wait_for(self.reader.readexactly(length), scaled(10))
        return status, headers, body

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), scaled(10)) == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture(scope="module")
def corpus_daemon(shared_daemon):
    return shared_daemon({"server": {"max_message_size": MAX_BODY,
                                     "max_json_depth": MAX_DEPTH}})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sentinel(corpus_daemon):
    connection = await connect(corpus_daemon.ws_url)
    await connection.recv()
    await connection.send('{"type":"command","command":"join_channel",'
                          '"args":{"room":"corpus","channel":"sentinel"}}')
    for _ in range(2):  # the response and its ack
        await connection.recv()
    yield connection
    await connection.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kept_alive(corpus_daemon):
    """The connection every case that keeps it open shares."""
    holder = {"connection": await HttpConnection.open(corpus_daemon)}
    yield holder
    holder["connection"].close()


async def received(sentinel) -> Any:
    frame = orjson.loads(await asyncio.wait_for(sentinel.recv(), scaled(5)))
    assert (frame["room"], frame["channel"]) == ("corpus", "sentinel")
    return frame["payload"]


markers = iter(range(1, 1 << 30))


async def assert_sentinel_still_served(connection: HttpConnection, sentinel) -> None:
    marker = next(markers)
    await connection.send(request("POST", SENTINEL, orjson.dumps({"marker": marker})))
    status, _, body = await connection.response()
    assert (status, orjson.loads(body)["type"]) == (200, "message_response")
    assert await received(sentinel) == {"marker": marker}


def assert_answer(case: HttpCase, expect: Answer, status: int, headers: dict[str, str],
                  body: bytes) -> None:
    assert status == expect.status, (status, body)
    assert headers.get("allow") == expect.allow
    assert (headers.get("connection") == "close") == expect.closes
    if case.head:
        assert body == b"" and int(headers["content-length"]) > 0
        return
    assert headers["content-type"] == "application/json"
    document = orjson.loads(body)
    if expect.published is not None:
        assert (document["type"], document["payload"]) == ("message_response",
                                                           expect.published)
    elif expect.envelope is not None:
        assert (document["type"], document["error_code"], document["error"]) == (
            "error", *expect.envelope)
    else:
        details = expect.details
        if expect.json_syntax:
            details = f"body is not valid JSON: {syntax_error(request_body(case))} " \
                "(it is the message payload)"
        assert document == {"error": reason(status), "details": details, "status": status}


def request_body(case: HttpCase) -> bytes:
    return case.request.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.name)
async def test_each_bad_request_gets_its_exact_answer_and_the_sentinel_keeps_receiving(
        case, corpus_daemon, kept_alive, sentinel):
    if case.expect.closes:
        connection = await HttpConnection.open(corpus_daemon)
    else:
        connection = kept_alive["connection"]
        kept_alive["connection"] = None  # back only if the case ends well
    try:
        await connection.send(case.request)
        status, headers, body = await connection.response(head_only=case.head)
        assert_answer(case, case.expect, status, headers, body)
        if case.expect.published is not None:
            assert await received(sentinel) == case.expect.published
        if case.expect.closes:
            assert await connection.closed()
            connection.close()
            connection = await HttpConnection.open(corpus_daemon)
        await assert_sentinel_still_served(connection, sentinel)
    except BaseException:
        connection.close()
        kept_alive["connection"] = kept_alive["connection"] or \
            await HttpConnection.open(corpus_daemon)
        raise
    if case.expect.closes:
        connection.close()
    else:
        kept_alive["connection"] = connection


async def test_the_http_corpus_left_no_internal_error_and_no_traceback(corpus_daemon):
    values = metrics_of(corpus_daemon)
    assert values['arqonbus_internal_errors_total{component="http"}'] == 0
    assert 'arqonbus_http_responses_total{code="500"}' not in values
    assert not [line for line in corpus_daemon.lines if "Traceback" in line]
