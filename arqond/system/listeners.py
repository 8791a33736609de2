"""Listening sockets: bound by arqond itself (socket activation takes them from systemd)."""

from __future__ import annotations

import socket

from arqond.unix import LISTEN_BACKLOG, ListenerError

__all__ = ["ListenerError", "bind_tcp", "describe"]


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle off (TCP_NODELAY) only on accepted
    # sockets whose proto says TCP, and accepted sockets inherit it. With Nagle on, a lone frame
    # waits for the peer's delayed ACK: milliseconds per message at a steady trickle.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def describe(sock: socket.socket) -> str:
    address = sock.getsockname()
    if isinstance(address, tuple):
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        return f"{host}:{address[1]}"
    return address.decode(errors="replace") if isinstance(address, bytes) else address
