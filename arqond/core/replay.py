"""A client resuming a channel from (seq, epoch): what it missed, in order, then live, with
no gap and no duplicate.

The client is not a member of the channel while it catches up: the messages it missed come
from the history window when it holds them, else from the store a chunk at a time (each
sent when the client's buffer has room). Once what is left is in the window, the rest is
sent and the client joins, in one step of the event loop: every message after that is one
it gets live. Messages the store holds but the Bus has not delivered yet (stored, their
``committed`` call still queued) are left for live delivery, so nothing comes twice.

A client that moved to another node of a cluster may have seen more of a channel than this
node has read yet: it waits, not joined, until this node has read that far (each message
this node keeps of the stream wakes it), then gets what followed, so nothing comes twice
and nothing it missed is left out, however long this node takes.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from arqond.core.router import Channel
from arqond.core.streams import Stored

if TYPE_CHECKING:
    from arqond.core.bus import Bus
    from arqond.core.clients import Client

# A catching-up client waits while more than this share of its buffer is full.
PAUSE_AT = 0.5
PAUSE_SECONDS = 0.01
CHUNK_MESSAGES = 1000


class Replay:
    __slots__ = ("bus", "client", "channel", "after", "rows", "sent")

    def __init__(self, bus: "Bus", client: "Client", channel: Channel, after: int) -> None:
        self.bus = bus
        self.client = client
        self.channel = channel
        self.after = after                  # the last seq the client has
        self.rows: deque[Stored] = deque()  # read from the store, not sent yet
        self.sent = 0

    def step(self) -> None:
        """Send what can be sent now; then join, or wait for the store or the client."""
        client, bus = self.client, self.bus
        if self not in bus.replays:
            return   # stopped
        if not client.open or self.channel is not bus.router.channel(self.channel.room,
                                                                        self.channel.name):
            self.stop()
            return   # gone, or the channel was deleted meanwhile
        if self.rows:
            self._send_rows()
            return
        stream = self.channel.stream
        if self.after > stream.committed_seq:   # this node has not read what it saw yet
            bus.wake_at_next(stream, self.step)
            return
        window = self.channel.history.entries
        caught_up = self.after >= stream.committed_seq
        if caught_up or bus.store is None or (window and window[0].seq <= self.after + 1):
            for entry in window:
                if entry.seq > self.after and not self._send(entry.frame):
                    return
            bus.router.join(client, self.channel.room, self.channel.name)
            client.room, client.channel = self.channel.room, self.channel.name
            bus.replays.discard(self)
            return
        bus.store.read_later(stream, self.after, CHUNK_MESSAGES, self._got)

    def stop(self) -> None:
        """End it unfinished: its client went away, or resumed the channel again."""
        bus = self.bus
        bus.replays.discard(self)
        if bus.timers is not None:
            bus.timers.disarm(self)
        bus.stop_waking(self.channel.stream, self.step)

    def _got(self, rows: list[Stored]) -> None:
        committed = self.channel.stream.committed_seq
        self.rows = deque(row for row in rows if row.seq <= committed)
        if not self.rows:
            # The store holds nothing between what the client has and the window (retention
            # dropped it meanwhile): what the window holds is all there is.
            window = self.channel.history.entries
            self.after = max(self.after, window[0].seq - 1) if window else committed
        self.step()

    def _send_rows(self) -> None:
        client = self.client
        limit = self.bus.settings.client_buffer_bytes * PAUSE_AT
        while self.rows:
            if client.sink is not None and client.sink.buffered() > limit:
                timers = self.bus.timers
                assert timers is not None, "a Bus with a store has timers"
                timers.arm(self, PAUSE_SECONDS, self.step)
                return
            row = self.rows.popleft()
            if not self._send(row.frame):
                return
            self.after = row.seq
        self.step()

    def _send(self, frame: bytes) -> bool:
        self.sent += 1
        self.bus.send_frame(self.client, frame)
        return self.client.open
