"""The Python client library: ArqonBusClient, the ArqonBus SDK's client with arqond's extras.

Code written for ArqonBus imports it as ``arqonbus.sdk``; ``arqonbus.sdk.client`` is this very
module, so what such code's tests patch there (``websockets.connect``, or ``websockets`` itself)
is what ``connect`` calls. ``connect``, ``close``, ``async with``, ``connected``, ``send_json``
and ``recv_json`` behave as the ArqonBus SDK's do, down to the error classes and texts
(docs/compat-sdk.md lists each behaviour and the few deliberate differences). ``join``,
``leave``, ``publish``, ``command`` and ``async for`` are the conveniences on top; while
``command`` waits for its response, frames that arrive meanwhile are kept (up to a bound) and
returned by later ``recv_json`` calls, so nothing is lost.

Channels joined with ``join`` are durable streams the client follows: it remembers, per
channel, the (seq, epoch) of the last message ``recv_json`` returned (``positions``), and every
new connection (``connect`` again, or by itself with ``reconnect=True`` when arqond goes away)
joins them again from there, so the program gets every message it missed, once, in order.
Whether a resume got everything is in ``resumes`` and told to ``on_resume``.

ControlSocketClient is the same client over arqond's local control socket, BusSocketClient
over its local bus socket. ``local_client`` finds the local arqond the way the ``arqon``
command does, from the daemon's own configuration file; ``local_bus_client`` the way a
long-lived local agent should (the bus socket, where the kernel says who it is).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.parse
from collections import deque
from typing import Any, AsyncIterator, Callable, Mapping, NamedTuple, Protocol

import websockets
# Bound at import: tests of ArqonBus code replace this module's ``websockets`` wholesale.
from websockets.exceptions import ConnectionClosed

from arqond import config as configuration
from arqond.core.envelope import IdGenerator
from arqond.unix import group_name

log = logging.getLogger("arqond.sdk")

PENDING_LIMIT = 10000
# reconnect=True: the first try at once, then after this long, twice as long after each
# failure, up to RECONNECT_MAX.
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 30.0
# Longest line accepted from the control socket (a history answer can be large).
CONTROL_LINE_LIMIT = 1 << 28

NOT_CONNECTED = "Client is not connected"
# Why a socket of arqond is missing, or nobody answers on it.
NOT_LISTENING = "arqond is not running, or its configuration names another socket"
TIMED_OUT = "Timed out waiting for message"


class ArqonBusSDKError(Exception):
    """Base of every error the client raises."""


class ArqonBusConnectionError(ArqonBusSDKError):
    """Connecting, sending or receiving failed, or a receive timed out."""


class ArqonBusProtocolError(ArqonBusSDKError):
    """A frame arrived that is not a JSON object, or too many frames arrived while a
    command waited for its response."""


class ConnectionLost(ArqonBusConnectionError):
    """The connection was closed (arqond stopped or restarted): what ``reconnect=True``
    recovers from. Its text is ArqonBus's ("Receive failed: ...")."""


class CommandFailed(ArqonBusSDKError):
    """A command answered with status "error"; ``response`` holds the whole frame."""

    def __init__(self, response: dict[str, Any]) -> None:
        super().__init__(f"{response.get('error_code')}: {response.get('error')}")
        self.response = response


class Position(NamedTuple):
    """Where a client stands in a channel's stream: the last message it has, as its
    ``metadata.seq`` and ``metadata.epoch`` say."""

    seq: int
    epoch: str


# on_resume(target, resume): a joined channel was resumed; ``resume`` is join_channel's
# {"recovered", "reason", "epoch", "earliest_seq", "last_seq"}.
ResumeListener = Callable[[str, dict[str, Any]], None]


class FrameConnection(Protocol):
    """What the client uses of a connection: a websockets ClientConnection, or the control
    socket's lines behind the same three calls."""

    async def send(self, message: str) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self) -> None: ...


