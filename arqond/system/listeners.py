"""Listening sockets: bound by arqond itself (socket activation takes them from systemd)."""

from __future__ import annotations

import errno
import os
import socket
import stat

LISTEN_BACKLOG = 4096


class ListenerError(Exception):
    pass


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


def bind_unix(path: str, mode: int = 0o660) -> socket.socket:
    """Listen on a Unix socket path.

    A stale socket file there (left by a crash) is replaced; a socket someone still answers on,
    or anything that is not a socket, is refused rather than stolen.
    """
    try:
        if os.path.exists(path) or os.path.islink(path):
            info = os.lstat(path)
            if not stat.S_ISSOCK(info.st_mode):
                raise ListenerError(f"{path} exists and is not a socket; refusing to replace it")
            if socket_in_use(path):
                raise ListenerError(f"{path} is in use by another process; refusing to take it")
            os.unlink(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    except OSError as exc:
        raise ListenerError(f"cannot prepare {path}: {exc.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot listen on {path}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def socket_in_use(path: str) -> bool:
    """Whether some process still accepts connections on the Unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except OSError as exc:
        # A full backlog (EAGAIN) still means a listener; refused or gone means stale.
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True


def describe(sock: socket.socket) -> str:
    address = sock.getsockname()
    if isinstance(address, tuple):
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        return f"{host}:{address[1]}"
    return address.decode(errors="replace") if isinstance(address, bytes) else address
