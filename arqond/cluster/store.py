"""The streams' store of a cluster: JetStream numbers and keeps every channel's messages, and
every node delivers them in JetStream's order; each node keeps a copy to read from.

How a message travels. A node publishes it to the cluster's JetStream stream, on the subject
of its channel (arqond/cluster/names.py), with ``Nats-Msg-Id`` = its envelope id, so a copy
sent again after a reconnect is stored once. Every node, the one it came from included,
reads the whole stream in order through one ordered consumer, gives each message its seq and
epoch, keeps it in its copy (STATE_DIR/cluster.sqlite3, the SQLite store of a single node)
and delivers it to its own subscribers; the publisher is acknowledged once its node has it
back, numbered, as a single node acknowledges once stored. So every subscriber on every node
gets each message once, in the same order, with the same id, seq and epoch.

Seq and epoch, and why. A message's ``seq`` is its sequence number in the JetStream stream,
which every node reads the same, and which is known only once JetStream has stored it. So
seqs rise within a channel but skip the numbers that other channels took: resume and
retention (arqond/core/streams.py plan_resume) need only "every message after seq N, in
order" and "from which seq on nothing was dropped", and both hold. Numbering each channel
1, 2, 3 instead would need one writer per channel (JetStream's expected-last-subject-sequence
check, retried on every conflict), a round trip per message before the next could go: the
cluster's order is JetStream's, so its numbers are too. The ``epoch`` is derived from the
stream's creation time, the same on every node: it changes when the stream is made again,
that is, when the cluster's past is lost.

Reads (history pages, replays, cursors) come from the node's copy, on the loop and at once,
as on a single node: JetStream is never waited on to answer a client. A node that joins
later reads the stream from where its copy ends (or, with no copy, from the first message
JetStream keeps): what was published before it joined is kept, not delivered.

While NATS is unreachable, a node's own clients still get what is published on it, at once,
unnumbered (the ack then carries no seq), and up to ``cluster.outage_buffer`` such messages
are kept to be published when NATS returns: then every other node gets them, and this node
keeps their numbered copies without delivering them again. Past the bound a message is
delivered here only, counted and logged as not shared.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import nats
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api

from arqond.cluster.link import TRANSIENT, reason
from arqond.cluster.names import Subjects
from arqond.core.envelope import SERVER_SENDER, serialize
from arqond.core.cursors import Position
from arqond.core.streams import Record, Stored, Stream
from arqond.log import Throttle, log_event

if TYPE_CHECKING:
    from arqond.cluster.cursors import SharedCursors
    from arqond.core.bus import Bus
    from arqond.streams.sqlite import SqliteStore

log = logging.getLogger("arqond.cluster")

MIRROR_FILE = "cluster.sqlite3"
# JetStream keeps ids this long to store a message sent twice once (a reconnect's resend).
DEDUPE_WINDOW = 300.0
# Seconds between the consumer's heartbeats: a consumer lost with a restarted NATS server is
# made again from where it stopped within two of them.
HEARTBEAT = 1.0
# What may wait in the consumer's queue before nats-py drops (and the ordered consumer then
# reads again from where it stopped).
CONSUMER_PENDING_MESSAGES = 65536
CONSUMER_PENDING_BYTES = 64 << 20
# Seconds between two tries to set up JetStream when NATS is up and JetStream is not (yet).
SETUP_RETRY = 2.0
SEQ_KEY = "cluster_seq"
EPOCH_KEY = "cluster_epoch"


def epoch_of(info: api.StreamInfo) -> str:
    """The cluster's epoch: the same on every node, new when the stream is made again."""
    created = info.created.isoformat() if info.created is not None else info.config.name
    return hashlib.sha256(created.encode()).hexdigest()[:8]


def ack_position(reply: str) -> tuple[int, float]:
    """Stream seq and time stored, from a JetStream message's reply subject
    ($JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ns>.<pending>, or with a domain
    and account hash after $JS.ACK)."""
    tokens = reply.split(".")
    base = 2 if len(tokens) == 9 else 4
    return int(tokens[base + 3]), int(tokens[base + 5]) / 1e9


class Joined:
    """Where this node stands in the cluster's stream after joining it."""

    def __init__(self, epoch: str, first: int, last: int) -> None:
        self.epoch = epoch
        self.first = first      # the first seq JetStream keeps
        self.last = last        # the last seq it has


