"""The bad-input corpus against the real daemon's bus surfaces: the WebSocket port, the local
bus socket (WebSocket over a Unix socket) and the control socket (the same frames, one per
line).

One daemon serves the module and one connection per surface takes every case in turn: each
case asserts the exact answer (an error frame, a failed command's two frames, an ack, or
nothing), then the same connection publishes a marker that a sentinel subscriber must receive,
so a case that broke the connection, the bus or the sentinel fails right there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import struct
from typing import Any

import orjson
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect, unix_connect

from tests.conftest import metrics_of, scaled
from tests.corpus import wsraw
from tests.corpus.bus import (CHANNEL, ROOM, Acked, BusCase, Failed, Ignored, Refused, Routed,
                              bus_corpus, message)
from tests.corpus.oracle import syntax_error, utf8

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_MESSAGE_SIZE = 131072
MAX_DEPTH = 64
CONFIG = {"server": {"max_message_size": MAX_MESSAGE_SIZE, "max_json_depth": MAX_DEPTH}}
CORPUS = bus_corpus(MAX_DEPTH)
SURFACES = ("ws", "bus", "control")


def carried(surface: str, case: BusCase) -> bool:
    """Whether ``surface`` can carry the case as one frame: a WebSocket text frame must be
    UTF-8 (test_invalid_utf8_text_frames_close_1007 has the others), a line has no newline."""
    return case.one_line if surface == "control" else utf8(case.data)


def expectation(surface: str, case: BusCase) -> Any:
    # A line that is only whitespace is no frame on the control socket (a human's Enter).
    if surface == "control" and not case.data.strip():
        return Ignored()
    expect = case.expect
    # The WebSocket port's TCP peers are identified but not admins; Unix socket peers are
    # root here, so admins.
    if surface == "ws" and isinstance(expect, Failed) and expect.refused_to_non_admin:
        return dataclasses.replace(expect, code="AUTHORIZATION_ERROR",
                                   text=expect.refused_to_non_admin)
    return expect


def params() -> list[Any]:
    names = [case.name for case in CORPUS]
    assert len(names) == len(set(names)), "corpus case names must be unique (test ids)"
    return [pytest.param(surface, case, id=f"{surface}: {case.name}", marks=[
                pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else [])
            for surface in SURFACES for case in CORPUS if carried(surface, case)]


class Endpoint:
    """One connection to a bus surface: a frame out as raw bytes, frames in as dicts."""

    def __init__(self, surface: str) -> None:
        self.surface = surface
        self.dirty = False   # a case failed half-way: frames of it may still be queued
        self.markers = 0

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raise NotImplementedError

    def decoded(self, data: bytes) -> bytes | str:
        """What the daemon hands the JSON decoder for this frame: the text of a WebSocket
        frame, or the line's bytes stripped of surrounding whitespace."""
        return data.strip() if self.surface == "control" else data.decode()


class WebSocketEndpoint(Endpoint):
    def __init__(self, surface: str, connection: Any) -> None:
        super().__init__(surface)
        self.connection = connection

    async def send(self, data: bytes) -> None:
        await self.connection.send(data.decode())

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        return orjson.loads(await asyncio.wait_for(self.connection.recv(), scaled(timeout)))


class ControlEndpoint(Endpoint):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__("control")
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data + b"\n")
        await self.writer.drain()

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), scaled(timeout))
        assert line, "the control socket was closed"
        return orjson.loads(line)


@pytest.fixture(scope="module")
def corpus_daemon(shared_daemon):
    return shared_daemon(CONFIG)


