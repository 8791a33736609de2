"""Newline framing for byte streams (FIFO inboxes, Zgent sockets), bounded in line length."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Refused:
    """A line that was not delivered, and why (it is never glued to its neighbour)."""

    reason: str
    size: int


class LineFramer:
    """Cut a byte stream into lines of at most ``max_bytes`` (newline excluded).

    A line that grows past the bound is refused as a whole: its bytes are dropped up to and
    including its newline, then framing resumes with the next line. Bytes held before the
    bound stay in ``pending`` (at most ``max_bytes``), so memory per stream is bounded.
    """

    __slots__ = ("max_bytes", "pending", "_skipping", "_skipped")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.pending = bytearray()
        self._skipping = False
        self._skipped = 0

    def feed(self, data: bytes) -> list[bytes | Refused]:
        if not self.pending and not self._skipping:
            # The common case, one whole line in one piece: nothing to join or remember.
            end = data.find(b"\n")
            if 0 <= end == len(data) - 1 and end <= self.max_bytes:
                return [data[:end]]
        out: list[bytes | Refused] = []
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            chunk = data[start:] if end < 0 else data[start:end]
            if self._skipping:
                self._skipped += len(chunk)
            elif len(self.pending) + len(chunk) > self.max_bytes:
                self._skipping = True
                self._skipped = len(self.pending) + len(chunk)
                self.pending.clear()
            else:
                self.pending += chunk
            if end < 0:
                break
            if self._skipping:
                out.append(Refused(f"line longer than {self.max_bytes} bytes", self._skipped))
                self._skipping = False
                self._skipped = 0
            else:
                out.append(bytes(self.pending))
                self.pending.clear()
            start = end + 1
        return out

    def cut(self) -> Refused | None:
        """The stream's writers left mid-line: drop the unfinished line so nothing joins it."""
        if self._skipping:
            refused = Refused(f"line longer than {self.max_bytes} bytes", self._skipped)
        elif self.pending:
            refused = Refused("the writer closed before ending its line with a newline",
                              len(self.pending))
        else:
            return None
        self.pending.clear()
        self._skipping = False
        self._skipped = 0
        return refused
