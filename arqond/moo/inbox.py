"""Reading one inbox FIFO on the event loop, framed on newlines."""

from __future__ import annotations

import asyncio
import ctypes
import os
from typing import Callable

from arqond.core.framing import LineFramer, too_long
from arqond.moo.files import open_fifo_reader

READ_CHUNK = 65536
# Reads per wake-up, so one busy inbox cannot keep the loop from everything else.
READS_PER_WAKEUP = 16

_libc = ctypes.CDLL(None, use_errno=True)
_tee = _libc.tee
_tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
_tee.restype = ctypes.c_ssize_t
SPLICE_F_NONBLOCK = 2


class Peeker:
    """Copies what a pipe holds without taking it out: tee(2) into a scratch pipe, read back.

    One serves every inbox: each copy is read back whole before the next one is made.
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def peek(self, fd: int) -> bytes:
        """Up to READ_CHUNK bytes from the front of pipe ``fd``; b"" when it is empty and
        has no writer left; BlockingIOError when it is empty."""
        copied = _tee(fd, self.write_fd, READ_CHUNK, SPLICE_F_NONBLOCK)
        if copied < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return os.read(self.read_fd, copied) if copied else b""

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class InboxReader:
    """Owns the read side of ``path``: lines go to ``on_line``, refusals to ``on_refused``.

    A whole line leaves the pipe only after ``on_line`` has handled it: the pipe's read end
    stays in systemd's fd store, so a line that a killed process had not finished with is
    still there for the next one (the few microseconds between handing a line on and taking
    it out are the one moment where a kill -9 makes it arrive twice; it is never lost). The
    start of a line whose newline has not been written yet is taken into memory at once.

    When the last writer closes, the kernel reports end of file: a line left without its
    newline is refused then, and a fresh read fd is opened before the old one is closed, so
    there is never a moment without a reader (writers neither block nor get SIGPIPE) and the
    pipe's buffered bytes, which belong to the pipe and not to the fd, are kept.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, path: str, fd: int, max_line: int,
                 peeker: Peeker, on_line: Callable[[bytes], None],
                 on_refused: Callable[[str, int], None],
                 on_error: Callable[[str], None]) -> None:
        self.loop = loop
        self.path = path
        self.fd = fd
        self.framer = LineFramer(max_line)
        self.peeker = peeker
        self.on_line = on_line
        self.on_refused = on_refused
        self.on_error = on_error
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            try:
                data = self.peeker.peek(self.fd)
            except BlockingIOError:
                return
            except OSError as exc:
                self.close()
                self.on_error(f"read failed: {exc.strerror}")
                return
            if not data:
                self._writers_gone()
                return
            self._take(data)
            if self.fd < 0:   # closed by a handler (the Zgent was unregistered)
                return

    def _take(self, data: bytes) -> None:
        start, last = 0, data.rfind(b"\n")
        while start <= last and self.fd >= 0:
            end = data.index(b"\n", start) + 1
            try:
                for line in self.framer.feed(data[start:end]):
                    if line.cut:
                        self.on_refused(too_long(self.framer.max_bytes), line.length)
                    else:
                        self.on_line(line.data)
            finally:
                self._consume(end - start)
            start = end
        if start < len(data) and self.fd >= 0:
            self.framer.feed(data[start:])   # no newline in it: nothing comes out yet
            self._consume(len(data) - start)

    def _consume(self, size: int) -> None:
        """Take ``size`` bytes, already handled, out of the pipe (arqond is its only reader,
        so they are the bytes peeked)."""
        while size > 0 and self.fd >= 0:
            size -= len(os.read(self.fd, size))

    def _writers_gone(self) -> None:
        unfinished = self.framer.finish()
        if unfinished is not None:
            self.on_refused(too_long(self.framer.max_bytes) if unfinished.cut else
                            "the writer closed before ending its line with a newline",
                            unfinished.length)
        try:
            fresh = open_fifo_reader(self.path)
        except Exception as exc:  # removed or replaced behind arqond's back
            self.close()
            self.on_error(f"cannot reopen: {exc}")
            return
        self.loop.remove_reader(self.fd)
        os.close(self.fd)
        self.fd = fresh
        self.loop.add_reader(fresh, self._readable)

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