async def open_endpoint(daemon, surface: str) -> Endpoint:
    endpoint: Endpoint
    if surface == "ws":
        endpoint = WebSocketEndpoint("ws", await connect(daemon.ws_url, max_size=None))
    elif surface == "bus":
        endpoint = WebSocketEndpoint("bus", await unix_connect(daemon.listeners["bus"],
                                                               max_size=None))
    else:
        endpoint = ControlEndpoint(*await asyncio.open_unix_connection(
            daemon.control_path, limit=1 << 24))
    welcome = await endpoint.recv()
    assert welcome["payload"]["welcome"] == "Connected to ArqonBus"
    return endpoint


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sentinel(corpus_daemon):
    endpoint = await open_endpoint(corpus_daemon, "ws")
    await endpoint.send(orjson.dumps({"type": "command", "command": "join_channel",
                                      "args": {"room": ROOM, "channel": CHANNEL}}))
    assert (await endpoint.recv())["status"] == "success"
    assert (await endpoint.recv())["type"] == "command_response"
    yield endpoint
    await endpoint.connection.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def endpoints(corpus_daemon, sentinel):
    opened = {surface: await open_endpoint(corpus_daemon, surface) for surface in SURFACES}
    yield opened
    await opened["ws"].connection.close()
    await opened["bus"].connection.close()
    opened["control"].writer.close()


@contextlib.asynccontextmanager
async def one_case(endpoint: Endpoint, sentinel: Endpoint):
    """A case on a shared connection: when the one before failed half-way, a marker goes
    through first and everything before it is dropped on both ends, so that a failure
    stays that case's alone."""
    if endpoint.dirty or sentinel.dirty:
        marker = await publish_marker(endpoint, "resync")
        while (await endpoint.recv()).get("id") != marker:
            pass
        while (await sentinel.recv())["payload"] != {"marker": marker}:
            pass
    endpoint.dirty = sentinel.dirty = True
    yield
    endpoint.dirty = sentinel.dirty = False


async def publish_marker(endpoint: Endpoint, name: str) -> str:
    endpoint.markers += 1
    marker = f"{endpoint.surface}-marker-{endpoint.markers}"
    await endpoint.send(orjson.dumps({"id": marker, "type": "message", "room": ROOM,
                                      "channel": CHANNEL, "payload": {"marker": marker},
                                      "metadata": {"after": name}}))
    return marker


async def assert_sentinel_still_served(endpoint: Endpoint, sentinel: Endpoint,
                                       name: str) -> None:
    """The connection that sent the bad input publishes a marker: acknowledged to it, and
    the sentinel receives it next (nothing else in between)."""
    marker = await publish_marker(endpoint, name)
    ack = await endpoint.recv()
    assert (ack["type"], ack["id"]) == ("message_response", marker), ack
    got = await sentinel.recv()
    assert (got["room"], got["channel"], got["payload"]) == (ROOM, CHANNEL, {"marker": marker})


def assert_refused(frame: dict[str, Any], code: str, text: str,
                   request_id: str | None) -> None:
    assert frame["type"] == "error", frame
    assert (frame["error_code"], frame["error"]) == (code, text)
    assert frame.get("request_id") == request_id
    assert frame["sender"] == "arqonbus" and "; ".join(frame["payload"]["errors"]) == text


@pytest.mark.parametrize("surface, case", params())
async def test_each_bad_frame_gets_its_exact_answer_and_the_sentinel_keeps_receiving(
        surface, case, endpoints, sentinel):
    endpoint = endpoints[surface]
    async with one_case(endpoint, sentinel):
        await endpoint.send(case.data)
        await assert_answer(endpoint, sentinel, case.data, expectation(surface, case))
        await assert_sentinel_still_served(endpoint, sentinel, case.name)


async def assert_answer(endpoint: Endpoint, sentinel: Endpoint, data: bytes,
                        expect: Any) -> None:
    if isinstance(expect, Refused):
        text = expect.text
        if text is None:
            text = f"frame is not valid JSON: {syntax_error(endpoint.decoded(data))}"
        assert_refused(await endpoint.recv(), expect.code, text, expect.request_id)
    elif isinstance(expect, Failed):
        response = await endpoint.recv()
        assert (response["type"], response["status"], response["command"]) == (
            "response", "error", expect.command), response
        assert (response["error_code"], response["error"]) == (expect.code, expect.text)
        assert response["request_id"] == expect.request_id
        ack = await endpoint.recv()
        assert (ack["type"], ack["id"], ack["payload"]) == (
            "command_response", expect.request_id, {"result": "ok"})
    elif isinstance(expect, Routed):
        ack = await endpoint.recv()
        assert ack["type"] == "message_response", ack
        if expect.request_id is not None:
            assert ack["id"] == expect.request_id
        got = await sentinel.recv()
        assert (got["room"], got.get("channel"), got["payload"]) == (
            ROOM, expect.channel, expect.payload)
        assert got["id"] == ack["id"]
    elif isinstance(expect, Acked):
        ack = await endpoint.recv()
        assert (ack["type"], ack["id"]) == ("message_response", expect.request_id), ack
    else:
        assert isinstance(expect, Ignored)


