"""Every channel an ordered stream: sequence numbers, epochs, retention, and what a client
that resumes from (seq, epoch) gets. No I/O: a Store (the port below; arqond/streams/ holds
the SQLite one) keeps the messages, the Bus (arqond/core/bus.py) delivers them.

- Each message recorded on a channel gets the next ``seq`` of its stream (1, 2, 3, ...).
- A stream's ``epoch`` names one unbroken past: it changes whenever that past is lost (a
  store reset or set aside, memory-only durability after a restart), so a (seq, epoch) pair
  from a client is either found again exactly or known to be gone.
- With a store, a message is delivered (and acknowledged) only once it is stored: what a
  subscriber has seen survives what the durability setting promises, and a seq is never given
  to two messages.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol

if TYPE_CHECKING:
    from arqond.core.clients import Client

EPOCH_BYTES = 4


def new_epoch() -> str:
    return os.urandom(EPOCH_BYTES).hex()


class Retention(NamedTuple):
    """What a stream keeps: at most ``messages`` and ``bytes``, none older than ``age``
    seconds (0: any age)."""

    messages: int
    bytes: int
    age: float

    @classmethod
    def of(cls, value: Any, default: "Retention") -> "Retention":
        """A retention given when a channel is created ({"messages", "bytes", "age"}, each
        optional), over ``default``; ValueError names what is wrong."""
        if value is None:
            return default
        if not isinstance(value, dict) or not set(value) <= set(cls._fields):
            raise ValueError("retention must be an object with messages, bytes and/or age")
        for key, given in value.items():
            if isinstance(given, bool) or not isinstance(given, (int, float)) or given < 0 \
                    or (key != "age" and (not isinstance(given, int) or given == 0)):
                raise ValueError(f"retention.{key} must be a positive "
                                 f"{'number of seconds (0: any age)' if key == 'age' else 'integer'}")
        return default._replace(**value)


class Stream:
    """One channel's stream: where its numbering stands."""

    __slots__ = ("room", "channel", "epoch", "first_seq", "last_seq", "committed_seq",
                 "retention", "stored_id", "details")

    def __init__(self, room: str, channel: str, epoch: str, retention: Retention, *,
                 first_seq: int = 1, last_seq: int = 0, stored_id: int | None = None,
                 details: dict[str, Any] | None = None) -> None:
        self.room = room
        self.channel = channel
        self.epoch = epoch
        self.retention = retention
        self.first_seq = first_seq        # the earliest seq still held
        self.last_seq = last_seq          # the last seq given out
        self.committed_seq = last_seq     # the last seq stored and delivered
        self.stored_id = stored_id        # the store's key for it, once it has one
        # What the store keeps of its channel, to make it again at start (type, ...).
        self.details = details or {}

    def describe(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "first_seq": self.first_seq,
                "last_seq": self.committed_seq, "retention": self.retention._asdict()}


class Record:
    """One message on its way from publish to delivery."""

    __slots__ = ("stream", "seq", "received", "frame", "exclude", "done", "env")

    def __init__(self, stream: Stream, seq: int, received: float, frame: bytes,
                 exclude: "Client | None", done: Callable[[str | None], None] | None,
                 env: dict[str, Any] | None = None) -> None:
        self.stream = stream
        self.seq = seq
        self.received = received
        self.frame = frame
        self.exclude = exclude            # the publisher, which does not get its own message
        self.done = done                  # called once: None when delivered, else why not
        # The envelope, while ``done`` will read it (an ack says its seq and epoch).
        self.env = env


class Stored(NamedTuple):
    """One message as the store gives it back."""

    seq: int
    received: float
    frame: bytes


class Store(Protocol):
    """Where streams are kept (arqond/streams/sqlite.py). Every call returns at once; what
    takes time is answered through the Bus (``committed``, ``failed``) or a callback, on the
    event loop."""

    durability: str
    # Whether the store numbers messages itself (JetStream: the cluster's order): then the Bus
    # appends them with seq 0 and the store hands them back, numbered, to ``Bus.arrived``, with
    # the messages other nodes published. Seqs then rise per channel but may skip numbers
    # (arqond/cluster/store.py says why).
    numbers: bool

    def append(self, record: Record) -> None:
        """Store ``record`` after every record appended before it."""

    def read(self, stream: Stream, after: int, before: int, limit: int) -> list[Stored]:
        """Up to ``limit`` stored messages with after < seq < before, newest last, read at
        once (bounded: history pages)."""

    def read_later(self, stream: Stream, after: int, limit: int,
                   then: Callable[[list[Stored]], None]) -> None:
        """The same without waiting (replays of any length): ``then`` gets up to ``limit``
        messages with seq > after, oldest first."""

    def last_waiting(self) -> Record | None:
        """A store that numbers: the last record appended that is not delivered (nor
        refused) yet, or None; it is done last (``Bus.after_pending``)."""

    def forget(self, stream: Stream) -> None:
        """A channel was deleted: its messages go."""

    def keep(self, stream: Stream, then: Callable[[str | None], None]) -> None:
        """A channel created on purpose (create_channel): its stream is kept now, before any
        message, so that a restart restores it with its retention and details; ``then``
        gets None once it is stored, or why it could not be."""

    def save_cursor(self, principal: str, name: str, stream: Stream, seq: int,
                    then: Callable[[str | None], None]) -> None:
        """Keep a named cursor's position; ``then`` gets None once it is stored, or why it
        could not be."""

    def resume(self) -> None:
        """After a failure (``Bus.failed``) and once nothing is pending: try again."""


class Resume(NamedTuple):
    """What a client that saw (seq, epoch) gets: every message after ``after``."""

    recovered: bool
    after: int
    reason: str | None


def plan_resume(stream: Stream, earliest: int, seq: int, epoch: str, *,
                shared: bool = False) -> Resume:
    """Resume from the client's last (seq, epoch): exactly what followed it, or, when that is
    no longer known, what there is (from ``earliest``, the first seq still held), with why.
    ``shared``: the stream is a cluster's (its store numbers), so a seq ahead of this node may
    be one another node has read already: the client waits for this one to get there
    (arqond/core/replay.py)."""
    if epoch != stream.epoch:
        return Resume(False, earliest - 1, f"epoch {epoch} is gone (the stream's past was "
                      f"lost; it is now epoch {stream.epoch})")
    if seq > stream.committed_seq and not shared:
        return Resume(False, stream.committed_seq, f"seq {seq} is ahead of the stream "
                      f"(its last is {stream.committed_seq})")
    if seq + 1 < earliest:
        return Resume(False, earliest - 1, f"seq {seq + 1} is no longer kept (retention); the "
                      f"earliest kept is {earliest}")
    return Resume(True, seq, None)


def check_since(value: Any) -> tuple[int, str]:
    """A ``since`` argument: {"seq": N, "epoch": E}; ValueError names what is wrong."""
    if not isinstance(value, dict) or set(value) != {"seq", "epoch"} \
            or isinstance(value["seq"], bool) or not isinstance(value["seq"], int) \
            or value["seq"] < 0 or not isinstance(value["epoch"], str):
        raise ValueError('since must be {"seq": N, "epoch": "E"} as the last message seen '
                         "carried them in its metadata")
    return value["seq"], value["epoch"]
