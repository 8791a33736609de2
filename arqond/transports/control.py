"""The control socket: the local admin door, one JSON envelope per line in each direction.

It speaks exactly the WebSocket's protocol (welcome frame, envelopes, commands), framed by
newlines instead of WebSocket frames. Who is an admin comes from the kernel: the peer's uid
read with SO_PEERCRED is root or belongs to ``server.admin_group``; nothing a peer writes
can change that.

Bounds, each counted on the adapter:
- an input line longer than ``server.max_message_size`` gets a ``LINE_TOO_LONG`` error line
  and the connection is closed (``oversize_total``);
- output waits in the transport buffer, at most ``server.client_buffer_bytes``; past that the
  Bus cuts the client off (the connection is dropped, as a stuck reader would never drain it);
- at ``server.max_connections`` clients a new peer gets one error line and is closed
  (``refused_total``).
A peer that shuts down its sending side gets the replies already produced, then the close,
so ``echo '{...}' | socat - UNIX-CONNECT:...`` prints its answer and exits.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from arqond.config import Config
from arqond.core.bus import Bus
from arqond.core.clients import CLOSE_SLOW_CONSUMER, Client
from arqond.core.envelope import SERVER_SENDER, now_iso, serialize
from arqond.core.errors import ErrorCode
from arqond.core.framing import Line, LineFramer, too_long
from arqond.core.metrics import Sample, counters_of, gauge
from arqond.core.quotas import QuotaExceeded
from arqond.log import log_event
from arqond.principals import PrincipalResolver
from arqond.unix import group_id, peer_credentials

log = logging.getLogger("arqond.control")


class ControlSink:
    """Writes into the connection's transport buffer without waiting; ``limit`` bounds it."""

    __slots__ = ("transport", "limit")

    def __init__(self, transport: asyncio.WriteTransport, limit: int) -> None:
        self.transport = transport
        self.limit = limit

    def send(self, frame: bytes) -> bool:
        transport = self.transport
        if transport.is_closing():
            return True  # closing already: the frame has nowhere to go and nobody to blame
        if transport.get_write_buffer_size() > self.limit:
            return False
        transport.writelines((frame, b"\n"))
        return True

    def close(self, code: int, reason: str) -> None:
        if code == CLOSE_SLOW_CONSUMER:
            self.transport.abort()  # flushing a full buffer would wait on the stuck reader
        else:
            self.transport.close()

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()


class ControlConnection(asyncio.Protocol):
    def __init__(self, adapter: "ControlAdapter") -> None:
        self.adapter = adapter
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.framer = LineFramer(adapter.config.server.max_message_size)
        # Past a line too long, or the peer's end of input: nothing more is read, and the
        # connection closes once the answers still due (acks of stored messages) are sent.
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        adapter = self.adapter
        server = adapter.config.server
        credentials = peer_credentials(transport.get_extra_info("socket"))
        peer = f"pid={credentials.pid},uid={credentials.uid}"
        if len(adapter.bus.clients) >= server.max_connections:
            adapter.refused_total += 1
            log_event(log, logging.WARNING, "connection_refused",
                      "control connection refused: server.max_connections reached", peer=peer)
            transport.write(_error_line(ErrorCode.CONNECTION_REFUSED, "connection limit reached"))
            transport.close()
            return
        # The group database is read once per connection, not per frame.
        try:
            self.client = adapter.bus.attach(
                ControlSink(transport, server.client_buffer_bytes), "control",
                adapter.principals.unix(credentials), peer=peer)
        except QuotaExceeded as exc:
            adapter.refused_total += 1
            transport.write(_error_line(ErrorCode.LIMIT_EXCEEDED, str(exc)))
            transport.close()
            return
        adapter.connections.add(self)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None or not client.open or self.closing:
            return
        framer = self.framer
        for line in framer.feed(data):
            self._guarded(line)
            if not client.open:
                return
        # Too long already, newline or not: no reason to read the rest of it.
        if framer.pending_length > framer.max_bytes:
            self._too_long()

    def _guarded(self, line: Line) -> None:
        """One line, whatever fails inside arqond while handling it: asyncio would close the
        connection for an exception out of data_received."""
        try:
            self._line(line)
        except Exception:  # noqa: BLE001 - one line's failure must not end the connection
            assert self.client is not None
            self.adapter.bus.internal_error(self.adapter.name, f"the line at byte {line.offset}",
                                            self.client)

    def _line(self, line: Line) -> None:
        if line.cut:
            self._too_long()
            return
        text = line.data.strip()
        if text:  # blank lines (a human pressing Enter) are not frames
            assert self.client is not None
            self.adapter.bus.receive(self.client, text)

    def _too_long(self) -> None:
        client, transport = self.client, self.transport
        assert client is not None and transport is not None
        self.adapter.oversize_total += 1
        self.closing = True

        def refuse() -> None:
            self.adapter.bus.reject(client, ErrorCode.LINE_TOO_LONG,
                                    f"{too_long(self.framer.max_bytes)} "
                                    "(server.max_message_size); closing the connection")
            self.adapter.bus.detach(client, reason="line too long")
            transport.close()
        self.adapter.bus.after_pending(refuse)

    def eof_received(self) -> bool:
        last = self.framer.finish()  # a last line without its newline still counts
        if last is not None and self.client is not None and self.client.open \
                and not self.closing:
            self._guarded(last)
        self.closing = True
        transport = self.transport
        assert transport is not None
        self.adapter.bus.after_pending(transport.close)   # once the replies are flushed
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.adapter.connections.discard(self)
        if self.client is not None:
            self.adapter.bus.detach(self.client, reason=f"closed ({exc or 'eof'})")


def _error_line(code: str, message: str) -> bytes:
    return serialize({"id": None, "timestamp": now_iso(), "type": "error",
                      "sender": SERVER_SENDER, "error": message, "error_code": code,
                      "payload": {"errors": [message]}}) + b"\n"


class ControlAdapter:
    name = "control"

    def __init__(self, bus: Bus, config: Config, sock: socket.socket,
                 principals: PrincipalResolver) -> None:
        self.bus = bus
        self.config = config
        self.principals = principals
        self.sock = sock
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[ControlConnection] = set()
        self.refused_total = 0
        self.oversize_total = 0

    def status(self) -> dict[str, Any]:
        return {"control": {"path": self.config.server.control_socket,
                            "connections": len(self.connections),
                            "refused": self.refused_total, "oversize": self.oversize_total}}

    def samples(self) -> list[Sample]:
        return [gauge("arqonbus_control_connections", "Control socket clients now.",
                      len(self.connections)),
                *counters_of(self, "arqonbus_control", {
                    "refused_total": "Control socket connections refused at "
                                     "server.max_connections.",
                    "oversize_total": "Control socket lines over server.max_message_size "
                                      "(answered with an error, then closed)."})]

    def reload(self, config: Config) -> None:
        self.config = config
        self._check_admin_group()

    def _check_admin_group(self) -> None:
        group = self.config.server.admin_group
        if group_id(group) is None:
            log.warning("admin group %r does not exist: only root is admin on the control "
                        "socket", group)

    async def start(self) -> None:
        self._check_admin_group()
        loop = asyncio.get_running_loop()
        self.server = await loop.create_unix_server(lambda: ControlConnection(self),
                                                    sock=self.sock)

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        await self.server.wait_closed()
