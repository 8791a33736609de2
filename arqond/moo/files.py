"""The files arqond owns: FIFOs and sockets in the MOO dir, atomically replaced JSON files,
and the append-only records of the state dir (mailboxes, narrative checkpoints).

Anything found where one of them belongs that is not of the right kind (a regular file, a
symlink, a directory, a socket someone is still listening on) is refused, never touched.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat
from typing import Any, Callable

from arqond.log import log_event
from arqond.unix import ListenerError, NotOurs, bind_unix

log = logging.getLogger("arqond.moo")

# Pipe capacity asked for each inbox. Linux writes a whole write() into a pipe in one go while
# there is room, so with arqond draining it, lines up to this size from concurrent writers stay
# whole (POSIX promises it only up to PIPE_BUF, 4096 bytes).
PIPE_SIZE = 1 << 20


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISLNK, "a symlink"), (stat.S_ISREG, "a regular file"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "a device or other special file"


def _existing(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def set_owner_mode(fd: int, mode: int, gid: int | None) -> None:
    """Mode and group of the file open at ``fd``: through the descriptor, so they land on the
    file arqond opened and checked, never on whatever a path leads to by then."""
    os.fchmod(fd, mode)
    # Skipped when the setgid MOO dir already gave the group: chown is a privileged-ish call.
    if gid is not None and os.fstat(fd).st_gid != gid:
        os.fchown(fd, -1, gid)


def open_fifo(path: str, gid: int | None, inherited: int | None = None) -> int:
    """Open the inbox FIFO at ``path`` for reading, creating it if needed.

    A FIFO left there (a crash, or systemd's fd store across a restart)
    is taken over with its mode and group reset, so writers already blocked in open() on it
    get through. ``inherited`` is a read fd from the fd store, used when it is that FIFO.
    """
    info = _existing(path)
    if info is not None and not stat.S_ISFIFO(info.st_mode):
        if inherited is not None:
            os.close(inherited)
        raise NotOurs(f"{path} is {_kind(info.st_mode)}, not a FIFO; refusing to touch it")
    if info is None:
        os.mkfifo(path, 0o660)
    fd = None
    if inherited is not None:
        held = os.fstat(inherited)
        if info is not None and (held.st_dev, held.st_ino) == (info.st_dev, info.st_ino):
            os.set_blocking(inherited, False)
            fd = inherited
        else:
            os.close(inherited)
    if fd is None:
        fd = open_fifo_reader(path)
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size for this user: keep the default 64 KiB
    try:
        set_owner_mode(fd, 0o660, gid)
    except OSError:
        os.close(fd)
        raise
    return fd


def open_fifo_reader(path: str) -> int:
    # Read-only, not O_RDWR: when the last writer closes, read() returns 0 and a line left
    # unfinished can be dropped instead of being glued to the next writer's line.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotOurs(f"{path} was replaced by something that is not a FIFO")
    return fd


def listen_socket(path: str, gid: int | None, inherited: int | None = None) -> socket.socket:
    """A listening Unix socket at ``path`` (mode 0660); a stale one left by a crash is replaced,
    one that something still listens on is refused."""
    if inherited is not None:
        sock = socket.socket(fileno=inherited)
        info = _existing(path)
        if info is not None and stat.S_ISSOCK(info.st_mode) and sock.getsockname() == path:
            sock.setblocking(False)
            return sock
        sock.close()
    info = _existing(path)
    if info is not None and not stat.S_ISSOCK(info.st_mode):
        raise NotOurs(f"{path} is {_kind(info.st_mode)}, not a socket; refusing to touch it")
    try:
        sock = bind_unix(path, 0o660)
    except ListenerError as exc:
        raise NotOurs(str(exc)) from None
    # Through the path: fchown on a socket's descriptor changes the socket, not its file. Safe
    # because the MOO dir is one others cannot write (checked at start, arqond/system/dirs.py),
    # so the name is still the socket just bound; and it follows no symbolic link anyway.
    try:
        if gid is not None and os.lstat(path).st_gid != gid:
            os.chown(path, -1, gid, follow_symlinks=False)
    except OSError:
        sock.close()
        raise
    return sock


def remove_if(path: str, test) -> None:
    """Unlink ``path`` if it is still of the kind arqond made (``stat.S_ISSOCK``...)."""
    info = _existing(path)
    if info is not None and test(info.st_mode):
        os.unlink(path)


def read_or_set_aside(path: str, what: str, check: Callable[[bytes], Any]) -> Any:
    """``check`` of a file arqond wrote earlier, or None when there is none; one that cannot
    be read or fails ``check`` (OSError, ValueError) is renamed to PATH.bad and logged."""
    try:
        with open(path, "rb") as handle:
            return check(handle.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        try:
            os.replace(path, path + ".bad")
        except OSError as move:
            reason += f"; cannot set it aside: {move.strerror}"
        log_event(log, logging.WARNING, "registry_corrupt",
                  f"{path}: unusable {what} ({reason}); kept as {path}.bad and rebuilt",
                  path=path)
        return None


def write_atomically(path: str, data: bytes, mode: int, gid: int | None) -> None:
    """Temp file in the same dir, fsync, rename: readers see the old or the new file, whole."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 mode)
    try:
        os.write(fd, data)
        set_owner_mode(fd, mode, gid)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class AppendFile:
    """A file of whole records, written by appending and replaced whole when it is rewritten
    (temporary file, rename: a reader sees the old file or the new one).

    A record cut short (the disk filled up mid-write) is never appended to: the fd is closed
    and OSError raised, so the torn record stays last in the file, where readers skip it.
    Every method raises OSError when the disk refuses. No fsync except in ``sync``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.size = 0

    def append(self, data: bytes) -> None:
        written = os.write(self.fd, data)
        self.size += written
        if written < len(data):
            self.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def replace(self, data: bytes) -> None:
        temporary = f"{self.path}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                     | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            if os.write(fd, data) < len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.rename(temporary, self.path)
        except BaseException:
            os.close(fd)
            raise
        self.close()
        self.fd = fd
        self.size = len(data)

    def truncate(self) -> None:
        os.ftruncate(self.fd, 0)
        self.size = 0

    def sync(self) -> None:
        """File and directory to disk: for start and stop, never on a hot path."""
        os.fsync(self.fd)
        directory = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