# -- what only a WebSocket frame can be ----------------------------------------------------

def ws_address(daemon, surface: str) -> tuple[str, int] | str:
    if surface == "bus":
        return daemon.listeners["bus"]
    host, _, port = daemon.listeners["ws"].rpartition(":")
    return host, int(port)


def text_frame_of(size: int) -> bytes:
    """A valid message to the sentinel of exactly ``size`` bytes."""
    head = b'{"type":"message","room":"corpus","channel":"sentinel","payload":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


INVALID_UTF8 = [case for case in CORPUS if not utf8(case.data)]


@pytest.mark.parametrize("surface", ("ws", "bus"))
@pytest.mark.parametrize("case", INVALID_UTF8, ids=[case.name for case in INVALID_UTF8])
async def test_invalid_utf8_text_frames_close_1007(surface, case, corpus_daemon, endpoints,
                                                    sentinel):
    """RFC 6455 8.1: a text frame that is not UTF-8 fails the connection (the library's
    close), and only that one."""
    with pytest.raises(UnicodeDecodeError) as decoding:
        case.data.decode()
    client = wsraw.RawClient(ws_address(corpus_daemon, surface))
    try:
        client.read_frame()  # the welcome
        client.send(wsraw.frame(wsraw.TEXT, case.data))
        reason = f"{decoding.value.reason} at position {decoding.value.start}"
        assert client.close_received() == (1007, reason)
    finally:
        client.close()
    async with one_case(endpoints[surface], sentinel):
        await assert_sentinel_still_served(endpoints[surface], sentinel, case.name)


# (name, what is sent after the handshake, close code, close reason): the library's refusals
# of frames that break RFC 6455, each failing that connection alone.
PROTOCOL_VIOLATIONS = [
    ("reserved opcode 0x3", wsraw.frame(0x3, b"x"), 1002, "invalid opcode"),
    ("reserved opcode 0xB", wsraw.frame(0xB, b"x"), 1002, "invalid opcode"),
    ("unmasked client frame", wsraw.frame(wsraw.TEXT, b"{}", mask=False), 1002,
     "incorrect masking"),
    ("RSV1 without an extension", wsraw.frame(wsraw.TEXT, b"{}", rsv=4), 1002,
     "reserved bits must be 0"),
    ("RSV3 without an extension", wsraw.frame(wsraw.TEXT, b"{}", rsv=1), 1002,
     "reserved bits must be 0"),
    ("ping of 126 bytes", wsraw.frame(wsraw.PING, b"x" * 126), 1002, "control frame too long"),
    ("fragmented ping", wsraw.frame(wsraw.PING, b"x", fin=False), 1002,
     "fragmented control frame"),
    ("continuation with nothing to continue", wsraw.frame(wsraw.CONTINUATION, b"x"), 1002,
     "unexpected continuation frame"),
    ("new text frame inside a fragmented one",
     wsraw.frame(wsraw.TEXT, b"{", fin=False) + wsraw.frame(wsraw.TEXT, b"}"), 1002,
     "expected a continuation frame"),
    ("close code 999", wsraw.frame(wsraw.CLOSE, struct.pack("!H", 999)), 1002,
     "invalid status code"),
    ("close code 1005 on the wire", wsraw.frame(wsraw.CLOSE, struct.pack("!H", 1005)), 1002,
     "invalid status code"),
    ("close frame of one byte", wsraw.frame(wsraw.CLOSE, b"x"), 1002, "close frame too short"),
    ("close reason not UTF-8", wsraw.frame(wsraw.CLOSE, struct.pack("!H", 1000) + b"\xff"),
     1007, "invalid start byte at position 0"),
    ("UTF-8 cut across fragments",
     wsraw.frame(wsraw.TEXT, b'{"a":"\xc3', fin=False) + wsraw.frame(wsraw.CONTINUATION,
                                                                      b'x"}'),
     1007, "invalid continuation byte at position 6"),
    ("frame one byte over server.max_message_size",
     wsraw.frame(wsraw.TEXT, b"x" * (MAX_MESSAGE_SIZE + 1)), 1009,
     f"frame with {MAX_MESSAGE_SIZE + 1} bytes exceeds limit of {MAX_MESSAGE_SIZE} bytes"),
    ("fragments adding up past server.max_message_size",
     wsraw.frame(wsraw.TEXT, b"x" * 100000, fin=False) +
     wsraw.frame(wsraw.CONTINUATION, b"x" * 40000), 1009,
     f"frame with 40000 bytes after reading 100000 bytes exceeds limit of "
     f"{MAX_MESSAGE_SIZE} bytes"),
]


