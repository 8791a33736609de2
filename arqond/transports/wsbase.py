"""What the WebSocket listeners (bus and telemetry) share: the non-blocking sink and the
handshake checks (JWT, connection limit) with their JSON refusals."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response
from websockets.protocol import State

from arqond.config import Config
from arqond.core.auth import AuthError, authenticate
from arqond.system.journal import log_event


class WebSocketSink:
    """Writes straight into the connection's transport buffer, as websockets.broadcast does.

    The transport buffer is the client's outgoing queue; ``limit`` bounds it in bytes. Nothing
    here awaits, so a fan-out loop over thousands of sinks never waits on any one client.
    """

    __slots__ = ("connection", "limit", "closing")

    def __init__(self, connection: ServerConnection, limit: int) -> None:
        self.connection = connection
        self.limit = limit
        self.closing: asyncio.Task[None] | None = None

    def send(self, frame: bytes) -> bool:
        connection = self.connection
        if connection.protocol.state is not State.OPEN:
            return True  # closing already: the frame has nowhere to go and nobody to blame
        if connection.transport.get_write_buffer_size() > self.limit:
            return False
        connection.protocol.send_text(frame)
        connection.send_data()
        return True

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
    """
    query = dict(parse_qsl(urlsplit(request.path).query))
    claims: dict[str, Any] = {}
    auth = config.auth
    if auth.enabled:
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


def peer_of(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address or "unix")