class ArqonBusClient:
    def __init__(self, ws_url: str, *, jwt_token: str | None = None,
                 headers: Mapping[str, str] | None = None, connect_timeout: float = 5.0,
                 screen_name: str | None = None, reconnect: bool = False,
                 on_resume: ResumeListener | None = None) -> None:
        self.ws_url = ws_url
        self.jwt_token = jwt_token
        self.headers = dict(headers or {})
        self.connect_timeout = connect_timeout
        # Who the client says it is: arqond shows it, and uses it as a broadcast's "from".
        self.screen_name = screen_name
        # Whether recv_json connects again by itself when arqond closes the connection
        # (ArqonBus's SDK raises instead, as this one does without it).
        self.reconnect = reconnect
        self.on_resume = on_resume
        self.client_id: str | None = None
        # Each channel joined with join() ("room:channel"): the last message recv_json
        # returned from it, or where its stream stood when joined; None for a wildcard.
        self.positions: dict[str, Position | None] = {}
        # The last resume of each channel: join_channel's data.resume.
        self.resumes: dict[str, dict[str, Any]] = {}
        self._websocket: FrameConnection | None = None  # the attribute name ArqonBus's SDK uses
        self._pending: deque[dict[str, Any]] = deque()
        self._ids = IdGenerator()
        # Messages published on joined channels, by id, until acknowledged: an ack moves
        # the position past one's own message, which arqond never sends back to its sender.
        self._published: dict[str, str] = {}

    @property
    def connected(self) -> bool:
        """Whether a connection is held; as in ArqonBus, still true after the server closed it
        until ``close``."""
        return self._websocket is not None

    def _connection_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.jwt_token:
            headers["Authorization"] = f"Bearer {self.jwt_token}"
        return headers

    async def _open(self) -> FrameConnection:
        try:
            # Exactly these arguments: ArqonBus SDK tests replace connect with a function
            # that takes only them.
            return await websockets.connect(self._identified_url(),
                                            additional_headers=self._connection_headers(),
                                            open_timeout=self.connect_timeout)
        except Exception as exc:
            raise ArqonBusConnectionError(f"Failed to connect to {self.ws_url}: {exc}") from exc

    def _identified_url(self) -> str:
        """The URL with ``screen_name`` in its query (ArqonBus's way), unless it has one."""
        parts = urllib.parse.urlsplit(self.ws_url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if self.screen_name is None or any(key == "screen_name" for key, _ in query):
            return self.ws_url
        query.append(("screen_name", self.screen_name))
        return parts._replace(query=urllib.parse.urlencode(query)).geturl()

    async def connect(self) -> None:
        """Open a connection. On a connected client the new one replaces the old, which is
        closed once the new one is open (ArqonBus's SDK leaves it open, unreachable); when
        connecting fails, the old one stays in use. The channels joined with ``join`` are
        joined again, each resumed after the last message ``recv_json`` returned from it."""
        connection = await self._open()
        await self._drop()
        self._websocket = connection
        self.client_id = None  # the new welcome frame sets it
        await self._introduce()
        for target, position in list(self.positions.items()):
            await self.join(target, since=position)

    async def _introduce(self) -> None:
        """What a new connection says first (over a socket, who it is)."""

    async def _drop(self) -> None:
        if self._websocket is None:
            return
        await self._websocket.close()
        self._websocket = None
        self._pending.clear()  # frames of the old connection are no answer on a new one
        self._published.clear()

    async def close(self) -> None:
        """Close the connection, and forget the channels joined: a client connected again
        after ``close`` starts afresh. Closing a closed client does nothing."""
        await self._drop()
        self.positions.clear()
        self.resumes.clear()

    async def __aenter__(self) -> "ArqonBusClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def _require(self) -> FrameConnection:
        if self._websocket is None:
            raise ArqonBusConnectionError(NOT_CONNECTED)
        return self._websocket

    async def send_json(self, message: Mapping[str, Any]) -> None:
        """Send ``dict(message)`` as one JSON text frame, unchanged (no envelope filling).

        Whatever fails, a value that is not a mapping or not JSON included, is an
        ArqonBusConnectionError "Send failed: ...", and nothing is sent.
        """
        connection = self._require()
        try:
            await connection.send(json.dumps(dict(message)))
        except Exception as exc:
            raise ArqonBusConnectionError(f"Send failed: {exc}") from exc

    async def _read(self, timeout: float | None) -> dict[str, Any]:
        """The next frame from the connection; ``timeout`` as asyncio.wait_for takes it (None
        waits, 0 or less times out at once)."""
        connection = self._require()
        try:
            frame = json.loads(await asyncio.wait_for(connection.recv(), timeout))
        except TimeoutError as exc:
            raise ArqonBusConnectionError(TIMED_OUT) from exc
        except json.JSONDecodeError as exc:
            raise ArqonBusProtocolError(f"Invalid JSON payload: {exc}") from exc
        except ArqonBusSDKError:
            raise
        except ConnectionClosed as exc:
            raise ConnectionLost(f"Receive failed: {exc}") from exc
        except Exception as exc:  # a second concurrent receive, bad bytes
            raise ArqonBusConnectionError(f"Receive failed: {exc}") from exc
        if not isinstance(frame, dict):
            raise ArqonBusProtocolError("Received non-object JSON payload")
        payload = frame.get("payload")
        if self.client_id is None and isinstance(payload, dict) and "welcome" in payload:
            self.client_id = payload.get("client_id")
        return frame

    async def recv_json(self, timeout: float | None = None) -> dict[str, Any]:
        """The next frame, a JSON object. As in ArqonBus, a ``timeout`` of None or 0 waits
        for as long as it takes. With ``reconnect``, a connection arqond closed is opened
        again (for as long as that takes: ``timeout`` bounds each wait for a frame), its
        channels resumed, and the next frame is one of the new connection."""
        self._require()
        while True:
            if self._pending:
                return self._returned(self._pending.popleft())
            try:
                return self._returned(await self._read(timeout or None))
            except ConnectionLost as lost:
                if not self.reconnect:
                    raise
                await self._connect_again(lost)

    def _returned(self, frame: dict[str, Any]) -> dict[str, Any]:
        """``frame``, on its way to the program: a message of a joined channel (or the ack
        of one's own) moves the channel's position to it."""
        if not self.positions:
            return frame
        kind = frame.get("type")
        if kind == "message_response":
            target = self._published.pop(frame.get("id"), None)
        elif kind == "error":       # one's own message refused: it is in no stream
            self._published.pop(frame.get("request_id"), None)
            return frame
        elif kind == "private":     # to this client alone: in no stream, whatever it says
            return frame
        else:
            target = f"{frame.get('room')}:{frame.get('channel')}"
        metadata = frame.get("metadata")
        if target in self.positions and isinstance(metadata, dict) and \
                isinstance(metadata.get("seq"), int) and isinstance(metadata.get("epoch"), str):
            self.positions[target] = Position(metadata["seq"], metadata["epoch"])
        return frame

    async def _connect_again(self, lost: ConnectionLost) -> None:
        """arqond closed the connection (it stopped or restarted): connect until it is back,
        at once, then waiting longer after each failure."""
        log.info("%s; connecting again", lost)
        delay = RECONNECT_FIRST
        while True:
            try:
                await self.connect()
                return
            except ArqonBusConnectionError as exc:
                log.warning("%s; trying again in %gs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                yield await self.recv_json()
            except ArqonBusConnectionError:
                return

    async def command(self, name: str, args: Mapping[str, Any] | None = None, *,
                      timeout: float = 10.0, check: bool = True) -> dict[str, Any]:
        """Send a command and return its ``response`` frame (its data in payload.data)."""
        request_id = self._ids.next()
        await self.send_json({"type": "command", "id": request_id, "command": name,
                              "args": dict(args or {})})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        response = None
        while True:
            frame = await self._read(max(0.0, deadline - loop.time()))
            if frame.get("request_id") == request_id and frame.get("type") in (
                    "response", "error"):
                response = frame
                if frame["type"] == "error":
                    break
            elif frame.get("type") == "command_response" and frame.get("id") == request_id:
                break  # the legacy ack always follows the response
            elif len(self._pending) < PENDING_LIMIT:
                self._pending.append(frame)
            else:
                raise ArqonBusProtocolError(
                    f"more than {PENDING_LIMIT} frames arrived while waiting for {name}")
        if check and (response is None or response.get("status") == "error"
                      or response.get("type") == "error"):
            raise CommandFailed(response or {"error": "no response", "error_code": "NO_RESPONSE"})
        return response

    async def join(self, target: str,
                   since: Position | tuple[int, str] | None = None) -> dict[str, Any]:
        """Join "room:channel" (``*`` wildcards allowed); returns the command's data.

        With ``since``, the (seq, epoch) of the last message of the channel the program has,
        every message after it comes first, then the live ones; ``data["resume"]`` (also in
        ``resumes`` and told to ``on_resume``) says whether that is all that was missed. The
        channel is then resumed on every new connection."""
        arguments: dict[str, Any] = {"room": target}
        if since is not None:
            arguments["since"] = {"seq": since[0], "epoch": since[1]}
        data = (await self.command("join_channel", arguments))["payload"]["data"]
        joined = f"{data['room']}:{data['channel']}"
        stream = data.get("stream")     # none for a wildcard, which has no one stream
        if since is not None:
            self.positions[joined] = Position(*since)
        elif stream is not None:        # every message after this one comes live
            self.positions[joined] = Position(stream["last_seq"], stream["epoch"])
        else:
            self.positions[joined] = None
        resume = data.get("resume")
        if resume is not None:
            self.resumes[joined] = resume
            if self.on_resume is not None:
                self.on_resume(joined, resume)
        return data

    async def leave(self, target: str) -> dict[str, Any]:
        data = (await self.command("leave_channel", {"room": target}))["payload"]["data"]
        self.positions.pop(f"{data['room']}:{data['channel']}", None)
        return data

    async def publish(self, target: str, payload: Any, *, kind: str = "message",
                      metadata: Mapping[str, Any] | None = None) -> str:
        """Send a message to "room:channel" (or "room" for the whole room); returns its id."""
        message_id = self._ids.next()
        if target in self.positions:
            if len(self._published) >= PENDING_LIMIT:   # acks nobody reads: the oldest go
                del self._published[next(iter(self._published))]
            self._published[message_id] = target
        frame: dict[str, Any] = {"type": kind, "id": message_id, "room": target,
                                 "payload": payload}
        if metadata:
            frame["metadata"] = dict(metadata)
        await self.send_json(frame)
        return message_id


def may_connect(path: str) -> bool:
    """Whether this user may connect to the Unix socket at ``path``, as access(2) says.

    access(2) rather than a trial connect: it makes the very check connect(2) makes for this
    user (write permission on the socket file, search on its directories), without a
    connection the daemon would have to accept and drop, and without starting arqond through
    socket activation just to ask. A socket nobody listens on shows when the client connects
    (ECONNREFUSED), with the error that says so.
    """
    return os.access(path, os.W_OK)


def join_group_hint(path: str) -> str:
    """What lets this user open ``path``, which the system refused (EACCES): joining the
    file's group, which arqond makes server.admin_group for the control socket and moo.group
    for the inbox FIFOs and Zgent sockets (or its own, when that group does not exist)."""
    try:
        group = group_name(os.stat(path).st_gid)
    except OSError:
        return f"this user may not enter {os.path.dirname(path)}"
    return f"members of group {group} may: sudo usermod -aG {group} $USER"


def _unix_connect_error(path: str, exc: OSError) -> ArqonBusConnectionError:
    """Why connecting to arqond's socket at ``path`` failed, and what to do about it."""
    if isinstance(exc, PermissionError):
        hint = f" ({join_group_hint(path)})"
    elif isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
        hint = f" ({NOT_LISTENING})"
    else:
        hint = ""
    return ArqonBusConnectionError(f"Failed to connect to {path}: {exc.strerror or exc}{hint}")


class _ControlConnection:
    """arqond's control socket (one JSON object per line) behind a WebSocket's send, recv
    and close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def send(self, message: str) -> None:
        self._writer.write(message.encode() + b"\n")
        await self._writer.drain()

    async def recv(self) -> bytes:
        line = await self._reader.readline()  # ValueError for a line over CONTROL_LINE_LIMIT
        if not line:
            raise ConnectionLost("Connection closed by arqond")
        return line

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass  # already gone: nothing left to close


class ControlSocketClient(ArqonBusClient):
    """The same client over arqond's local control socket.

    No JWT or headers: arqond reads who the peer is from the kernel.
    """

    def __init__(self, path: str, *, connect_timeout: float = 5.0,
                 screen_name: str | None = None) -> None:
        super().__init__(path, connect_timeout=connect_timeout, screen_name=screen_name)
        self.path = path

    async def _open(self) -> FrameConnection:
        try:
            return _ControlConnection(*await asyncio.wait_for(
                asyncio.open_unix_connection(self.path, limit=CONTROL_LINE_LIMIT),
                self.connect_timeout))
        except TimeoutError:
            raise ArqonBusConnectionError(f"Failed to connect to {self.path}: timed out") \
                from None
        except OSError as exc:
            raise _unix_connect_error(self.path, exc) from None

    async def _introduce(self) -> None:
        if self.screen_name is not None:  # a socket has no query string: the command says it
            await self.command("identify", {"screen_name": self.screen_name},
                               timeout=self.connect_timeout)


class BusSocketClient(ArqonBusClient):
    """The same client over arqond's local bus socket (``server.bus_socket``): the WebSocket
    protocol on a Unix socket, where the kernel says who the peer is, so no token is needed."""

    def __init__(self, path: str, *, connect_timeout: float = 5.0,
                 screen_name: str | None = None) -> None:
        # The URL is only the handshake's: host and path mean nothing on a Unix socket.
        super().__init__("ws://localhost/", connect_timeout=connect_timeout,
                         screen_name=screen_name)
        self.path = path

    async def _open(self) -> FrameConnection:
        try:
            return await websockets.unix_connect(self.path, self._identified_url(),
                                                 open_timeout=self.connect_timeout)
        except OSError as exc:
            raise _unix_connect_error(self.path, exc) from None
        except Exception as exc:
            raise ArqonBusConnectionError(f"Failed to connect to {self.path}: {exc}") from exc


# -- finding the local arqond ------------------------------------------------------------------

def local_config(path: str | None = None) -> configuration.Config:
    """arqond's configuration as its clients see it: ``path``, else ARQONBUS_CONFIG, else
    /etc/arqond/arqond.toml, with the ARQONBUS_* variables applied on top.

    A default file this user may not read (it may hold a JWT secret) counts as absent.
    """
    path = path or os.environ.get("ARQONBUS_CONFIG")
    if path is None and os.path.exists(configuration.DEFAULT_CONFIG_PATH) and \
            not os.access(configuration.DEFAULT_CONFIG_PATH, os.R_OK):
        path = os.devnull  # an empty document: the built-in defaults
    try:
        return configuration.load(path)
    except configuration.ConfigError as exc:
        raise ArqonBusSDKError(str(exc)) from None


def listener_url(config: configuration.Config, scheme: str, key: str,
                 instead: str = "the URL") -> str:
    """``scheme://host:port`` of the listener whose port is config key ``key``, as a local
    client reaches it (a wildcard address means this machine)."""
    port = config.get(key)
    if port == 0:
        raise ArqonBusSDKError(f"{config.path or 'the configuration'} sets {key} = 0 (a free "
                               f"port picked when arqond starts): give {instead}")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.server.host,
                                                                      config.server.host)
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def local_client(*, ws_url: str | None = None, control_socket: str | None = None,
                 config_path: str | None = None, jwt_token: str | None = None,
                 headers: Mapping[str, str] | None = None, connect_timeout: float = 5.0,
                 screen_name: str | None = None) -> ArqonBusClient:
    """A client of the local arqond, not yet connected, found as the ``arqon`` command finds it.

    ``ws_url`` (or ARQONBUS_WS_URL) wins; then ``control_socket``; then the first door of the
    configuration (``local_config(config_path)``) this user may open (``may_connect``): its
    control socket (root and server.admin_group), its bus socket (anyone local, known by the
    kernel), its WebSocket port. A token or headers go to the WebSocket port: no other door
    reads them.
    """
    url = ws_url or os.environ.get("ARQONBUS_WS_URL")
    if not url:
        path = control_socket
        if path is None:
            config = local_config(config_path)
            if may_connect(config.server.control_socket):
                path = config.server.control_socket
            elif not (jwt_token or headers):
                return local_bus_client(config=config, connect_timeout=connect_timeout,
                                        screen_name=screen_name)
            else:
                url = listener_url(config, "ws", "server.port",
                                   "the WebSocket URL (ARQONBUS_WS_URL)")
        if path is not None:
            return ControlSocketClient(path, connect_timeout=connect_timeout,
                                       screen_name=screen_name)
    return ArqonBusClient(url, jwt_token=jwt_token, headers=headers,
                          connect_timeout=connect_timeout, screen_name=screen_name)


def local_bus_client(*, ws_url: str | None = None, config_path: str | None = None,
                     jwt_token: str | None = None, connect_timeout: float = 5.0,
                     screen_name: str | None = None,
                     config: configuration.Config | None = None) -> ArqonBusClient:
    """A client of the local arqond, not yet connected, for a program that stays on the bus.

    ``ws_url`` (or ARQONBUS_WS_URL) wins; then the bus socket of the configuration
    (``config``, else ``local_config(config_path)``) when this user may connect to it; then
    the configuration's WebSocket port.
    """
    url = ws_url or os.environ.get("ARQONBUS_WS_URL")
    if not url:
        config = config or local_config(config_path)
        path = config.server.bus_socket
        if path and may_connect(path):
            return BusSocketClient(path, connect_timeout=connect_timeout,
                                   screen_name=screen_name)
        url = listener_url(config, "ws", "server.port", "the WebSocket URL (ARQONBUS_WS_URL)")
    return ArqonBusClient(url, jwt_token=jwt_token, connect_timeout=connect_timeout,
                          screen_name=screen_name)
