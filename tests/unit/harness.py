"""In-process harnesses for the I/O-free core (arqond/core), with assertion helpers.

A ``BusHarness`` is a real Bus whose clients' Sinks are lists: ``client.send(frame)`` returns
the frames that one frame caused its sender to receive, ``client.command(name, args)`` the
response after checking the ``command_response`` ack, and every client keeps what reached it
unread until a test takes it, so ``assert_silent`` can show that nothing else arrived.
``ManualTimers`` is the Timers port (arqond/core/timers.py) driven by hand with ``advance``.
No sockets, no event loop, no clock of the test's own: what the daemon tests prove on the
wire once, these prove rule by rule (in the spirit of websockets' tests/utils.py and h11's
tests/helpers.py).
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Callable, Hashable

import orjson

from arqond import config as configuration
from arqond.core import principal as principals
from arqond.core.bus import Bus, BusSettings
from arqond.core.clients import Client
from arqond.core.commands import Command
from arqond.core.principal import Principal
from arqond.core.store import Store
from arqond.core.streams import Record, Stored, Stream

SERVER = "arqonbus"
# An admin, as root on the control socket is one.
ROOT = principals.local(0, frozenset({0}), "root", admin=True, moo_member=True)
_uids = itertools.count(1000)


def local_user(*, member: bool = False) -> Principal:
    """A local user of its own (a fresh uid each time), not an admin: each harness client is
    charged and judged on its own unless a test gives two the same principal."""
    uid = next(_uids)
    return principals.local(uid, frozenset({uid}), f"user{uid}", admin=False,
                            moo_member=member)


class ListSink:
    """A client's Sink that keeps every frame it is handed, decoded; full after ``capacity``
    frames (send returns False, as a transport's bounded buffer would)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.frames: list[dict[str, Any]] = []
        self.capacity = capacity
        self.closed: tuple[int, str] | None = None
        self.backlog = 0        # what buffered() says: a test fills the buffer by setting it

    def send(self, frame: bytes) -> bool:
        if self.capacity is not None and len(self.frames) >= self.capacity:
            return False
        self.frames.append(orjson.loads(frame))
        return True

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def buffered(self) -> int:
        return self.backlog


class ManualTimers:
    """The Timers port with a clock that moves only when the test says so.

    ``advance(seconds)`` fires every timer that falls due, in due order (arming order for a
    tie), with ``now`` at each one's due time, so a timer armed by a firing fires too if it
    falls due within the same advance.
    """

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.armed: dict[Hashable, tuple[float, int, Callable[[], None]]] = {}
        self._order = itertools.count()

    def arm(self, key: Hashable, delay: float, fire: Callable[[], None]) -> None:
        self.armed[key] = (self.now + delay, next(self._order), fire)

    def disarm(self, key: Hashable) -> None:
        self.armed.pop(key, None)

    def due(self, key: Hashable) -> float | None:
        """Seconds until ``key`` fires, or None when it is not armed."""
        return self.armed[key][0] - self.now if key in self.armed else None

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while True:
            due = [(when, order, key) for key, (when, order, _) in self.armed.items()
                   if when <= until]
            if not due:
                break
            when, _, key = min(due, key=lambda item: item[:2])
            fire = self.armed.pop(key)[2]   # popped first, as LoopTimers does: fire may re-arm
            self.now = when
            fire()
        self.now = until


class TestClient:
    """One client of a BusHarness: the core's Client, its sink, and what it has not read."""

    __test__ = False   # not a pytest test class

    def __init__(self, harness: "BusHarness", client: Client, sink: ListSink) -> None:
        self.harness = harness
        self.client = client
        self.sink = sink
        self.unread: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] | None = None
        self._seen = 0

    @property
    def id(self) -> str:
        return self.client.id

    def _collect(self) -> list[dict[str, Any]]:
        new = self.sink.frames[self._seen:]
        self._seen = len(self.sink.frames)
        self.unread.extend(new)
        return new

    def send(self, frame: dict[str, Any] | str | bytes) -> list[dict[str, Any]]:
        """Hand one frame to the Bus as the transport would; the frames it caused this client
        to receive (they are not left unread)."""
        self._collect()
        raw = frame if isinstance(frame, (str, bytes)) else orjson.dumps(frame)
        self.harness.bus.receive(self.client, raw)
        caused = self._collect()
        del self.unread[len(self.unread) - len(caused):]
        return caused

    def command(self, name: str, args: dict[str, Any] | None = None,
                **extra: Any) -> dict[str, Any]:
        """Send a command; return its response after checking the command_response ack."""
        frames = self.send({"type": "command", "command": name, "args": args or {}, **extra})
        assert [f["type"] for f in frames] == ["response", "command_response"], frames
        response, ack = frames
        assert ack["id"] == response["request_id"] and ack["request_id"] == response["request_id"]
        assert ack["payload"] == {"result": "ok"} and ack["sender"] == SERVER
        return response

    def ok(self, name: str, args: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """Run a command that must succeed; its data."""
        response = self.command(name, args, **extra)
        assert response["status"] == "success", response
        return response["payload"]["data"]

    def take(self) -> list[dict[str, Any]]:
        """Every frame that reached this client since it last looked, oldest first."""
        self._collect()
        frames, self.unread = self.unread, []
        return frames

    def next(self, kind: str | None = None) -> dict[str, Any]:
        """The oldest unread frame (of type ``kind``, if given)."""
        self._collect()
        assert self.unread, "no frame arrived"
        frame = self.unread.pop(0)
        assert kind is None or frame["type"] == kind, frame
        return frame

    def assert_silent(self) -> None:
        """Nothing reached this client that it has not looked at."""
        self._collect()
        assert not self.unread, f"expected nothing, got {self.unread}"


# Where the harness's clients start unless a test says otherwise: the tests are written for
# clients that begin in science:general, whatever arqond's own default becomes (issue 19).
DEFAULT_TARGET = {"default_room": "science", "default_channel": "general"}


class BusHarness:
    """A Bus with settings, manual timers, a record of its events, and test clients."""

    def __init__(self, settings: BusSettings | None = None, **fields: Any) -> None:
        # 2025-01-01T00:00:00Z: receipt times look like times.
        self.timers = ManualTimers(now=1735689600.0)
        # The bus's clock is the timers': a test moves both with timers.advance or .now.
        self.bus = Bus(settings or BusSettings(**{**DEFAULT_TARGET, **fields}),
                       clock=lambda: self.timers.now)
        self.bus.timers = self.timers
        # op.store, as app.py plugs it.
        self.store = Store(configuration.defaults().store, self.bus.charges)
        self.bus.plug(commands=self.store.commands())
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.bus.plug(on_event=lambda event, data: self.events.append((event, data)))

    def plug(self, part: Any) -> Any:
        """Plug a part (Cron, Omega, Webhooks, Casil...) as app.py does: its commands, its
        listener of bus events, and as inspector when it is one; returns it."""
        commands: dict[str, Command] = part.commands()
        self.bus.plug(commands=commands, on_event=getattr(part, "on_event", None),
                      inspector=part if hasattr(part, "inspect") else None)
        return part

    def connect(self, transport: str = "test", *, capacity: int | None = None,
                principal: Principal | None = None, claims: dict[str, Any] | None = None,
                admin: bool = False, **attach: Any) -> TestClient:
        """A client attached as a transport would attach it: as ``principal``, or root when
        ``admin``, or the one a token's ``claims`` make, or a local user of its own; its
        welcome frame, if any, is read (``client.welcome``)."""
        if principal is None:
            principal = ROOT if admin else \
                principals.token(claims, peer_host="192.0.2.1") if claims else local_user()
        sink = ListSink(capacity)
        client = TestClient(self, self.bus.attach(sink, transport, principal, **attach), sink)
        if attach.get("welcome", True):
            client.welcome = client.next("message")
        return client

    def admin(self, **attach: Any) -> TestClient:
        return self.connect(admin=True, **attach)

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [data for event, data in self.events if event == name]


# -- assertions on frames ------------------------------------------------------------------

def _text_matches(actual: str, expected: str | re.Pattern[str]) -> bool:
    if isinstance(expected, re.Pattern):
        return expected.fullmatch(actual) is not None
    return actual == expected


def assert_error(frames: list[dict[str, Any]], code: str, text: str | re.Pattern[str], *,
                 request_id: Any = ...) -> dict[str, Any]:
    """``frames`` is exactly one error frame from arqond, with ``code`` and the message
    ``text`` (the whole of it; a compiled pattern must match the whole of it)."""
    assert len(frames) == 1, frames
    error = frames[0]
    assert error["type"] == "error" and error["sender"] == SERVER, error
    assert error["error_code"] == code, error
    assert _text_matches(error["error"], text), error["error"]
    assert error["payload"]["errors"], error
    if request_id is not ...:
        assert error.get("request_id") == request_id, error
    return error


def assert_refused(response: dict[str, Any], code: str,
                   text: str | re.Pattern[str]) -> dict[str, Any]:
    """A command response that failed with ``code`` and the message ``text``; its data."""
    assert response["type"] == "response" and response["status"] == "error", response
    assert response["error_code"] == code, response
    assert _text_matches(response["error"], text), response["error"]
    assert response["payload"]["message"] == response["error"]
    return response["payload"]["data"]


def assert_ack(frames: list[dict[str, Any]], env_id: str | None = None) -> dict[str, Any]:
    """``frames`` is exactly the message_response ack of a routed frame."""
    assert len(frames) == 1 and frames[0]["type"] == "message_response", frames
    ack = frames[0]
    assert ack["sender"] == SERVER
    if env_id is not None:
        assert ack["id"] == env_id
    return ack


def beside_stream(metadata: dict[str, Any]) -> dict[str, Any]:
    """A delivered message's metadata without what its stream stamps on it (seq, epoch)."""
    return {key: value for key, value in metadata.items() if key not in ("seq", "epoch")}


class ManualStore:
    """The Store port (arqond/core/streams.py) kept in memory and driven by hand: ``commit``
    stores what was appended (as the writer thread's turn would), ``fail`` refuses it,
    ``answer_reads`` answers the replays' reads."""

    durability = "write"
    numbers = False

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.queue: list[Record] = []
        self.stored: dict[Stream, list[Stored]] = {}
        self.reads: list[tuple[Stream, int, int, Callable[[list[Stored]], None]]] = []
        self.failing = False
        self.forgotten: list[Stream] = []
        self.untold = 0             # stored, the Bus not told yet
        self.cursors: dict[tuple[str, str, str, str], tuple[int, str]] = {}
        bus.store = self

    def append(self, record: Record) -> None:
        self.queue.append(record)

    def commit(self, count: int | None = None) -> None:
        """Store the next ``count`` (all) appended records and tell the Bus."""
        self.write(count)
        self.tell()

    def write(self, count: int | None = None) -> None:
        """Store them without telling the Bus yet, as the writer thread does before its
        call reaches the event loop: reads see them already."""
        count = len(self.queue) if count is None else count
        done, self.queue = self.queue[:count], self.queue[count:]
        for record in done:
            self.stored.setdefault(record.stream, []).append(
                Stored(record.seq, record.received, record.frame))
        self.untold += len(done)

    def tell(self) -> None:
        told, self.untold = self.untold, 0
        self.bus.committed(told, {})

    def fail(self, why: str = "the disk is full") -> None:
        done, self.queue = self.queue, []
        self.failing = True
        self.bus.failed(len(done), why)

    def resume(self) -> None:
        self.failing = False

    def forget(self, stream: Stream) -> None:
        self.forgotten.append(stream)
        self.stored.pop(stream, None)

    def keep(self, stream: Stream, then: Callable[[str | None], None]) -> None:
        if self.failing:
            then("the disk is full")
            return
        self.stored.setdefault(stream, [])
        then(None)

    def save_cursor(self, principal: str, name: str, stream: Stream, seq: int,
                    then: Callable[[str | None], None]) -> None:
        if self.failing:
            then("the disk is full")
            return
        self.cursors[principal, name, stream.room, stream.channel] = (seq, stream.epoch)
        then(None)

    def read(self, stream: Stream, after: int, before: int, limit: int) -> list[Stored]:
        rows = [m for m in self.stored.get(stream, []) if after < m.seq < before]
        return rows[-limit:]

    def read_later(self, stream: Stream, after: int, limit: int,
                   then: Callable[[list[Stored]], None]) -> None:
        self.reads.append((stream, after, limit, then))

    def answer_reads(self) -> int:
        """Answer every read asked so far (not those asked while answering)."""
        reads, self.reads = self.reads, []
        for stream, after, limit, then in reads:
            then([m for m in self.stored.get(stream, []) if m.seq > after][:limit])
        return len(reads)

    def drop_through(self, stream: Stream, seq: int) -> None:
        """Retention let messages up to ``seq`` go."""
        self.stored[stream] = [m for m in self.stored.get(stream, []) if m.seq > seq]
        self.bus.committed(0, {stream: seq + 1})
