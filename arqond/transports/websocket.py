"""The WebSocket bus adapter: the handshake (principal, identity, connection limit) and frame
moving, on the TCP port and on the local bus socket (the same protocol over a Unix socket,
where the kernel says who the peer is)."""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref

from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from arqond.config import Config
from arqond.core.bus import Bus
from arqond.core.clients import identity_from_query
from arqond.core.errors import ErrorCode
from arqond.core.metrics import Sample, counter
from arqond.core.principal import Principal
from arqond.core.quotas import QuotaExceeded
from arqond.principals import PrincipalResolver
from arqond.transports.wsbase import (WebSocketSink, WriteBatcher, admit, on_unix_socket,
                                      peer_of, serve_websocket)
from arqond.unix import peer_credentials

log = logging.getLogger("arqond.ws")
# Seconds that handshakes already under way at shutdown get to finish (see stop()).
HANDSHAKE_GRACE = 1.0
HANDSHAKE_SETTLE = 0.05
CLOSE_POLICY_VIOLATION = 1008
MAX_CLOSE_REASON = 123  # bytes a close frame's reason may hold (RFC 6455 5.5)


class WebSocketAdapter:
    name = "ws"

    def __init__(self, bus: Bus, config: Config, socks: list[socket.socket],
                 principals: PrincipalResolver) -> None:
        self.bus = bus
        self.socks = socks
        self.config = config
        self.principals = principals
        self.servers: list[Server] = []
        # Handshake results handed from process_request to the handler; weak, because a
        # handshake can still fail after process_request and the handler then never runs.
        self._handshakes: weakref.WeakKeyDictionary[
            ServerConnection, tuple[Principal, dict[str, str]]] = weakref.WeakKeyDictionary()
        self.refused_total = 0
        self.batcher = WriteBatcher()  # one socket write per client per loop iteration

    def samples(self) -> list[Sample]:
        return [counter("arqonbus_ws_refused_total", "WebSocket handshakes refused (bad or "
                        "missing JWT, connection limit, malformed target).", self.refused_total)]

    def reload(self, config: Config) -> None:
        self.config = config

    async def start(self) -> None:
        for sock in self.socks:
            self.servers.append(await serve_websocket(self._handle, sock, self.config,
                                                      self._process_request))

    async def stop(self) -> None:
        await asyncio.gather(*(self._stop_server(server, sock)
                               for server, sock in zip(self.servers, self.socks)))

    async def _stop_server(self, server: Server, sock: socket.socket) -> None:
        # Stop accepting first, without closing the server: connects still in the kernel's
        # queue then wait for the next arqond (systemd keeps the listening socket), and the
        # handshakes already under way finish and are served before the 1001 close below,
        # where the library would answer them 503. The accept loop is the loop's reader on
        # the listening socket; sockets it accepted a moment ago get their connection objects
        # a few loop turns later, hence the short settle before looking for handshakes.
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        deadline = loop.time() + HANDSHAKE_GRACE
        await asyncio.sleep(HANDSHAKE_SETTLE)
        while any(c.protocol.state is State.CONNECTING for c in server.all_connections) \
                and loop.time() < deadline:
            await asyncio.sleep(0.01)
        server.close(close_connections=True)  # clients see 1001 going away
        await server.wait_closed()

    def _process_request(self, connection: ServerConnection,
                         request: Request) -> Response | None:
        refusal, claims, query = admit(connection, request, self.config, len(self.bus.clients),
                                       "WebSocket", log)
        if refusal is not None:
            self.refused_total += 1
            return refusal
        sock = connection.transport.get_extra_info("socket")
        if on_unix_socket(connection):
            principal = self.principals.unix(peer_credentials(sock))
        else:
            principal = self.principals.tcp(sock, claims, connection.remote_address[0])
        self._handshakes[connection] = (principal, identity_from_query(query))
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        principal, identity = self._handshakes.pop(connection)
        sink = WebSocketSink(connection, self.config.server.client_buffer_bytes,
                             self.batcher)
        bus = self.bus
        try:
            client = bus.attach(sink, "ws", principal, identity=identity,
                                peer=peer_of(connection))
        except QuotaExceeded as exc:
            await connection.close(CLOSE_POLICY_VIOLATION, str(exc)[:MAX_CLOSE_REASON])
            return
        receive = bus.receive
        try:
            async for message in connection:
                try:
                    if isinstance(message, str):
                        receive(client, message)
                    else:
                        bus.reject(client, ErrorCode.UNSUPPORTED_FRAME,
                                   "binary frames are not supported: send JSON in text frames")
                except Exception:  # noqa: BLE001 - never a 1011 close for one frame
                    bus.internal_error(self.name, "a frame", client)
        except ConnectionClosed:
            pass
        finally:
            bus.detach(client, reason=f"closed ({connection.close_code})")

