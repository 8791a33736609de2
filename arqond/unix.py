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


class NotOurs(Exception):
    """A path arqond must not touch; the text says what was found there."""


def remove_socket_file(path: str) -> None:
    """Remove the socket file arqond bound at ``path`` (at stop), and nothing else there."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
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
        chmod_socket(path, mode)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot listen on {path}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def chmod_socket(path: str, mode: int) -> None:
    """The mode of the socket file just bound at ``path``.

    Through the path: fchmod on a socket's descriptor changes the socket, not its file. Safe
    in the directories arqond binds in, which others cannot write (the MOO dir is checked at
    start, /run/arqond is arqond's), so the name is still that socket; and without following
    a symbolic link in any case (glibc refuses to chmod one: ELOOP here).
    """
    try:
        os.chmod(path, mode, follow_symlinks=False)
    except NotImplementedError:
        raise OSError(errno.ELOOP, f"{path} is a symbolic link") from None


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


def user_name(uid: int) -> str:
    """The name of user ``uid``, or the number when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    """The name of group ``gid``, or the number when it has none."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# -- who is at the other end of a loopback TCP connection -----------------------------------

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NO_COOKIE = 0xFFFFFFFF
_HEADER = struct.Struct("=IHHII")          # struct nlmsghdr
_REQUEST = struct.Struct("=BBBBI")         # struct inet_diag_req_v2 up to its sockid
_UID_AT = _HEADER.size + 4 + 48 + 12       # inet_diag_msg: ..., sockid, expires, rq, wq, uid


class PeerUnknowable(Exception):
    """This process cannot ask the kernel who a TCP peer is (no AF_NETLINK, say)."""


def tcp_peer_uid(sock: socket.socket) -> int | None:
    """The uid the kernel recorded for the socket at the other end of a TCP connection, when
    that socket is on this host (a loopback peer); None otherwise.

    The same fact `ss -e` shows, asked for one socket through NETLINK_SOCK_DIAG: the peer's
    socket is looked up by its exact address pair, so only a socket of this host can match,
    and its uid is the one its creating process had, which it cannot forge.
    """
    local, remote = sock.getsockname(), sock.getpeername()
    family = sock.family
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None

    def address(host: str) -> bytes:
        packed = socket.inet_pton(family, host)
        return packed + bytes(16 - len(packed))

    # The peer's socket: its source is the remote end, its destination our end.
    sockid = (struct.pack("!HH", remote[1], local[1]) + address(remote[0]) + address(local[0])
              + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE))
    request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, _NO_COOKIE) + sockid
    message = _HEADER.pack(_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST,
                           1, 0) + request
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as diag:
            diag.sendto(message, (0, 0))
            reply = diag.recv(4096)
    except OSError as exc:
        raise PeerUnknowable(f"the kernel's socket table cannot be asked ({exc.strerror})") \
            from None
    _, kind, _, _, _ = _HEADER.unpack_from(reply)
    if kind != _SOCK_DIAG_BY_FAMILY or len(reply) < _UID_AT + 4:
        return None  # NLMSG_ERROR: no such socket here (a remote peer)
    return struct.unpack_from("=I", reply, _UID_AT)[0]
