"""What is kept of each channel's past in memory: the frames as they went out, bounded.

A window holds, per channel (and per room, for messages to a whole room), the serialized
frames it delivered, with when arqond received them: the bytes it will send again, never a
copy of a client's objects (a 1 MiB frame of nested lists costs 1 MiB here, not 24). It is
bounded in messages (server.history_size) and bytes (server.history_bytes) per window, and in
bytes in all (server.history_total_bytes): past the total, the window being written gives up
its oldest first, then the largest windows theirs.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterator, NamedTuple

import orjson


class Entry(NamedTuple):
    sequence: int        # arqond-wide order of recording (merging a room's windows)
    received: float      # when arqond received it (epoch seconds): history time windows
    frame: bytes         # the serialized envelope, as delivered
    seq: int = 0         # its seq in its channel's stream (0: a message to a whole room)

    def envelope(self) -> dict[str, Any]:
        return orjson.loads(self.frame)


class Window:
    __slots__ = ("entries", "bytes", "complete")

    def __init__(self, complete: bool = True) -> None:
        self.entries: deque[Entry] = deque()
        self.bytes = 0
        # False while older messages than it holds may be in the store and were never
        # read back (a stream restored at start): the first reader fills it in.
        self.complete = complete

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def drop_oldest(self) -> int:
        size = len(self.entries.popleft().frame)
        self.bytes -= size
        return size


class HistoryLimits(NamedTuple):
    messages: int        # per window
    bytes: int           # per window
    total_bytes: int     # all windows together


class History:
    """Every window, and the bounds they share."""

    def __init__(self, limits: HistoryLimits) -> None:
        self.limits = limits
        self.windows: set[Window] = set()
        self.bytes = 0
        self.evicted_total = 0           # entries dropped at a bound
        self._sequence = 0

    def window(self, complete: bool = True) -> Window:
        window = Window(complete)
        self.windows.add(window)
        return window

    def fill(self, window: Window, older: list[Entry]) -> None:
        """Put ``older`` (read back from the store, oldest first) before what ``window``
        holds, within the same bounds as what is recorded: the oldest give way first."""
        limits = self.limits
        room = limits.messages - len(window)
        for entry in reversed(older[-room:] if room > 0 else []):
            size = len(entry.frame)
            if window.bytes + size > limits.bytes or self.bytes + size > limits.total_bytes:
                break
            window.entries.appendleft(entry)
            window.bytes += size
            self.bytes += size
        window.complete = True

    def forget(self, window: Window) -> None:
        """A channel is gone: its window no longer counts."""
        self.windows.discard(window)
        self.bytes -= window.bytes

    def record(self, window: Window, received: float, frame: bytes, seq: int = 0) -> None:
        self._sequence += 1
        window.entries.append(Entry(self._sequence, received, frame, seq))
        window.bytes += len(frame)
        self.bytes += len(frame)
        limits = self.limits
        while len(window) > limits.messages or (window.bytes > limits.bytes and len(window) > 1):
            self._evict(window)
        if self.bytes > limits.total_bytes:
            while self.bytes > limits.total_bytes and len(window) > 1:
                self._evict(window)
            while self.bytes > limits.total_bytes:
                largest = max(self.windows, key=lambda w: w.bytes)
                if not largest.entries:
                    break
                self._evict(largest)

    def _evict(self, window: Window) -> None:
        self.bytes -= window.drop_oldest()
        self.evicted_total += 1

    def resize(self, limits: HistoryLimits) -> None:
        """Apply new bounds to what is kept already."""
        self.limits = limits
        for window in list(self.windows):
            while window.entries and (len(window) > limits.messages
                                      or window.bytes > limits.bytes):
                self._evict(window)
        while self.bytes > limits.total_bytes:
            self._evict(max(self.windows, key=lambda w: w.bytes))
