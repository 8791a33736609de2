"""In-process harness for the MOO core (arqond/core/moo): the Zgents hub on a real Bus, with
timers that move only when told, a clock that follows them, and socket sessions over a fake
link, with assertion helpers in the spirit of websockets' tests/test_protocol.py."""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from arqond import config as configuration
from arqond.core import principal as principals
from arqond.core.bus import Bus
from arqond.core.clients import Client
from arqond.core.moo.owners import owners_of
from arqond.core.moo.mailbox import Mailbox
from arqond.core.moo.registry import Spec, Zgent
from arqond.core.moo.session import Session
from arqond.core.moo.zgents import Served, Zgents
from arqond.unix import Peer
from tests.unit.harness import ROOT, ManualTimers

# Wall time at the start of every harness: 2026-02-12T10:00:00Z.
EPOCH = 1770890400.0
OWN_UID = 4242          # the uid arqond runs as, in the harness
ANY = object()          # matches any value in assert_error


class FakeLink:
    """A socket as a session sees it. The peer reads everything at once unless ``stalled``;
    ``closed`` says how arqond closed it: None, "close" (after flushing) or "abort"."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.unsent = 0
        self.stalled = False
        self.peer_gone = False
        self.fail_writes = False   # the next write fails as on EPIPE, closing the link
        self.closed: str | None = None

    def queue(self, data: bytes) -> int:
        if self.closed is not None:
            return -1
        if self.fail_writes:
            self.closed = "abort"
            return -1
        self.written.append(data)
        if self.stalled:
            self.unsent += len(data)
        return self.unsent

    def queued(self) -> int:
        return self.unsent

    def hung_up(self) -> bool:
        return self.closed is not None or self.peer_gone

    def close(self) -> None:
        self.closed = self.closed or "close"

    def abort(self) -> None:
        self.closed = "abort"


class Connection:
    """One client of a Zgent socket: lines in, and what came back, one assertion at a time."""

    def __init__(self, zgents: Zgents, zgent: str, uid: int, gid: int, pid: int,
                 gids: frozenset[int]) -> None:
        self.link = FakeLink()
        peer = Peer(pid, uid, gid)
        # As arqond/principals.py resolves a Unix peer: root and arqond's own user are admins.
        self.session = Session(zgents, zgent, peer, principals.local(
            uid, gids, None, admin=uid in (0, OWN_UID), moo_member=True), self.link)
        self.read = 0

    def send(self, line: Any) -> None:
        """An object as one JSON line, or raw bytes as they are."""
        self.session.receive_data(line if isinstance(line, bytes) else orjson.dumps(line) + b"\n")

    def call(self, method: str, params: Any = None, request_id: Any = 1) -> dict[str, Any]:
        request: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            request["params"] = params
        self.send(request)
        return self.next()

    def received(self) -> list[dict[str, Any]]:
        """Every line written back since the last look."""
        lines = self.link.written[self.read:]
        self.read = len(self.link.written)
        return [orjson.loads(line) for line in lines]

    def next(self) -> dict[str, Any]:
        got = self.received()
        assert len(got) == 1, f"expected one line back, got {got}"
        return got[0]

    def assert_reply(self, request_id: Any, result: Any) -> None:
        assert self.next() == {"jsonrpc": "2.0", "id": request_id, "result": result}

    def assert_error(self, code: int, request_id: Any = ANY, message: str = "") -> str:
        """The next line is a JSON-RPC error ``code``; ``message`` must be part of its text."""
        got = self.next()
        assert set(got) == {"jsonrpc", "id", "error"} and got["jsonrpc"] == "2.0", got
        assert got["error"]["code"] == code, got
        assert request_id is ANY or got["id"] == request_id, got
        assert message in got["error"]["message"], got
        return got["error"]["message"]

    def assert_silent(self) -> None:
        assert self.received() == []

    def assert_open(self) -> None:
        assert self.link.closed is None

    def assert_closed(self, how: str) -> None:
        assert self.link.closed == how

    def hang_up(self) -> None:
        """The peer goes away for good: the adapter reports the connection lost."""
        self.link.peer_gone = True
        self.session.lost()


class Recorder:
    """A bus client's sink that keeps every frame."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def send(self, frame: bytes) -> bool:
        self.frames.append(orjson.loads(frame))
        return True

    def close(self, code: int, reason: str) -> None:
        pass


class Moo:
    """The MOO core as arqond runs it, minus I/O. Zgents named at creation are served."""

    def __init__(self, *names: str, moo: dict[str, Any] | None = None,
                 server: dict[str, Any] | None = None) -> None:
        values = dict(configuration.defaults().values)
        values.update({f"moo.{key}": value for key, value in (moo or {}).items()})
        values.update({f"server.{key}": value for key, value in (server or {}).items()})
        self.config = configuration.Config(values)
        self.bus = Bus()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.bus.listeners.append(lambda event, fields: self.events.append((event, fields)))
        self.timers = ManualTimers()
        self.changes = 0
        self.groups: dict[int, frozenset[int]] = {}   # supplementary groups by uid
        self.pids = itertools.count(100)
        self.zgents = Zgents(self.bus, self.config, self.timers, self.now,
                             lambda: self.timers.now, on_change=self._changed)
        for name in names:
            self.add(name)

    def now(self) -> float:
        return EPOCH + self.timers.now

    def _changed(self) -> None:
        self.changes += 1

    def add(self, name: str, owner: str | None = None, **table: Any) -> Served:
        spec = Spec.from_table(name, table, "command", owner)
        owners, unknown = owners_of(spec, lambda user: None, lambda group: None)
        assert not unknown
        zgent = Zgent(spec, f"/m/{name}-inbox", f"/m/{name}.sock",
                      f"/l/{name}-narrative.jsonl", self.now())
        return self.zgents.add(zgent, Mailbox(self.config.moo.mailbox_size), owners)

    def connect(self, zgent: str = "dreader", *, uid: int = OWN_UID,
                gid: int = OWN_UID) -> Connection:
        return Connection(self.zgents, zgent, uid, gid, next(self.pids),
                          self.groups.get(uid, frozenset({gid})))

    def watch(self, room: str, channel: str) -> list[dict[str, Any]]:
        """The envelopes the bus routes to ``room:channel`` from now on (watched by root,
        who may read every inbox)."""
        recorder = Recorder()
        client: Client = self.bus.attach(recorder, "test", ROOT, welcome=False,
                                         join_default=False)
        self.bus.router.join(client, room, channel)
        return recorder.frames

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.events if event == name]

    def mailbox(self, name: str) -> list[dict[str, Any]]:
        return list(self.zgents.served[name].mailbox.messages)

    def entry(self, name: str) -> dict[str, Any]:
        return self.zgents.registry.entries()[name]
