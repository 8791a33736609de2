"""Reading one inbox FIFO on the event loop, framed on newlines."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from typing import Callable

from arqond.core.framing import LineFramer, too_long
from arqond.moo.files import open_fifo_reader

log = logging.getLogger("arqond.moo")

READ_CHUNK = 65536
# Reads per wake-up, so one busy inbox cannot keep the loop from everything else.
READS_PER_WAKEUP = 16
# A second reader is reported at most this often per FIFO (it is seen on every line it steals).
SECOND_READER_LOG_INTERVAL = 10.0

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

    All of this holds while arqond is the FIFO's only reader. Another process reading it (a
    shell's ``while read line < NAME-inbox``) takes lines arqond then never sees, or takes
    them while arqond handles them: the bytes arqond takes out are then not the ones it
    peeked. That is reported (``on_second_reader``, and a log line naming the FIFO) and the
    bytes taken are still delivered, as whatever lines they make.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, path: str, fd: int, max_line: int,
                 peeker: Peeker, on_line: Callable[[bytes], None],
                 on_refused: Callable[[str, int], None], on_error: Callable[[str], None],
                 on_second_reader: Callable[[], None]) -> None:
        self.loop = loop
        self.path = path
        self.fd = fd
        self.framer = LineFramer(max_line)
        self.peeker = peeker
        self.on_line = on_line
        self.on_refused = on_refused
        self.on_error = on_error
        self.on_second_reader = on_second_reader
        self.second_reader_seen = 0          # since the last log line about it
        self.second_reader_logged = -SECOND_READER_LOG_INTERVAL
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
        while start <= last:
            end = data.index(b"\n", start) + 1
            piece = data[start:end]
            try:
                for line in self.framer.feed(piece):
                    if line.cut:
                        self.on_refused(too_long(self.framer.max_bytes), line.length)
                    else:
                        self.on_line(line.data)
            finally:
                kept = self.fd >= 0 and self._consume(piece)
            if not kept:
                return
            start = end
        if start < len(data):
            piece = data[start:]
            self.framer.feed(piece)   # no newline in it: nothing comes out yet
            self._consume(piece)

    def _consume(self, piece: bytes) -> bool:
        """Take ``piece``, already handled, out of the pipe. False when what comes out is not
        ``piece``: another process read from the FIFO meanwhile."""
        try:
            taken = os.read(self.fd, len(piece))
        except BlockingIOError:
            taken = b""
        except OSError as exc:
            self.close()
            self.on_error(f"read failed: {exc.strerror}")
            return False
        if taken == piece:
            return True
        self._second_reader(piece, taken)
        return False

    def _second_reader(self, handled: bytes, taken: bytes) -> None:
        """``taken`` came out of the pipe instead of ``handled``: deliver what was never
        handled, from a fresh start of line (a line cut by the other reader is not glued to
        the next one), and say so."""
        self.on_second_reader()
        self.second_reader_seen += 1
        now = self.loop.time()
        if now - self.second_reader_logged >= SECOND_READER_LOG_INTERVAL:
            log.error("%s: another process is reading this FIFO (seen %d time(s)): lines go to "
                      "one reader or the other, and may arrive cut or twice. arqond must be "
                      "its only reader; read the inbox with arqon recv or arqon.recv",
                      self.path, self.second_reader_seen)
            self.second_reader_logged, self.second_reader_seen = now, 0
        unfinished = self.framer.finish()
        if unfinished is not None:
            self.on_refused("cut short by another reader of the FIFO", unfinished.length)
        first = taken.find(b"\n") + 1
        if first and handled.endswith(taken[:first]):
            taken = taken[first:]   # the rest of the line just handled: not delivered twice
        self._take_out(taken)

    def _take_out(self, taken: bytes) -> None:
        """Lines of bytes already out of the pipe (a second reader left them to arqond)."""
        for line in self.framer.feed(taken):
            if line.cut:
                self.on_refused(too_long(self.framer.max_bytes), line.length)
            else:
                self.on_line(line.data)

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
