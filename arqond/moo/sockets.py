"""One connection to a Zgent socket (MOO_DIR/NAME.sock): JSON lines in, JSON lines out."""

from __future__ import annotations

import asyncio
import select
from typing import TYPE_CHECKING, Any

from arqond.core import jsonrpc
from arqond.core.clients import Client
from arqond.core.framing import LineFramer, too_long
from arqond.unix import peer_credentials

if TYPE_CHECKING:
    from arqond.moo.layer import MooLayer

NOTIFY_METHOD = "arqon.message"


class ZgentConnection(asyncio.Protocol):
    """Lines go to the MOO layer; everything written back is bounded by ``buffer_limit``.

    A client whose unsent replies pass the bound (it floods without reading) is cut off and
    counted, so it can only hurt itself.
    """

    def __init__(self, layer: "MooLayer", zgent_id: str) -> None:
        self.layer = layer
        self.zgent_id = zgent_id
        self.transport: asyncio.Transport | None = None
        self.framer = LineFramer(layer.config.moo.max_line_bytes)
        self.uid = self.gid = self.pid = -1
        self.serving = False
        self.client: Client | None = None   # bus client, once it sends an envelope/subscribes
        self.wrap = False                   # bus frames go out as arqon.message notifications
        self.read_closed = False
        self.open = True

    @property
    def peer(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pid, self.uid, self.gid = peer_credentials(transport.get_extra_info("socket"))
        self.layer.socket_connected(self)

    def data_received(self, data: bytes) -> None:
        for line in self.framer.feed(data):
            if not self.open:
                return
            if line.cut:
                self.layer.socket_refused(self, too_long(self.framer.max_bytes))
            else:
                self.layer.socket_line(self, line.data)

    def eof_received(self) -> bool:
        # The client may half-close after its last request (socat does): answer first.
        last = self.framer.finish()
        if last is not None and last.cut:
            self.layer.socket_refused(self, too_long(self.framer.max_bytes))
        elif last is not None and last.data.strip():
            self.layer.socket_line(self, last.data)  # a last line without its newline is whole
        self.read_closed = True
        self.finish_if_done()
        return True

    def finish_if_done(self) -> None:
        """Close once a half-closed client has nothing more coming to it; a handler that
        half-closes can send no more replies, so it is done at once."""
        if self.read_closed and self.open and (self.serving or not self.layer.expecting(self)):
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.layer.socket_gone(self)

    def write_frame(self, data: bytes) -> bool:
        """Queue bytes; False (and the connection cut) when the client is too far behind."""
        if not self.open or self.transport.is_closing():
            return True
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > self.layer.config.moo.client_buffer_bytes:
            self.layer.socket_too_slow(self)
            return False
        return True

    def write(self, obj: dict[str, Any]) -> None:
        self.write_frame(jsonrpc.line(obj))

    def offer(self, obj: dict[str, Any]) -> bool:
        """Write a reply that must not be lost (a mailbox message): True only when a peer that
        is still there took it into its socket. False, with nothing written, when the peer has
        hung up (a client that half-closed after its request still reads, so only a full
        hang-up counts), the write failed, or the reply would push the client past its bound.
        """
        transport = self.transport
        if not self.open or transport is None or transport.is_closing() or self._hung_up():
            return False
        data = jsonrpc.line(obj)
        if transport.get_write_buffer_size() + len(data) > \
                self.layer.config.moo.client_buffer_bytes:
            return False
        transport.write(data)
        # A failed send(2) (EPIPE) closes the transport at once, inside write().
        return not transport.is_closing()

    def _hung_up(self) -> bool:
        """Whether the peer closed both directions: once its end of file has been read, the
        loop no longer watches the socket, so only poll(2) can tell."""
        poller = select.poll()
        poller.register(self.transport.get_extra_info("socket").fileno(), select.POLLOUT)
        return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))

    def close(self) -> None:
        """Drop the connection now, unsent output included (a client cut off)."""
        if self.transport is not None:
            self.transport.abort()

    def end(self) -> None:
        """Close after what is queued has been sent."""
        if self.transport is not None:
            self.transport.close()


class SocketSink:
    """The bus's view of a Zgent socket connection: one envelope per line."""

    __slots__ = ("connection",)

    def __init__(self, connection: ZgentConnection) -> None:
        self.connection = connection

    def send(self, frame: bytes) -> bool:
        if self.connection.wrap:
            frame = b'{"jsonrpc":"2.0","method":"%s","params":%s}' % (
                NOTIFY_METHOD.encode(), frame)
        return self.connection.write_frame(frame + b"\n")

    def close(self, code: int, reason: str) -> None:
        self.connection.close()

    def buffered(self) -> int:
        transport = self.connection.transport
        return transport.get_write_buffer_size() if transport is not None else 0