class JetStreamStore:
    numbers = True

    def __init__(self, bus: "Bus", config: Any, node: str, mirror: "SqliteStore") -> None:
        self.bus = bus
        self.config = config
        self.node = node
        self.subjects = Subjects(config.cluster.name)
        self.mirror = mirror
        self.durability = mirror.durability
        # Cursors shared with the other nodes (arqond/cluster/cursors.py), once set.
        self.cursors: "SharedCursors | None" = None
        self.nc: NATS | None = None
        self.js: Any = None
        self.epoch: str | None = None
        self.joined = False
        self.diverged: str | None = None     # why this node stopped sharing
        self.setup_error: str | None = None  # why JetStream could not be set up (yet)
        self.consuming = False
        self.deleting = False       # a channel another node deleted is being deleted here
        self.last_seq = 0           # the last seq of the stream handed on
        self.quiet_through = 0      # up to here: kept, not delivered (before this process)
        self.floor = 1              # from here on this node has seen every message
        # Published to JetStream, waiting for their numbered copy: id -> record.
        self.inflight: dict[str, Record] = {}
        # Delivered here while NATS was unreachable, to be shared: id -> record.
        self.unshared: dict[str, Record] = {}
        self.outbox: deque[Record] = deque()
        # The last record appended here until it is delivered or refused (after_pending).
        self.latest: Record | None = None
        self.mirroring: deque[tuple[Record, bool]] = deque()
        self.acks: dict[str, str] = {}       # reply token -> message id
        self.ack_prefix = ""
        self.next_token = 0
        self.wakeup = asyncio.Event()
        self.publisher: asyncio.Task[None] | None = None
        self.seq_noted = True
        # Woken once what was handed on reaches ``target`` (a start waits to catch up).
        self.handed_seq = 0
        self.caught_up = asyncio.Event()
        self.target = 0
        # Set while this node's copy keeps up (streams.max_pending_bytes); reading waits else.
        self.drained = asyncio.Event()
        self.drained.set()
        self.unshared_lines = Throttle()
        self.mirror_lines = Throttle()
        # /metrics
        self.published_total = 0
        self.arrived_total = 0
        self.unshared_total = 0
        self.kept_total = 0
        self.publish_errors_total = 0
        self.mirror_errors_total = 0
        self.behind_total = 0

    # -- joining ---------------------------------------------------------------------------

    async def stream_info(self, nc: NATS) -> api.StreamInfo:
        """The cluster's stream, made when it does not exist yet."""
        js = nc.jetstream()
        name = self.subjects.stream
        try:
            return await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            pass
        streams = self.config.streams
        info = await js.add_stream(api.StreamConfig(
            name=name, subjects=[self.subjects.channels], retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD, storage=api.StorageType.FILE,
            max_msgs_per_subject=streams.max_messages, max_bytes=streams.total_bytes,
            max_age=streams.max_age or None, duplicate_window=DEDUPE_WINDOW,
            num_replicas=self.config.cluster.replicas,
            description=f"arqond channels of cluster {self.config.cluster.name}"))
        log.info("cluster: made the JetStream stream %s (epoch %s)", name, epoch_of(info))
        return info

    def position(self, info: api.StreamInfo) -> Joined:
        state = info.state
        return Joined(epoch_of(info), state.first_seq or state.last_seq + 1, state.last_seq)

    async def join(self, nc: NATS, joined: Joined, mirror_epoch: str | None,
                   mirror_last: int) -> None:
        """Share from now on: the first time, read the stream from where the copy ends;
        every time, publish what waited while NATS was away."""
        self.nc = nc
        self.js = nc.jetstream()
        if self.epoch is None:
            if mirror_epoch not in (None, joined.epoch) or \
                    (mirror_epoch is not None and mirror_last < joined.first - 1):
                self._diverge(f"this node's copy ({self.mirror.path}) belongs to epoch "
                              f"{mirror_epoch} up to seq {mirror_last}, the cluster's stream "
                              f"is epoch {joined.epoch} from seq {joined.first}")
                return
            self._adopt(joined.epoch)
            start = mirror_last + 1 if mirror_epoch is not None else joined.first
            self.last_seq = self.handed_seq = start - 1
            self.floor = start
            self.quiet_through = self.target = joined.last
            if self.handed_seq >= self.target:
                self.caught_up.set()
        elif joined.epoch != self.epoch:
            self._diverge(f"the cluster's stream was made again (epoch {joined.epoch}, this "
                          f"node has {self.epoch})")
            return
        if not self.consuming:
            await self._consume(nc)
        self.joined = True
        self.setup_error = None
        self.outbox.extend(self.unshared.values())
        if self.publisher is None:
            self.publisher = asyncio.get_running_loop().create_task(self._publish_loop())
        self.wakeup.set()

    def _adopt(self, epoch: str) -> None:
        """The cluster's epoch for every stream here (a copy of no epoch held no message)."""
        self.epoch = epoch
        self.bus.router.epoch = epoch
        for room in self.bus.router.rooms.values():
            for channel in room.channels.values():
                channel.stream.epoch = epoch
        self.mirror.note(EPOCH_KEY, epoch)

    def _diverge(self, why: str) -> None:
        self.diverged = why
        log_event(log, logging.ERROR, "cluster_diverged", f"cluster: {why}; this node no longer "
                  "shares until arqond is restarted (a copy of another stream is set aside "
                  "then)")

    async def _consume(self, nc: NATS) -> None:
        self.ack_prefix = f"{nc.new_inbox()}."
        await nc.subscribe(self.ack_prefix + "*", cb=self._acked)
        await nc.subscribe(self.subjects.deleted, cb=self._deleted)
        await self.js.subscribe(
            self.subjects.channels, stream=self.subjects.stream, cb=self._arrival,
            ordered_consumer=True, idle_heartbeat=HEARTBEAT,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            config=api.ConsumerConfig(opt_start_seq=self.last_seq + 1),
            pending_msgs_limit=CONSUMER_PENDING_MESSAGES,
            pending_bytes_limit=CONSUMER_PENDING_BYTES)
        self.consuming = True

    def lost(self) -> None:
        """NATS is away: what waited for its numbered copy is delivered here now, and kept
        to be shared (within cluster.outage_buffer)."""
        self.joined = False
        waiting = list(self.inflight.values())
        self.inflight.clear()
        self.outbox.clear()
        self.acks.clear()
        for record in waiting:
            self.bus.pending_bytes -= len(record.frame)
            self._deliver_here(record)

    # -- what the Bus calls ------------------------------------------------------------------

    def append(self, record: Record) -> None:
        env = record.env
        assert env is not None, "the Bus hands a numbering store its envelopes"
        if not self.joined:
            self._deliver_here(record)
            return
        msg_id = env["id"]
        if msg_id in self.inflight or msg_id in self.unshared:
            if record.done is not None:
                record.done(f"a message with id {msg_id} is on its way already; ids must be "
                            "unique")
            return
        self.latest = record
        self.inflight[msg_id] = record
        self.bus.pending_bytes += len(record.frame)
        self.outbox.append(record)
        self.wakeup.set()

    def _deliver_here(self, record: Record) -> None:
        """Delivered to this node's clients now, unnumbered; kept to be shared later within
        cluster.outage_buffer, else counted and logged as never shared."""
        env = record.env
        assert env is not None
        bound = self.config.cluster.outage_buffer
        if len(self.unshared) < bound:
            self.unshared[env["id"]] = record
            self.kept_total += 1
        else:
            self.unshared_total += 1
            self.bus.emit("limit_reached", limit="cluster.outage_buffer", value=bound)
            loud, count = self.unshared_lines("unshared")
            if loud:
                log_event(log, logging.WARNING, "cluster_unshared", "cluster: NATS is "
                          f"unreachable and cluster.outage_buffer ({bound}) messages wait to "
                          f"be shared: {count} message(s) delivered here only, never shared",
                          count=count)
        record.seq = 0
        self._settled(record)
        self.bus.arrived([record], {})
        record.done = None     # acknowledged now; its numbered copy later is only kept

    def last_waiting(self) -> Record | None:
        return self.latest

    def _settled(self, record: Record) -> None:
        if record is self.latest:
            self.latest = None

    def read(self, stream: Stream, after: int, before: int, limit: int) -> list[Stored]:
        return self.mirror.read(stream, after, before, limit)

    def read_later(self, stream: Stream, after: int, limit: int,
                   then: Callable[[list[Stored]], None]) -> None:
        self.mirror.read_later(stream, after, limit, then)

    def keep(self, stream: Stream, then: Callable[[str | None], None]) -> None:
        """In this node's copy, which the node restores its channels from; new here, it
        holds every message from ``floor`` on (as ``_stream_of`` says of one a message
        makes)."""
        if stream.committed_seq == 0:
            stream.first_seq = max(stream.first_seq, self.floor)
        self.mirror.keep(stream, then)

    def forget(self, stream: Stream) -> None:
        """A channel deleted here: its messages go from the cluster's stream, and every
        other node deletes it too (``_deleted``)."""
        self.mirror.forget(stream)
        if self.joined and not self.deleting:
            asyncio.get_running_loop().create_task(self._delete(stream.room, stream.channel))

    async def _delete(self, room: str, channel: str) -> None:
        assert self.nc is not None
        try:
            await self.js.purge_stream(self.subjects.stream,
                                       subject=self.subjects.channel(room, channel))
            await self.nc.publish(self.subjects.deleted,
                                  orjson.dumps({"room": room, "channel": channel}))
        except TRANSIENT as exc:
            log_event(log, logging.WARNING, "cluster_error", f"cluster: channel {room}:"
                      f"{channel} deleted here, but not from the cluster: {reason(exc)}")

    async def _deleted(self, msg: Msg) -> None:
        """A channel another node deleted: deleted here too, when nobody here is in it."""
        try:
            target = orjson.loads(msg.data)
            room, channel = target["room"], target["channel"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        bus = self.bus
        found = bus.router.channel(room, channel)
        if found is None:
            return
        if found.hardcoded or found.members:
            log.warning("cluster: channel %s:%s was deleted on another node; kept here, where "
                        "%s", room, channel, "it is hard-coded" if found.hardcoded else
                        f"{len(found.members)} client(s) are in it")
            return
        found.remote.clear()
        self.deleting = True
        try:
            bus.router.delete_channel(room, channel)
            bus.channel_deleted(found)
        finally:
            self.deleting = False
        bus.emit("channel_deleted", room=room, channel=channel, deleted_by="another node")

    def resume(self) -> None:
        self.mirror.resume()

    def save_cursor(self, principal: str, name: str, stream: Stream, seq: int,
                    then: Callable[[str | None], None]) -> None:
        """Put into the cluster's cursors bucket, then kept in this node's copy: ``then``
        hears None once both have it, or why not. While NATS is away the copy has it, and
        the bucket gets it when NATS returns (arqond/cluster/cursors.py)."""
        cursors = self.cursors
        assert cursors is not None, "the cluster adapter shares the cursors"

        def shared(failure: str | None) -> None:
            if failure is None:
                self.mirror.save_cursor(principal, name, stream, seq, then)
            else:
                then(failure)
        cursors.put((principal, name, stream.room, stream.channel),
                    Position(seq, stream.epoch), shared)

    # -- to JetStream ------------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.outbox and self.joined:
                record = self.outbox.popleft()
                await self._publish(record)

    async def _publish(self, record: Record) -> None:
        assert self.nc is not None and record.env is not None
        msg_id = record.env["id"]
        stream = record.stream
        self.next_token += 1
        token = str(self.next_token)
        self.acks[token] = msg_id
        try:
            await self.nc.publish(self.subjects.channel(stream.room, stream.channel),
                                  record.frame, reply=self.ack_prefix + token,
                                  headers={"Nats-Msg-Id": msg_id})
        except nats.errors.MaxPayloadError:
            self.acks.pop(token, None)
            self._refused(msg_id, f"larger than NATS takes ({len(record.frame)} bytes)")
        except (nats.errors.Error, OSError) as exc:
            # The connection broke under it: ``lost`` delivers it here and keeps it.
            self.acks.pop(token, None)
            log.debug("cluster: publish of %s not sent: %r", msg_id, exc)
        else:
            self.published_total += 1

    async def _acked(self, msg: Msg) -> None:
        msg_id = self.acks.pop(msg.subject[len(self.ack_prefix):], None)
        if msg_id is None:
            return
        headers = msg.headers or {}
        if headers.get("Status") == "503":
            self._refused(msg_id, "JetStream does not serve the cluster's stream (no "
                          "responders)")
            return
        try:
            answer = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        error = answer.get("error") if isinstance(answer, dict) else None
        if error:
            self._refused(msg_id, f"JetStream refused it: {error.get('description', error)}")

    def _refused(self, msg_id: str, why: str) -> None:
        """JetStream will not have it: its publisher is told, as a full disk would."""
        self.publish_errors_total += 1
        log_event(log, logging.WARNING, "cluster_error", f"cluster: message {msg_id} not "
                  f"shared: {why}")
        record = self.inflight.pop(msg_id, None)
        if record is None:
            self.unshared.pop(msg_id, None)     # delivered here already: only not shared
            return
        self.bus.pending_bytes -= len(record.frame)
        self._settled(record)
        if record.done is not None:
            record.done(f"not stored, so not sent: {why}")

    # -- from JetStream ----------------------------------------------------------------------

    async def _arrival(self, msg: Msg) -> None:
        try:
            self._take(msg)
        except Exception:  # noqa: BLE001 - one message's failure must not stop the stream
            self.bus.internal_error("cluster", f"the cluster's message {msg.subject} "
                                    f"{msg.reply}")
        if self.bus.pending_bytes > self.bus.settings.max_pending_bytes:
            # This node's copy is behind: reading the stream waits (JetStream's flow control
            # holds the rest on the server) while clients' publishes are refused.
            self.behind_total += 1
            log.warning("cluster: streams.max_pending_bytes (%d) wait for this node's copy "
                        "of the stream; reading it waits", self.bus.settings.max_pending_bytes)
            self.drained.clear()
            await self.drained.wait()

    def _take(self, msg: Msg) -> None:
        seq, received = ack_position(msg.reply)
        if seq <= self.last_seq:
            return      # read again after a reset of the consumer
        self.last_seq = seq
        self.arrived_total += 1
        room, channel = self.subjects.target(msg.subject)
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        deliver = seq > self.quiet_through
        record = self.inflight.pop(msg_id, None) if msg_id else None
        if record is not None:
            self.bus.pending_bytes -= len(record.frame)
        elif msg_id and (record := self.unshared.pop(msg_id, None)) is not None:
            deliver = False     # its clients here had it while NATS was away
        env = record.env if record is not None else orjson.loads(msg.data)
        assert env is not None
        stream = self._stream_of(room, channel, env)
        metadata = env.get("metadata")
        env["metadata"] = {**metadata, "seq": seq, "epoch": stream.epoch} if metadata else \
            {"seq": seq, "epoch": stream.epoch}
        frame = serialize(env)
        if record is None:
            record = Record(stream, seq, received, frame, None, None)
        else:
            record.stream, record.seq, record.received, record.frame = \
                stream, seq, received, frame
        self.mirroring.append((record, deliver))
        self.bus.pending_bytes += len(frame)
        self.mirror.append(record)
        if self.seq_noted:
            self.seq_noted = False
            asyncio.get_running_loop().call_soon(self._note_seq)

    def _note_seq(self) -> None:
        """How far the copy reaches, kept with it (once per turn of the loop)."""
        self.seq_noted = True
        self.mirror.note(SEQ_KEY, str(self.last_seq))

    def _stream_of(self, room: str, channel: str, env: dict[str, Any]) -> Stream:
        bus = self.bus
        found, created = bus.router.ensure_channel(room, channel,
                                                   created_by=env.get("sender") or SERVER_SENDER)
        if created:
            bus.emit("channel_created", room=room, channel=channel,
                     created_by=found.created_by)
        stream = found.stream
        if stream.epoch != self.epoch and self.epoch is not None:
            stream.epoch = self.epoch
        if stream.stored_id is None and stream.committed_seq == 0:
            # New here: every message of it from ``floor`` on comes through this node.
            stream.first_seq = self.floor
        return stream

    # -- the copy's answers (its writer thread, through the loop) ------------------------

    def committed(self, count: int, first_seqs: dict[Stream, int]) -> None:
        self._hand_on([self.mirroring.popleft() for _ in range(count)], first_seqs)

    def failed(self, count: int, why: str) -> None:
        """The copy could not keep them: JetStream has them, so they are delivered anyway."""
        self.mirror_errors_total += count
        loud, total = self.mirror_lines(why)
        if loud:
            log_event(log, logging.ERROR, "store_failed", f"cluster: this node's copy of the "
                      f"stream could not keep {count} message(s): {why}; delivered anyway, "
                      f"history here lacks them ({total} failure(s) so far)",
                      path=self.mirror.path)
        self._hand_on([self.mirroring.popleft() for _ in range(count)], {})
        if not self.mirroring:
            self.mirror.resume()

    def _hand_on(self, batch: list[tuple[Record, bool]], first_seqs: dict[Stream, int]) -> None:
        for record, _ in batch:
            self.bus.pending_bytes -= len(record.frame)
            self._settled(record)
        if self.bus.pending_bytes <= self.bus.settings.max_pending_bytes:
            self.drained.set()
        if batch:
            self.handed_seq = batch[-1][0].seq
            if self.handed_seq >= self.target:
                self.caught_up.set()
        start = 0
        for index in range(1, len(batch) + 1):
            if index == len(batch) or batch[index][1] != batch[start][1]:
                self.bus.arrived([record for record, _ in batch[start:index]], first_seqs,
                                 deliver=batch[start][1])
                first_seqs = {}
                start = index

    # -- life cycle ----------------------------------------------------------------------

    def set_aside(self) -> None:
        """The copy belongs to another stream: moved away (kept for a look), a new one made."""
        aside = f"{self.mirror.path}.epoch-{time.strftime('%Y%m%dT%H%M%S')}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.mirror.path + suffix):
                os.replace(self.mirror.path + suffix, aside + suffix)
        log_event(log, logging.WARNING, "cluster_diverged", f"cluster: {self.mirror.path} "
                  f"belonged to another stream of the cluster; set aside as {aside}")

    async def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.cancel()
