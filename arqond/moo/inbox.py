"""Reading one inbox FIFO on the event loop, framed on newlines."""

from __future__ import annotations

import asyncio
import os
from typing import Callable

from arqond.core.lines import LineFramer, Refused
from arqond.moo.files import open_fifo_reader

READ_CHUNK = 65536
# Reads per wake-up, so one busy inbox cannot keep the loop from everything else.
READS_PER_WAKEUP = 16


class InboxReader:
    """Owns the read side of ``path``: lines go to ``on_line``, refusals to ``on_refused``.

    When the last writer closes, the kernel reports end of file: a line left without its
    newline is refused then, and a fresh read fd is opened before the old one is closed, so
    there is never a moment without a reader (writers neither block nor get SIGPIPE) and the
    pipe's buffered bytes, which belong to the pipe and not to the fd, are kept.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, path: str, fd: int, max_line: int,
                 on_line: Callable[[bytes], None], on_refused: Callable[[Refused], None],
                 on_error: Callable[[str], None]) -> None:
        self.loop = loop
        self.path = path
        self.fd = fd
        self.framer = LineFramer(max_line)
        self.on_line = on_line
        self.on_refused = on_refused
        self.on_error = on_error
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            try:
                data = os.read(self.fd, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                self.close()
                self.on_error(f"read failed: {exc.strerror}")
                return
            if not data:
                self._writers_gone()
                return
            for item in self.framer.feed(data):
                if isinstance(item, Refused):
                    self.on_refused(item)
                else:
                    self.on_line(item)

    def _writers_gone(self) -> None:
        unfinished = self.framer.cut()
        if unfinished is not None:
            self.on_refused(unfinished)
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