@pytest.mark.parametrize("surface", ("ws", "bus"))
@pytest.mark.parametrize("data, code, reason", [row[1:] for row in PROTOCOL_VIOLATIONS],
                         ids=[row[0] for row in PROTOCOL_VIOLATIONS])
async def test_frames_that_break_rfc_6455_close_that_connection_alone(
        surface, data, code, reason, corpus_daemon, endpoints, sentinel):
    client = wsraw.RawClient(ws_address(corpus_daemon, surface))
    try:
        client.read_frame()
        client.send(data)
        assert client.close_received() == (code, reason)
    finally:
        client.close()
    async with one_case(endpoints[surface], sentinel):
        await assert_sentinel_still_served(endpoints[surface], sentinel, reason)


@pytest.mark.parametrize("surface", ("ws", "bus"))
async def test_binary_frames_ping_fragments_and_the_size_bound(surface, corpus_daemon,
                                                                endpoints, sentinel):
    client = wsraw.RawClient(ws_address(corpus_daemon, surface))
    sentinel.dirty = True
    try:
        client.read_frame()
        client.send(wsraw.frame(wsraw.BINARY, b'{"type":"message"}'))
        opcode, payload = client.read_frame()
        error = orjson.loads(payload)
        assert_refused(error, "UNSUPPORTED_FRAME",
                       "binary frames are not supported: send JSON in text frames", None)
        client.send(wsraw.frame(wsraw.PING, b"still there?"))
        assert client.read_frame() == (wsraw.PONG, b"still there?")
        # A message in three fragments is one frame; one exactly at the bound is accepted.
        whole = text_frame_of(MAX_MESSAGE_SIZE)
        client.send(wsraw.frame(wsraw.TEXT, whole[:10], fin=False) +
                    wsraw.frame(wsraw.CONTINUATION, whole[10:20], fin=False) +
                    wsraw.frame(wsraw.CONTINUATION, whole[20:]))
        opcode, payload = client.read_frame()
        assert orjson.loads(payload)["type"] == "message_response"
        got = await sentinel.recv()
        assert len(got["payload"]) == MAX_MESSAGE_SIZE - len(text_frame_of(0))
    finally:
        client.close()
    sentinel.dirty = False
    async with one_case(endpoints[surface], sentinel):
        await assert_sentinel_still_served(endpoints[surface], sentinel, "binary")


# (name, request head, status line, body): upgrades the WebSocket port refuses, each answered
# and closed by the library (or by arqond's handshake check, for the target).
REFUSAL = "Failed to open a WebSocket connection: "
NOT_HERE = ("\n\nYou cannot access a WebSocket server directly with a browser. "
            "You need a WebSocket client.\n")
