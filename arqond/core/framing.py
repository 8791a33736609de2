"""Newline framing, the one framer of every byte stream arqond reads: inbox FIFOs, Zgent and
control sockets, narrative files.

Each line comes out as a Line: where it started in the stream, at most ``max_bytes`` of it, and
how long it really was. The framer never decides what an overlong line means: an inbox or a
socket refuses it (``Line.cut``), the narrative bridge publishes it cut, the control socket
closes the connection. Memory per stream stays bounded: the rest of an overlong line is counted
and skipped up to its newline, so a line is never glued to its neighbour.
"""

from __future__ import annotations


def too_long(max_bytes: int) -> str:
    """Why an overlong line was refused, in the words every reader uses."""
    return f"line longer than {max_bytes} bytes"


class Line:
    __slots__ = ("offset", "data", "length")

    def __init__(self, offset: int, data: bytes, length: int) -> None:
        self.offset = offset    # byte offset of the line's first byte in its stream
        self.data = data        # without the newline; at most max_bytes of it
        self.length = length    # the whole line's length, newline excluded

    @property
    def end(self) -> int:
        """Offset of the byte after the line's newline."""
        return self.offset + self.length + 1

    @property
    def cut(self) -> bool:
        return self.length > len(self.data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Line) and (self.offset, self.data, self.length) == \
            (other.offset, other.data, other.length)

    def __repr__(self) -> str:
        return f"Line({self.offset}, {self.data!r}, {self.length})"


class LineFramer:
    """Turns bytes into complete lines; a trailing partial line waits for its newline.

    ``offset`` is the first byte not yet handed out as part of a line: the checkpoint position
    of a file, and ``read_position`` is where the next bytes belong.
    """

    __slots__ = ("offset", "max_bytes", "pending", "pending_length")

    def __init__(self, max_bytes: int, offset: int = 0) -> None:
        self.offset = offset
        self.max_bytes = max_bytes
        self.pending = bytearray()
        self.pending_length = 0  # bytes of the partial line seen, skipped ones included

    @property
    def read_position(self) -> int:
        return self.offset + self.pending_length

    def feed(self, data: bytes) -> list[Line]:
        if not self.pending_length:
            # The common case, one whole line in one piece: nothing to join or remember.
            end = data.find(b"\n")
            if 0 <= end == len(data) - 1 and end <= self.max_bytes:
                line = Line(self.offset, data[:end], end)
                self.offset += end + 1
                return [line]
        lines: list[Line] = []
        start = 0
        while True:
            newline = data.find(b"\n", start)
            piece = data[start:] if newline < 0 else data[start:newline]
            room = self.max_bytes - len(self.pending)
            if room > 0:
                self.pending += piece[:room]
            self.pending_length += len(piece)
            if newline < 0:
                return lines
            line = Line(self.offset, bytes(self.pending), self.pending_length)
            lines.append(line)
            self.offset = line.end
            self.pending.clear()
            self.pending_length = 0
            start = newline + 1

    def finish(self) -> Line | None:
        """The stream ended: the unfinished line, if any (what it means is the reader's call),
        and the framer is ready for a new stream at the same offset."""
        if not self.pending_length:
            return None
        line = Line(self.offset, bytes(self.pending), self.pending_length)
        self.offset += self.pending_length
        self.pending.clear()
        self.pending_length = 0
        return line

    def reset(self, offset: int) -> None:
        self.offset = offset
        self.pending.clear()
        self.pending_length = 0
