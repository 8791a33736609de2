"""The WebSocket bus adapter: the handshake (JWT, identity, connection limit) and frame moving."""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref
from typing import Any

from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from arqond.config import Config
from arqond.core.bus import Bus
from arqond.core.clients import identity_from_query
from arqond.core.errors import ErrorCode
from arqond.core.metrics import Sample, counter
from arqond.transports.wsbase import (WebSocketSink, WriteBatcher, admit, peer_of,
                                      serve_websocket)

log = logging.getLogger("arqond.ws")
# Seconds that handshakes already under way at shutdown get to finish (see stop()).
HANDSHAKE_GRACE = 1.0
HANDSHAKE_SETTLE = 0.05


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
        self.batcher = WriteBatcher()  # one socket write per client per loop iteration

    def samples(self) -> list[Sample]:
        return [counter("arqonbus_ws_refused_total", "WebSocket handshakes refused (bad or "
                        "missing JWT, connection limit).", self.refused_total)]

    def reload(self, config: Config) -> None:
        self.config = config

    async def start(self) -> None:
        self.server = await serve_websocket(self._handle, self.sock, self.config,
                                            self._process_request)

    async def stop(self) -> None:
        if self.server is None:
            return
        # Stop accepting first, without closing the server: connects still in the kernel's
        # queue then wait for the next arqond (systemd keeps the listening socket), and the
        # handshakes already under way finish and are served before the 1001 close below,
        # where the library would answer them 503. The accept loop is the loop's reader on
        # the listening socket; sockets it accepted a moment ago get their connection objects
        # a few loop turns later, hence the short settle before looking for handshakes.
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.sock.fileno())
        deadline = loop.time() + HANDSHAKE_GRACE
        await asyncio.sleep(HANDSHAKE_SETTLE)
        while any(c.protocol.state is State.CONNECTING for c in self.server.all_connections) \
                and loop.time() < deadline:
            await asyncio.sleep(0.01)
        self.server.close(close_connections=True)  # clients see 1001 going away
        await self.server.wait_closed()

    def _process_request(self, connection: ServerConnection,
                         request: Request) -> Response | None:
        refusal, claims, query = admit(connection, request, self.config, len(self.bus.clients),
                                       "WebSocket", log)
        if refusal is not None:
            self.refused_total += 1
            return refusal
        self._handshakes[connection] = (claims, identity_from_query(query))
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        claims, identity = self._handshakes.pop(connection, ({}, {}))
        sink = WebSocketSink(connection, self.config.server.client_buffer_bytes,
                             self.batcher)
        bus = self.bus
        client = bus.attach(sink, "ws", claims=claims,
                            identity=identity,
                            peer=peer_of(connection))
        receive = bus.receive
        try:
            async for message in connection:
                if isinstance(message, str):
                    receive(client, message)
                else:
                    bus.reject(client, ErrorCode.UNSUPPORTED_FRAME,
                               "binary frames are not supported: send JSON in text frames")
        except ConnectionClosed:
            pass
        finally:
            bus.detach(client, reason=f"closed ({connection.close_code})")

