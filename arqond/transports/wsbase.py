"""What the WebSocket listeners (bus and telemetry) share: the non-blocking sink and the
handshake checks (JWT, connection limit) with their JSON refusals."""

from __future__ import annotations

import asyncio
import logging
import socket
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.protocol import State

OPEN = State.OPEN

from arqond import __version__
from arqond.config import Config
from arqond.core.auth import AuthError, authenticate
from arqond.log import log_event


# The library's own per-connection chatter is debug material; its warnings still show.
library_log = logging.getLogger("arqond.ws.library")
# Seconds a client gets to answer our close frame (1001 at shutdown) before the connection is
# dropped; keeps SIGTERM well inside its 5 s promise when a client does not answer.
CLOSE_TIMEOUT = 2.0


async def serve_websocket(handler: Any, sock: Any, config: Config,
                          process_request: Any) -> Server:
    """A WebSocket server on ``sock`` with the settings both WebSocket ports share.

    Compression stays off: the WriteBatcher's one encoding per frame for every client relies
    on it (and it would cost more CPU than loopback bandwidth is worth).
    """
    server = config.server
    return await serve(
        handler, sock=sock, max_size=server.max_message_size,
        ping_interval=server.ping_interval, ping_timeout=server.ping_timeout,
        close_timeout=CLOSE_TIMEOUT, compression=None, process_request=process_request,
        server_header=f"arqond/{__version__}", logger=library_log)


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked, uncompressed text frame (RFC 6455 5.2), as websockets'
    ``Frame.serialize(mask=False)`` writes it for a server, at a fraction of the cost: every
    published message is encoded once."""
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big") + payload
    return b"\x81\x7f" + length.to_bytes(8, "big") + payload


class WriteBatcher:
    """Encodes each fanned-out frame once and joins the frames queued for one connection during
    one loop iteration into one write.

    Server frames are unmasked and uncompressed (compression is off), so one message has the
    same wire bytes for every client: the Bus hands all sinks the same bytes object, and the
    encoding is cached by identity. A fan-out of a read that carried many messages would
    otherwise cost one send(2) per frame per client; batched, it costs one per client. The
    flush runs on the next loop iteration, so a lone message waits only for the callbacks
    already queued.
    """

    __slots__ = ("dirty", "flushes_total", "_last_frame", "_last_wire")

    def __init__(self) -> None:
        self.dirty: list[WebSocketSink] = []
        self.flushes_total = 0
        self._last_frame: bytes | None = None
        self._last_wire = b""

    def encode(self, frame: bytes) -> bytes:
        if frame is not self._last_frame:
            self._last_frame = frame
            self._last_wire = text_frame(frame)
        return self._last_wire

    def mark(self, sink: "WebSocketSink") -> None:
        if not self.dirty:
            asyncio.get_running_loop().call_soon(self.flush)
        self.dirty.append(sink)

    def flush(self) -> None:
        dirty, self.dirty = self.dirty, []
        self.flushes_total += 1
        for sink in dirty:
            sink.flush()


class WebSocketSink:
    """Writes into the connection's protocol buffer, as websockets.broadcast does, and leaves
    the transport write to the WriteBatcher.

    The one class that uses websockets' internals (``protocol.writes``): ``send_text`` would
    encode each frame again for every client, 20 times the cost of the shared encoding. The
    versions it was checked with are pinned in pyproject.toml, and
    tests/unit/test_websockets_contract.py fails loudly when an upgrade changes them.

    The transport buffer plus the frames not yet flushed are the client's outgoing queue;
    ``limit`` bounds it in bytes. Nothing here awaits, so a fan-out loop over thousands of sinks
    never waits on any one client.
    """

    __slots__ = ("connection", "protocol", "transport", "limit", "closing", "batcher", "pending")

    def __init__(self, connection: ServerConnection, limit: int, batcher: WriteBatcher) -> None:
        self.connection = connection
        # Both are fixed once the handshake is done, and read for every frame.
        self.protocol = connection.protocol
        self.transport = connection.transport
        self.limit = limit
        self.closing: asyncio.Task[None] | None = None
        self.batcher = batcher
        self.pending = 0  # bytes queued since the last flush

    def send(self, frame: bytes) -> bool:
        protocol = self.protocol
        if protocol.state is not OPEN:
            return True  # closing already: the frame has nowhere to go and nobody to blame
        if self.transport.get_write_buffer_size() + self.pending > self.limit:
            return False
        # What protocol.send_text would queue (no fragmentation, no extensions), encoded once.
        protocol.writes.append(self.batcher.encode(frame))
        if not self.pending:
            self.batcher.mark(self)
        self.pending += len(frame)
        return True

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size() + self.pending

    def flush(self) -> None:
        self.pending = 0
        writes = self.protocol.data_to_send()
        if self.transport.is_closing():
            return  # nowhere to go
        if all(writes):
            if writes:
                self.transport.write(b"".join(writes))
        else:  # an end-of-stream marker: let the library half-close as it does itself
            self.protocol.writes[:0] = writes
            self.connection.send_data()

    def close(self, code: int, reason: str) -> None:
        if self.closing is None:
            self.closing = asyncio.ensure_future(self.connection.close(code, reason))


def json_response(connection: ServerConnection, status: HTTPStatus, body: dict[str, Any],
                  extra_headers: dict[str, str] | None = None) -> Response:
    response = connection.respond(status, "")
    response.body = orjson.dumps(body)
    del response.headers["Content-Type"]
    del response.headers["Content-Length"]
    response.headers["Content-Type"] = "application/json"
    response.headers["Content-Length"] = str(len(response.body))
    for key, value in (extra_headers or {}).items():
        response.headers[key] = value
    return response


def admit(connection: ServerConnection, request: Request, config: Config, active: int,
          what: str, log: logging.Logger
          ) -> tuple[Response | None, dict[str, Any], dict[str, str]]:
    """Check a handshake: (refusal or None, JWT claims, query parameters).

    ``active`` is how many connections the listener serves now; server.max_connections bounds it.
    A Unix socket peer needs no token: the kernel says who it is.
    """
    try:
        # Strict: two different bytes that are not UTF-8 must not be the same parameter.
        query = dict(parse_qsl(request.path.partition("?")[2], errors="strict"))
    except ValueError as exc:
        return (json_response(connection, HTTPStatus.BAD_REQUEST,
                              {"error": "Bad Request",
                               "details": f"malformed request target: {exc}"}), {}, {})
    claims: dict[str, Any] = {}
    auth = config.auth
    if auth.enabled and not on_unix_socket(connection):
        try:
            claims = authenticate(request.headers, query, auth.jwt_secret)
        except AuthError as exc:
            log_event(log, logging.WARNING, "auth_refused", f"{what} handshake refused: {exc}",
                      peer=peer_of(connection))
            return (json_response(connection, HTTPStatus.UNAUTHORIZED,
                                  {"error": "Unauthorized", "details": str(exc)},
                                  {"WWW-Authenticate": 'Bearer realm="arqonbus"'}),
                    claims, query)
    if active >= config.server.max_connections:
        log_event(log, logging.WARNING, "connection_refused",
                  f"{what} connection refused: server.max_connections reached",
                  peer=peer_of(connection))
        return (json_response(connection, HTTPStatus.SERVICE_UNAVAILABLE,
                              {"error": "Service Unavailable",
                               "details": "connection limit reached"}), claims, query)
    return None, claims, query


def on_unix_socket(connection: ServerConnection) -> bool:
    return connection.transport.get_extra_info("socket").family == socket.AF_UNIX


def peer_of(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address or "unix")
