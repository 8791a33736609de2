"""The WebSocket bus adapter: the handshake (JWT, identity, connection limit) and frame moving."""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from arqond import __version__
from arqond.config import Config
from arqond.core.auth import AuthError, authenticate
from arqond.core.bus import Bus
from arqond.core.clients import IDENTITY_KEYS
from arqond.system.journal import log_event

log = logging.getLogger("arqond.ws")
# The library's own per-connection chatter is debug material; its warnings still show.
library_log = logging.getLogger("arqond.ws.library")
IDENTITY_QUERY_ALIASES = {"client_type": "type", "type": "type", "screen_name": "screen_name",
                          "personality": "personality", "avatar": "avatar"}


class WriteBatcher:
    """Encodes each fanned-out frame once and joins the frames queued for one connection during
    one loop iteration into one write.

    Server frames are unmasked and uncompressed here, so one message has the same wire bytes for
    every client: the Bus hands all sinks the same bytes object, and the encoding is cached by
    identity. A fan-out of a read that carried many messages would otherwise cost one send(2)
    per frame per client; batched, it costs one per client. The flush runs on the next loop
    iteration, so a lone message waits only for the callbacks already queued.
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
            self._last_wire = Frame(Opcode.TEXT, frame).serialize(mask=False)
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

    The transport buffer plus the frames not yet flushed are the client's outgoing queue;
    ``limit`` bounds it in bytes. Nothing here awaits, so a fan-out loop over thousands of sinks
    never waits on any one client.
    """

    __slots__ = ("connection", "limit", "closing", "batcher", "pending")

    def __init__(self, connection: ServerConnection, limit: int, batcher: WriteBatcher) -> None:
        self.connection = connection
        self.limit = limit
        self.closing: asyncio.Task[None] | None = None
        self.batcher = batcher
        self.pending = 0  # bytes queued since the last flush

    def send(self, frame: bytes) -> bool:
        connection = self.connection
        if connection.protocol.state is not State.OPEN:
            return True  # closing already: the frame has nowhere to go and nobody to blame
        if connection.transport.get_write_buffer_size() + self.pending > self.limit:
            return False
        # What protocol.send_text would queue (no fragmentation, no extensions), encoded once.
        connection.protocol.writes.append(self.batcher.encode(frame))
        if not self.pending:
            self.batcher.mark(self)
        self.pending += len(frame)
        return True

    def flush(self) -> None:
        self.pending = 0
        connection = self.connection
        if connection.transport.is_closing():
            connection.protocol.data_to_send()  # nowhere to go
            return
        writes = connection.protocol.data_to_send()
        if all(writes):
            if writes:
                connection.transport.write(b"".join(writes))
        else:  # an end-of-stream marker: let the library half-close as it does itself
            connection.protocol.writes[:0] = writes
            connection.send_data()

    def close(self, code: int, reason: str) -> None:
        if self.closing is None:
            self.closing = asyncio.ensure_future(self.connection.close(code, reason))


def _json_response(connection: ServerConnection, status: HTTPStatus, body: dict[str, Any],
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


class WebSocketAdapter:
    name = "ws"

    def __init__(self, bus: Bus, config: Config, sock: socket.socket) -> None:
        self.bus = bus
        self.sock = sock
        self.config = config
        self.server: Server | None = None
        # Handshake results handed from process_request to the handler; weak, because a
        # handshake can still fail after process_request and the handler then never runs.
        self._handshakes: weakref.WeakKeyDictionary[
            ServerConnection, tuple[dict[str, Any], dict[str, str]]] = weakref.WeakKeyDictionary()
        self.refused_total = 0
        self.batcher = WriteBatcher()

    def reload(self, config: Config) -> None:
        self.config = config

    async def start(self) -> None:
        server = self.config.server
        self.server = await serve(
            self._handle, sock=self.sock, max_size=server.max_message_size,
            ping_interval=server.ping_interval, ping_timeout=server.ping_timeout,
            compression=None, process_request=self._process_request,
            server_header=f"arqond/{__version__}", logger=library_log)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close(close_connections=True)  # clients see 1001 going away
            await self.server.wait_closed()

    def _process_request(self, connection: ServerConnection,
                         request: Request) -> Response | None:
        query = dict(parse_qsl(urlsplit(request.path).query))
        claims: dict[str, Any] = {}
        auth = self.config.auth
        if auth.enabled:
            try:
                claims = authenticate(request.headers, query, auth.jwt_secret)
            except AuthError as exc:
                self.refused_total += 1
                log_event(log, logging.WARNING, "auth_refused",
                          f"WebSocket handshake refused: {exc}", peer=_peer(connection))
                return _json_response(connection, HTTPStatus.UNAUTHORIZED,
                                      {"error": "Unauthorized", "details": str(exc)},
                                      {"WWW-Authenticate": 'Bearer realm="arqonbus"'})
        if len(self.bus.clients) >= self.config.server.max_connections:
            self.refused_total += 1
            log_event(log, logging.WARNING, "connection_refused",
                      "WebSocket connection refused: server.max_connections reached",
                      peer=_peer(connection))
            return _json_response(connection, HTTPStatus.SERVICE_UNAVAILABLE,
                                  {"error": "Service Unavailable",
                                   "details": "connection limit reached"})
        identity = {IDENTITY_QUERY_ALIASES[k]: v for k, v in query.items()
                    if k in IDENTITY_QUERY_ALIASES}
        self._handshakes[connection] = (claims, identity)
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        claims, identity = self._handshakes.pop(connection, ({}, {}))
        sink = WebSocketSink(connection, self.config.server.client_buffer_bytes, self.batcher)
        bus = self.bus
        client = bus.attach(sink, "ws", claims=claims,
                            identity={k: v for k, v in identity.items() if k in IDENTITY_KEYS},
                            peer=_peer(connection))
        receive = bus.receive
        try:
            async for message in connection:
                if isinstance(message, str):
                    receive(client, message)
                else:
                    bus.reject(client, "UNSUPPORTED_FRAME",
                               "binary frames are not supported: send JSON in text frames")
        except ConnectionClosed:
            pass
        finally:
            bus.detach(client, reason=f"closed ({connection.close_code})")


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address or "unix")