BAD_UPGRADES = [
    ("POST", wsraw.upgrade_request().replace(b"GET", b"POST", 1),
     "405 Method Not Allowed", REFUSAL + "unsupported HTTP method: POST.\n"),
    ("HTTP/1.0", wsraw.upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
     "505 HTTP Version Not Supported", REFUSAL + "unsupported HTTP version: HTTP/1.0.\n"),
    ("no Upgrade header", wsraw.upgrade_request().replace(b"Upgrade: websocket\r\n", b""),
     "426 Upgrade Required", REFUSAL + "missing Upgrade header." + NOT_HERE),
    ("Upgrade: h2c", wsraw.upgrade_request().replace(b"Upgrade: websocket", b"Upgrade: h2c"),
     "426 Upgrade Required", REFUSAL + "invalid Upgrade header: h2c." + NOT_HERE),
    ("no Connection header", wsraw.upgrade_request().replace(b"Connection: Upgrade\r\n", b""),
     "426 Upgrade Required", REFUSAL + "missing Connection header." + NOT_HERE),
    ("Connection: close",
     wsraw.upgrade_request().replace(b"Connection: Upgrade", b"Connection: close"),
     "426 Upgrade Required", REFUSAL + "invalid Connection header: close." + NOT_HERE),
    ("no key", wsraw.upgrade_request().replace(
        f"Sec-WebSocket-Key: {wsraw.KEY}\r\n".encode(), b""),
     "400 Bad Request", REFUSAL + "missing Sec-WebSocket-Key header.\n"),
    ("two keys", wsraw.upgrade_request(extra=f"Sec-WebSocket-Key: {wsraw.KEY}\r\n"),
     "400 Bad Request", REFUSAL + "invalid Sec-WebSocket-Key header: multiple values.\n"),
    ("version 8", wsraw.upgrade_request().replace(b"Version: 13", b"Version: 8"),
     "400 Bad Request", REFUSAL + "invalid Sec-WebSocket-Version header: 8.\n"),
    ("no version", wsraw.upgrade_request().replace(b"Sec-WebSocket-Version: 13\r\n", b""),
     "400 Bad Request", REFUSAL + "missing Sec-WebSocket-Version header.\n"),
    ("header line of 9000 bytes", wsraw.upgrade_request(extra="X-Long: " + "a" * 9000 + "\r\n"),
     "431 Request Header Fields Too Large",
     REFUSAL + "read 9010 bytes, expected no more than 8192 bytes.\n"),
    ("200 headers", wsraw.upgrade_request(
        extra="".join(f"X-H{n}: v\r\n" for n in range(200))),
     "431 Request Header Fields Too Large", REFUSAL + "expected no more than 128 headers.\n"),
]
MALFORMED_TARGET = ("a query that is not UTF-8", wsraw.upgrade_request(path="/?a=%FF"),
                    "400 Bad Request",
                    '{"error":"Bad Request","details":"malformed request target: \'utf-8\' '
                    'codec can\'t decode byte 0xff in position 0: invalid start byte"}')
