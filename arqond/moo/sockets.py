"""One connection to a Zgent socket (MOO_DIR/NAME.sock): bytes between the socket and its
Session (arqond/core/moo/session.py), which decides everything else."""

from __future__ import annotations

import asyncio
import select
from typing import Callable

from arqond.core.moo.session import Link, Session
from arqond.unix import Peer, peer_credentials

# Builds the session of a new connection, given the peer and the link to it.
OpenSession = Callable[[Peer, Link], Session]


class ZgentConnection(asyncio.Protocol):
    """The asyncio side of one connection, and the session's Link."""

    def __init__(self, open_session: OpenSession) -> None:
        self.open_session = open_session
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.session = self.open_session(
            peer_credentials(transport.get_extra_info("socket")), self)

    def data_received(self, data: bytes) -> None:
        self.session.receive_data(data)

    def eof_received(self) -> bool:
        self.session.receive_eof()
        return True  # keep the writing side open: answers may still be due

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.lost()

    # -- the Link --------------------------------------------------------------------------

    def queue(self, data: bytes) -> int:
        # The session writes nothing once it closed the link itself.
        transport = self.transport
        transport.write(data)
        # A failed send(2) (EPIPE) closes the transport at once, inside write().
        return -1 if transport.is_closing() else transport.get_write_buffer_size()

    def queued(self) -> int:
        return self.transport.get_write_buffer_size()

    def hung_up(self) -> bool:
        """Closing, or the peer closed both directions: once its end of file has been read,
        the loop no longer watches the socket, so only poll(2) can tell."""
        if self.transport.is_closing():
            return True
        poller = select.poll()
        poller.register(self.transport.get_extra_info("socket").fileno(), select.POLLOUT)
        return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()
