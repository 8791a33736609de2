"""The Bus's streams: each channel message numbered, stored (with a store), then recorded
and delivered in order; a store that fails; streams restored at start; clients resuming.

``StreamPipeline`` is mixed into the Bus (arqond/core/bus.py), as ArqonProtocol is: the model
of a stream, the Store port and the resume plan are in arqond/core/streams.py, a resuming
client's catch-up in arqond/core/replay.py.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import orjson

from arqond.core.access import Action
from arqond.core.clients import Client
from arqond.core.envelope import SERVER_SENDER, serialize
from arqond.core.errors import ErrorCode
from arqond.core.history import Entry
from arqond.core.replay import Replay
from arqond.core.router import WILDCARD, Channel, RoutingError, check_name
from arqond.core.streams import Record, Stream, new_epoch, plan_resume

if TYPE_CHECKING:
    from arqond.core.bus import Bus


class StreamPipeline:
    """Mixed into Bus; every method runs synchronously and never waits on a client."""

    def resume(self: "Bus", client: Client, room: str, channel: str, seq: int,
               epoch: str) -> tuple[bool, dict[str, Any], Replay]:
        """Join ``client`` to room:channel as one that saw its message (seq, epoch): it gets
        every message after that one, then the live ones (through the Replay returned, to
        start once the client has its answer). Returns whether the channel was created, and
        what the client will get: recovered (exactly what it missed) or not, and why."""
        if WILDCARD in (room, channel):
            raise RoutingError(ErrorCode.VALIDATION_ERROR, "since resumes one channel, not a "
                               "wildcard")
        if not self.access.may_read(client.principal, room, channel):
            self.refuse(client, Action.READ_INBOX, room)
        check_name("room", room)
        check_name("channel", channel)
        found = self.router.channel(room, channel)
        created = found is None
        if found is None:
            found = self.create_channel_for(client, room, channel)
        elif (room, channel) in client.subscriptions:   # live already: it starts over
            self.router.leave(client, room, channel)
        for earlier in [r for r in self.replays if r.client is client and r.channel is found]:
            earlier.stop()     # resumed again before that one was done: this one counts
        stream = found.stream
        earliest = self.earliest_seq(found)
        plan = plan_resume(stream, earliest, seq, epoch, shared=self.shared_numbers)
        replay = Replay(self, client, found, plan.after)
        self.replays.add(replay)
        return created, {"recovered": plan.recovered, "reason": plan.reason,
                         "epoch": stream.epoch, "earliest_seq": earliest,
                         "last_seq": stream.committed_seq}, replay

    def wake_at_next(self: "Bus", stream: Stream, wake: Callable[[], None]) -> None:
        """Call ``wake`` once, when this node next keeps a message of ``stream`` (delivered
        or not)."""
        self.waiting.setdefault(stream, []).append(wake)

    def stop_waking(self: "Bus", stream: Stream, wake: Callable[[], None]) -> None:
        waiting = self.waiting.get(stream)
        if waiting is not None and wake in waiting:
            waiting.remove(wake)
            if not waiting:
                del self.waiting[stream]

    @property
    def shared_numbers(self: "Bus") -> bool:
        """The store numbers the messages for a cluster (JetStream): a client may have seen,
        on another node, seqs this node has not read yet."""
        return self.store is not None and self.store.numbers

    def earliest_seq(self: "Bus", channel: Channel) -> int:
        """The first seq of the channel's stream still to be had: from the store, or, with
        none, from the history window."""
        if self.store is not None:
            return channel.stream.first_seq
        window = channel.history.entries
        return window[0].seq if window else channel.stream.committed_seq + 1

    def restore(self: "Bus", streams: Iterable[Stream]) -> int:
        """Channels again for the streams a store kept (at start, before anyone connects),
        at most server.max_channels of them; how many were left out."""
        ordered = list(streams)
        kept = ordered[:self.settings.max_channels]
        for stream in kept:
            found = self.router.channel(stream.room, stream.channel)
            if found is None:
                details = stream.details
                self.router.ensure_channel(
                    stream.room, stream.channel, stream=stream,
                    created_by=details.get("created_by") or SERVER_SENDER,
                    kind=details.get("type") or "general",
                    description=details.get("description") or "")
            else:   # one arqond makes itself (science:*): its stream is the stored one
                found.stream = stream
                found.history.complete = stream.last_seq == 0
        return len(ordered) - len(kept)

    def last_id(self: "Bus", room: str, channel: str) -> str | None:
        """The id of the last message delivered on room:channel (after a restart, read back
        from the store); None when it has none."""
        found = self.router.channel(room, channel)
        if found is None:
            return None
        self.complete_history(found)
        window = found.history.entries
        return window[-1].envelope()["id"] if window else None

    def complete_history(self: "Bus", channel: Channel) -> None:
        """Read a restored stream's recent past back from the store into its history window,
        once (a bounded read: server.history_size messages at most)."""
        window = channel.history
        if window.complete or self.store is None:
            return
        stream = channel.stream
        before = window.entries[0].seq if window.entries else stream.committed_seq + 1
        stored = self.store.read(stream, 0, before, self.settings.history_size)
        self.router.histories.fill(window, [Entry(0, m.received, m.frame, m.seq)
                                            for m in stored])

    def _fanout(self: "Bus", env: dict[str, Any], exclude: Client | None,
                done: Callable[[str | None], None] | None) -> None:
        """Deliver one routed envelope to every subscriber but ``exclude``, serialized once.

        A message to a channel takes the next seq of its stream (in ``metadata.seq`` and
        ``.epoch``); with a store it is delivered once stored, in order, else at once. It
        is serialized before anything is recorded, so history never holds what cannot be
        sent. ``done`` hears when it was delivered, or why not.
        """
        room, channel = env["room"], env.get("channel")
        found = self.router.channel(room, channel) if channel is not None else None
        if found is None:   # a whole room, or a channel nobody may create: no stream
            frame = serialize(env)
            self.stats.messages_total += 1
            self.router.record(room, channel, self.clock(), frame)
            self._deliver(self.router.recipients(room, channel), frame, exclude)
            if done is not None:
                done(None)
            return
        stream = found.stream
        store = self.store
        if store is not None and exclude is not None and \
                self.pending_bytes > self.settings.max_pending_bytes:
            self.stats.store_behind_total += 1
            self.emit("limit_reached", limit="streams.max_pending_bytes",
                      value=self.settings.max_pending_bytes, client_id=exclude.id)
            raise RoutingError(ErrorCode.LIMIT_EXCEEDED, "the store is behind: "
                               f"streams.max_pending_bytes ({self.settings.max_pending_bytes}) "
                               "wait to be written; try again shortly")
        if store is not None and store.numbers:
            # The store numbers it (JetStream, arqond/cluster): delivered when it hands the
            # message back through ``arrived``, with the seq the cluster gave it.
            self.stats.messages_total += 1
            store.append(Record(stream, 0, self.clock(), serialize(env), exclude, done, env))
            return
        seq = stream.last_seq + 1
        metadata = env.get("metadata")
        env["metadata"] = {**metadata, "seq": seq, "epoch": stream.epoch} if metadata else \
            {"seq": seq, "epoch": stream.epoch}
        frame = serialize(env)
        stream.last_seq = seq
        self.stats.messages_total += 1
        record = Record(stream, seq, self.clock(), frame, exclude, done,
                        env if done is not None else None)
        if store is None:
            stream.committed_seq = seq
            self._deliver_record(record)
            return
        self.pending.append(record)
        self.pending_bytes += len(frame)
        store.append(record)

    def _deliver_record(self: "Bus", record: Record, deliver: bool = True) -> None:
        stream = record.stream
        room, channel = stream.room, stream.channel
        if record.seq:   # 0: delivered before its store could number it; recorded when it has
            self.router.record(room, channel, record.received, record.frame, record.seq)
        if deliver:
            recipients = self.router.recipients(room, channel)
            owners = self.access.guarded(room, channel)
            if owners is not None:
                recipients = [c for c in recipients if owners.include(c.principal)]
            self._deliver(recipients, record.frame, record.exclude)
            if record.done is not None:
                record.done(None)
        if self.waiting:
            for wake in self.waiting.pop(stream, ()):
                wake()

    def _go_on_in_memory(self: "Bus", why: str) -> None:
        """The store failed: deliver without it from now until arqond restarts. Every stream
        takes a new epoch, for what it delivers now is gone at the next start; what waited
        for the store is numbered again in that epoch and delivered, in order."""
        self.store = None
        self.store_lost = why
        for room in self.router.rooms.values():
            for channel in room.channels.values():
                stream = channel.stream
                stream.epoch = new_epoch()
                stream.last_seq = stream.committed_seq
        waiting, self.pending = list(self.pending), deque()
        self.pending_bytes = 0
        self.emit("store_failed", text=f"streams store failed ({why}): going on in memory "
                  "until arqond restarts (streams.on_full); every stream has a new epoch",
                  count=len(waiting))
        for record in waiting:
            stream = record.stream
            env = record.env if record.env is not None else orjson.loads(record.frame)
            record.seq = stream.last_seq = stream.committed_seq = stream.last_seq + 1
            env["metadata"] = {**env["metadata"], "seq": record.seq, "epoch": stream.epoch}
            record.frame = serialize(env)
            self._deliver_record(record)

    def after_pending(self: "Bus", then: Callable[[], None]) -> None:
        """Call ``then`` once every message now waiting for the store is delivered or
        refused (at once when none waits): a connection that must close answers first."""
        store = self.store
        # Stored in order: the last one done means all are.
        last = self.pending[-1] if self.pending else \
            store.last_waiting() if store is not None and store.numbers else None
        if last is None:
            then()
            return
        done = last.done

        def after(refused: str | None) -> None:
            if done is not None:
                done(refused)
            then()
        last.done = after

    def committed(self: "Bus", count: int, first_seqs: Mapping[Stream, int]) -> None:
        """The store has the next ``count`` pending records: each is delivered now, in
        order. ``first_seqs``: where streams start now that retention dropped their oldest."""
        pending = self.pending
        stored = [pending.popleft() for _ in range(count)]
        for record in stored:
            self.pending_bytes -= len(record.frame)
        self.arrived(stored, first_seqs)

    def arrived(self: "Bus", records: list[Record], first_seqs: Mapping[Stream, int], *,
                deliver: bool = True) -> None:
        """Records a store holds now, in its order, are delivered. A store that numbers
        messages itself (JetStream) calls this with what it was handed, published on this
        node or another, numbered: a record of seq 0 is delivered but not numbered nor kept
        (its store could not number it yet), and ``deliver`` False keeps and numbers without
        delivering (delivered already, or from before this node joined)."""
        for record in records:
            seq = record.seq
            if seq:
                stream = record.stream
                stream.committed_seq = seq
                if seq > stream.last_seq:
                    stream.last_seq = seq
        for stream, first in first_seqs.items():
            stream.first_seq = first
        for record in records:
            try:
                self._deliver_record(record, deliver)
            except Exception:  # noqa: BLE001 - one message's failure must not stop the rest
                self.internal_error("streams", f"delivering {record.stream.room}:"
                                    f"{record.stream.channel} seq {record.seq}")

    def failed(self: "Bus", count: int, why: str) -> None:
        """The store could not keep the next ``count`` pending records (a full disk, an I/O
        error): none is delivered, each publisher is told, and their streams take those seqs
        back, so the numbering stays without gaps. The store refuses what follows until
        nothing is pending (``resume``). With streams.on_full "memory", arqond goes on
        without the store instead (``_go_on_in_memory``)."""
        pending = self.pending
        if self.store is None:    # gone on in memory: these were delivered then
            return
        if self.settings.on_full == "memory":
            self._go_on_in_memory(why)
            return
        failed = [pending.popleft() for _ in range(count)]
        for record in failed:
            self.pending_bytes -= len(record.frame)
            record.stream.last_seq = record.stream.committed_seq
            self.stats.store_refused_total += 1
        self.emit("store_failed", text=f"{len(failed)} message(s) not stored and not sent: "
                  f"{why}", count=len(failed))
        for record in failed:
            if record.done is not None:
                record.done(f"not stored, so not sent: {why}")
        if not pending and self.store is not None:
            self.store.resume()