# Heads the library cannot parse: it closes without an answer (websockets 17 sends none).
UNPARSED = [
    ("request line without a version", b"HELLO\r\n\r\n"),
    ("space in the target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("header without a colon", wsraw.upgrade_request(extra="NoColonHere\r\n")),
    ("obsolete line folding", wsraw.upgrade_request(extra="X-A: a\r\n b\r\n")),
    ("bare LF line ends", wsraw.upgrade_request().replace(b"\r\n", b"\n")),
    ("a body with the upgrade", wsraw.upgrade_request(extra="Content-Length: 5\r\n") + b"hello"),
    ("control character in a header", wsraw.upgrade_request(
        extra="Sec-WebSocket-Protocol: \x01\r\n")),
]


def exchange(address: tuple[str, int] | str, request: bytes) -> bytes:
    """Send a request head; everything the server says until it closes."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(scaled(10))
        sock.connect(address)
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("surface", ("ws", "bus"))
@pytest.mark.parametrize("request_head, status, body", [row[1:] for row in
                                                        [*BAD_UPGRADES, MALFORMED_TARGET]],
                         ids=[row[0] for row in [*BAD_UPGRADES, MALFORMED_TARGET]])
async def test_bad_upgrade_requests_are_answered_and_closed(surface, request_head, status,
                                                            body, corpus_daemon, endpoints,
                                                            sentinel):
    reply = exchange(ws_address(corpus_daemon, surface), request_head)
    head, _, got_body = reply.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].decode() == f"HTTP/1.1 {status}"
    assert got_body.decode() == body
    async with one_case(endpoints[surface], sentinel):
        await assert_sentinel_still_served(endpoints[surface], sentinel, status)


@pytest.mark.parametrize("request_head", [row[1] for row in UNPARSED],
                         ids=[row[0] for row in UNPARSED])
async def test_heads_that_do_not_parse_are_closed_without_an_answer(request_head,
                                                                    corpus_daemon, endpoints,
                                                                    sentinel):
    assert exchange(ws_address(corpus_daemon, "ws"), request_head) == b""
    async with one_case(endpoints["ws"], sentinel):
        await assert_sentinel_still_served(endpoints["ws"], sentinel, "unparsed head")


# -- what only a line can be ----------------------------------------------------------------

async def test_control_lines_crlf_blank_split_and_batched(endpoints, sentinel):
    control = endpoints["control"]
    assert isinstance(control, ControlEndpoint)
    async with one_case(control, sentinel):
        request_id, data = message(payload={"crlf": True})
        control.writer.write(data + b"\r\n" + b"\n \t \n\r\n")  # CRLF, then blank lines
        ack = await control.recv()
        assert (ack["type"], ack["id"]) == ("message_response", request_id)
        assert (await sentinel.recv())["payload"] == {"crlf": True}
        # One frame in three writes, then three frames in one write.
        request_id, data = message(payload={"split": True})
        for piece in (data[:5], data[5:30], data[30:] + b"\n"):
            control.writer.write(piece)
            await control.writer.drain()
        assert (await control.recv())["id"] == request_id
        assert (await sentinel.recv())["payload"] == {"split": True}
        batch = [message(payload={"n": n}) for n in range(3)]
        control.writer.write(b"".join(data + b"\n" for _, data in batch))
        assert [(await control.recv())["id"] for _ in batch] == [rid for rid, _ in batch]
        assert [(await sentinel.recv())["payload"] for _ in batch] == [{"n": n}
                                                                       for n in range(3)]
        await assert_sentinel_still_served(control, sentinel, "lines")


@pytest.mark.parametrize("excess", (0, 1), ids=("at the bound", "one byte past"))
async def test_control_line_at_and_past_server_max_message_size(excess, corpus_daemon,
                                                                  endpoints, sentinel):
    """At the bound a line is a frame; one byte past, LINE_TOO_LONG and the connection is
    closed (the rest of the line is never read), counted."""
    before = metrics_of(corpus_daemon)["arqonbus_control_oversize_total"]
    control = await open_endpoint(corpus_daemon, "control")
    assert isinstance(control, ControlEndpoint)
    async with one_case(endpoints["control"], sentinel):
        try:
            await control.send(text_frame_of(MAX_MESSAGE_SIZE + excess))
            if excess:
                assert_refused(await control.recv(), "LINE_TOO_LONG",
                               f"line longer than {MAX_MESSAGE_SIZE} bytes "
                               "(server.max_message_size); closing the connection", None)
                assert await asyncio.wait_for(control.reader.read(1), scaled(5)) == b""
            else:
                assert (await control.recv())["type"] == "message_response"
                assert len((await sentinel.recv())["payload"]) == \
                    MAX_MESSAGE_SIZE - len(text_frame_of(0))
        finally:
            control.writer.close()
        await assert_sentinel_still_served(endpoints["control"], sentinel, "long line")
    assert metrics_of(corpus_daemon)["arqonbus_control_oversize_total"] == before + excess


async def test_a_last_line_without_newline_is_answered_before_the_close(corpus_daemon,
                                                                         endpoints, sentinel):
    control = await open_endpoint(corpus_daemon, "control")
    assert isinstance(control, ControlEndpoint)
    async with one_case(endpoints["control"], sentinel):
        request_id, data = message(payload={"last": True})
        control.writer.write(data)
        control.writer.write_eof()
        assert (await control.recv())["id"] == request_id
        assert await asyncio.wait_for(control.reader.read(1), scaled(5)) == b""
        assert (await sentinel.recv())["payload"] == {"last": True}
        control.writer.close()
        await assert_sentinel_still_served(endpoints["control"], sentinel, "last line")


async def test_the_corpus_left_no_internal_error(corpus_daemon):
    """Last in the module: whatever the cases sent, nothing failed inside arqond."""
    values = metrics_of(corpus_daemon)
    for component in ("ws", "control", "http", "telemetry", "moo", "narrative", "casil"):
        assert values[f'arqonbus_internal_errors_total{{component="{component}"}}'] == 0
