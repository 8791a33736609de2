"""Unix facts that several adapters need, each in one place: binding a listening Unix socket,
who is at the other end of one (SO_PEERCRED: the kernel's word, never the peer's), and which
groups a uid belongs to."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import stat
import struct
from typing import NamedTuple

LISTEN_BACKLOG = 4096
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ListenerError(Exception):
    pass


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


class Peer(NamedTuple):
    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid}"


def peer_credentials(sock: socket.socket) -> Peer:
    """The credentials the kernel recorded for the process that connected."""
    return Peer(*_UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                               _UCRED.size)))


def group_ids(uid: int, primary_gid: int) -> frozenset[int]:
    """``primary_gid`` and the supplementary groups of the user ``uid`` (read from the group
    database; a uid with no user name has only its primary group)."""
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        return frozenset((primary_gid,))
    return frozenset(os.getgrouplist(user, primary_gid))


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None
