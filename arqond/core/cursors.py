"""Server-side cursors: a principal names a cursor on a channel and reads what is new since
its last read, keeping no state itself (``arqon read ROOM:CHANNEL --cursor NAME``).

- ``cursor.read`` {room, channel, cursor, limit, wait}: the messages after the cursor's
  position, oldest first; with ``wait``, up to that many seconds for the first one. It moves
  nothing: a reader acknowledges what it has handled with
- ``cursor.ack`` {room, channel, cursor, seq, epoch}: the cursor now stands at that message.
  So a reader that dies between the two reads the same messages again, never loses one.

A cursor belongs to its principal (two users' cursors of the same name are two cursors), is
kept with the streams (and lost with them, in memory only), and reads only what the principal
may read. A cursor whose epoch is gone starts again from the earliest message, and says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from arqond.core.commands import Command, CommandContext, CommandError, Later
from arqond.core.errors import ErrorCode
from arqond.core.history import Entry
from arqond.core.access import Action
from arqond.core.router import Channel
from arqond.core.streams import Resume, check_since, plan_resume
from arqond.core.timers import Timers

if TYPE_CHECKING:
    from arqond.core.bus import Bus

MAX_WAIT = 3600.0
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_NAME = 128


class Position(NamedTuple):
    seq: int
    epoch: str


# (principal key, cursor name, room, channel)
Key = tuple[str, str, str, str]


class Cursors:
    def __init__(self, bus: "Bus", timers: Timers, max_cursors: int) -> None:
        self.bus = bus
        self.timers = timers
        self.max_cursors = max_cursors
        self.positions: dict[Key, Position] = {}
        self.refused_total = 0

    def restore(self, saved: dict[Key, Position]) -> None:
        self.positions.update(saved)

    def commands(self) -> dict[str, Command]:
        return {"cursor.read": Command(self._read, False, "messages after a named cursor "
                                       "(room, channel, cursor, limit, wait)"),
                "cursor.ack": Command(self._ack, False, "move a named cursor to a message "
                                      "(room, channel, cursor, seq, epoch)")}

    # -- the commands -------------------------------------------------------------------

    def _target(self, ctx: CommandContext) -> tuple[Channel, Key]:
        room, channel = ctx.target(channel_required=True)
        assert channel is not None
        name = ctx.arg("cursor", str, required=True)
        if not 0 < len(name) <= MAX_NAME:
            raise CommandError(ErrorCode.VALIDATION_ERROR,
                               f"cursor must be a name of 1 to {MAX_NAME} characters")
        # The same rule as history: an inbox only for its owners (refused and logged).
        if not self.bus.access.may_read(ctx.client.principal, room, channel):
            self.bus.refuse(ctx.client, Action.READ_INBOX, room)
        found = self.bus.router.channel(room, channel)
        if found is None:
            raise CommandError(ErrorCode.NOT_FOUND, f"channel {room}:{channel} does not exist")
        return found, (ctx.client.principal.key, name, room, channel)

    def _read(self, ctx: CommandContext) -> Any:
        channel, key = self._target(ctx)
        limit = ctx.limit(DEFAULT_LIMIT, MAX_LIMIT)
        wait = ctx.arg("wait", (int, float), 0)
        if not 0 <= wait <= MAX_WAIT:
            raise CommandError(ErrorCode.VALIDATION_ERROR, f"wait must be 0 to {MAX_WAIT:g} "
                               "seconds")
        answer = self._answer(channel, key, limit)
        if answer[1]["messages"] or not wait:
            return answer
        later = Later()
        stream = channel.stream

        def woken() -> None:
            position = self.positions.get(key)
            if position is not None and position.epoch == stream.epoch and \
                    position.seq >= stream.committed_seq:
                # A cluster node behind the cursor read one the cursor had passed: wait on.
                self.bus.wake_at_next(stream, woken)
                return
            self.timers.disarm(later)
            later.resolve(self._answer(channel, key, limit))
        self.bus.wake_at_next(stream, woken)

        def expired() -> None:
            self.bus.stop_waking(stream, woken)
            later.resolve(self._answer(channel, key, limit))
        self.timers.arm(later, wait, expired)
        return later

    def _answer(self, channel: Channel, key: Key, limit: int) -> tuple[str, dict[str, Any]]:
        stream = channel.stream
        position = self.positions.get(key)
        earliest = self.bus.earliest_seq(channel)
        if position is None:   # a new cursor starts at the earliest kept: it missed nothing
            plan = Resume(True, earliest - 1, None)
        else:
            plan = plan_resume(stream, earliest, *position, shared=self.bus.shared_numbers)
        entries = self._after(channel, plan.after, limit)
        messages = [entry.envelope() for entry in entries]
        return f"{len(messages)} message(s)", {
            "room": channel.room, "channel": channel.name, "cursor": key[1],
            "position": position._asdict() if position else None,
            "recovered": plan.recovered, "reason": plan.reason, "epoch": stream.epoch,
            "last_seq": stream.committed_seq, "messages": messages}

    def _after(self, channel: Channel, after: int, limit: int) -> list[Entry]:
        """Up to ``limit`` delivered messages with seq > ``after``, oldest first: from the
        history window, and from the store for what is older than the window."""
        window = channel.history.entries
        store = self.bus.store
        older: list[Entry] = []
        if store is not None and (not window or window[0].seq > after + 1):
            before = window[0].seq if window else channel.stream.committed_seq + 1
            older = [Entry(0, m.received, m.frame, m.seq) for m in
                     self._read_store(channel, after, before, limit)]
        newer = [entry for entry in window if entry.seq > after]
        return (older + newer)[:limit]

    def _read_store(self, channel: Channel, after: int, before: int, limit: int) -> list[Any]:
        """The oldest ``limit`` stored after ``after`` (the store reads newest-last pages)."""
        store = self.bus.store
        assert store is not None
        return store.read(channel.stream, after, min(before, after + limit + 1), limit)

    def _ack(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        channel, key = self._target(ctx)
        try:
            seq, epoch = check_since({"seq": ctx.args.get("seq"), "epoch": ctx.args.get("epoch")})
        except ValueError:
            raise CommandError(ErrorCode.VALIDATION_ERROR, "cursor.ack needs seq (an integer) "
                               "and epoch (a string), as the message carried them in its "
                               "metadata") from None
        stream = channel.stream
        # In a cluster the message may be one another node delivered and this one has not
        # read yet.
        unknown = seq > stream.committed_seq and not self.bus.shared_numbers
        if epoch != stream.epoch or unknown:
            raise CommandError(ErrorCode.VALIDATION_ERROR, f"{channel.room}:{channel.name} has "
                               f"no message {seq} in epoch {epoch} (it is at {stream.committed_seq} "
                               f"in epoch {stream.epoch})")
        if key not in self.positions and len(self.positions) >= self.max_cursors:
            self.refused_total += 1
            self.bus.emit("limit_reached", limit="streams.max_cursors",
                          value=self.max_cursors, client_id=ctx.client.id)
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, f"streams.max_cursors "
                               f"({self.max_cursors}) cursors exist already")
        answer = f"cursor {key[1]} at {seq}", {"room": channel.room, "channel": channel.name,
                                               "cursor": key[1], "seq": seq, "epoch": epoch}
        if self.bus.store is None:
            self.positions[key] = Position(seq, epoch)
            return answer
        # Moved and answered once stored: an acknowledged position survives what the store
        # survives, and one that could not be stored stays where it was.
        later = Later()

        def saved(failure: str | None) -> None:
            if failure is None:
                self.positions[key] = Position(seq, epoch)
                later.resolve(answer)
            else:
                later.resolve(error=CommandError(ErrorCode.STORE_FAILED, f"cursor {key[1]} "
                                                 f"was not stored: {failure}"))
        self.bus.store.save_cursor(key[0], key[1], stream, seq, saved)
        return later

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        """A channel deleted takes its cursors with it."""
        if event == "channel_deleted":
            room, channel = fields["room"], fields["channel"]
            for key in [k for k in self.positions if (k[2], k[3]) == (room, channel)]:
                del self.positions[key]

