"""An in-process stand-in for the tailer: a log dir in memory and an adapter that carries out
the follower's actions on it, recording them, with assertion helpers for the tests."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from arqond.core.narrative import follow
from arqond.core.narrative.actions import Action, Announce, Close, Find, Open, Publish, Read
from arqond.core.narrative.files import FollowedFile, Record, State
from arqond.core.narrative.ids import FINGERPRINT_BYTES

LOG = "/log"
MOO = "/moo"
BROADCAST_TARGET = f"{MOO}/broadcast.jsonl"
DEV = 2049


class FakeStat(NamedTuple):
    st_dev: int
    st_ino: int
    st_mode: int
    st_size: int


@dataclass(eq=False)
class Inode:
    ino: int
    mode: int = stat.S_IFREG | 0o644
    data: bytearray = field(default_factory=bytearray)

    def stat(self) -> FakeStat:
        return FakeStat(DEV, self.ino, self.mode, len(self.data))


class Disk:
    """Paths to inodes, and symbolic links; an inode outlives its names while it is open."""

    def __init__(self) -> None:
        self.paths: dict[str, Inode] = {}
        self.links: dict[str, str] = {}
        self.next_ino = 100
        self.unreadable: set[str] = set()

    def create(self, path: str, data: bytes = b"", mode: int = stat.S_IFREG | 0o644,
               ino: int | None = None) -> Inode:
        if ino is None:
            self.next_ino += 1
            ino = self.next_ino
        inode = self.paths[path] = Inode(ino, mode, bytearray(data))
        return inode

    def append(self, path: str, data: bytes) -> None:
        inode = self.paths.get(path) or self.create(path)
        inode.data += data

    def rename(self, old: str, new: str) -> None:
        self.paths[new] = self.paths.pop(old)

    def unlink(self, path: str) -> None:
        self.paths.pop(path, None)
        self.links.pop(path, None)

    def truncate(self, path: str, size: int = 0) -> None:
        del self.paths[path].data[size:]

    def copy(self, source: str, destination: str) -> None:
        self.create(destination, bytes(self.paths[source].data))

    def symlink(self, path: str, to: str) -> None:
        self.links[path] = to

    def look(self, name: str) -> tuple[FakeStat | None, str | None]:
        """What the tailer's _look gives: lstat, and for a link to the broadcast log its real
        path with what is there."""
        path = f"{LOG}/{name}"
        if path in self.links:
            to = self.links[path]
            if to != BROADCAST_TARGET:
                return FakeStat(DEV, 1, stat.S_IFLNK | 0o777, len(to)), None
            inode = self.paths.get(to)
            return (inode.stat() if inode else None), to
        inode = self.paths.get(path)
        return (inode.stat() if inode else None), None

    def names(self) -> list[str]:
        return sorted(path[len(LOG) + 1:] for path in [*self.paths, *self.links]
                      if path.startswith(LOG + "/"))


class Line(NamedTuple):
    path: str
    offset: int
    data: bytes
    key: str


class Bridge:
    """The follower of one log dir and an adapter on a Disk; ``done`` lists every action."""

    def __init__(self, disk: Disk | None = None, *, read_from: str = "beginning",
                 max_line_bytes: int = 1024, rotate_wait: float = 5.0,
                 max_files: int = 64) -> None:
        self.disk = disk or Disk()
        self.clock = 1000.0
        self.settings = follow.Settings(read_from, max_line_bytes, rotate_wait, max_files, LOG,
                                        BROADCAST_TARGET)
        self.follower = follow.Follower(self.settings, lambda: self.clock)
        self.open: dict[FollowedFile, Inode] = {}
        self.published: list[Line] = []
        self.done: list[Action] = []

    # -- the adapter's side ---------------------------------------------------------------

    def run(self, actions: follow.Actions) -> list[Action]:
        """Carry out ``actions`` and what their answers ask for; returns all of them."""
        start = len(self.done)
        self._carry_out(actions)
        return self.done[start:]

    def _carry_out(self, actions: follow.Actions) -> None:
        for action in actions:
            self.done.append(action)
            answer = getattr(self, f"_{type(action).__name__.lower()}")(action)
            if answer:
                self._carry_out(answer)

    def _open(self, action: Open) -> follow.Actions:
        inode = self.disk.paths.get(action.path)
        if inode is None:
            return self.follower.open_failed(action, "No such file or directory")
        if action.path in self.disk.unreadable:
            return self.follower.open_failed(action, "Permission denied")
        self.open[action.file] = inode
        size = len(inode.data)
        tail = bytes(inode.data[max(0, size - action.tail):]) if action.tail else b""
        return self.follower.opened(action, inode.stat(), bytes(inode.data[:FINGERPRINT_BYTES]),
                                    tail)

    def _read(self, action: Read) -> follow.Actions:
        inode = self.open[action.file]
        data = bytes(inode.data[action.offset:action.offset + action.size])
        return self.follower.data_read(action, data, bytes(inode.data[:FINGERPRINT_BYTES]))

    def _publish(self, action: Publish) -> None:
        file = action.file
        assert file.key is not None
        self.published += [Line(file.path, line.offset, line.data, file.key)
                           for line in action.lines]

    def _close(self, action: Close) -> None:
        self.open.pop(action.file, None)

    def _announce(self, action: Announce) -> None:
        return None

    def _find(self, action: Find) -> follow.Actions:
        entries = [(name, f"{LOG}/{name}", self.disk.look(name)[0]) for name in self.disk.names()]
        answer = action.choose([entry for entry in entries if entry[2] is not None],
                               self._head_of)
        return self.follower.found(action, answer)

    def _head_of(self, path: str) -> bytes | None:
        inode = self.disk.paths.get(path)
        return bytes(inode.data[:FINGERPRINT_BYTES]) if inode else None

    # -- observations, as the tailer makes them ---------------------------------------------

    def see(self, *names: str, first_start: bool = False) -> list[Action]:
        start = len(self.done)
        for name in names:
            self.run(self.follower.name_seen(name, *self.disk.look(name),
                                             first_start=first_start))
        return self.done[start:]

    def step(self) -> list[Action] | None:
        """One pump step (one chunk of one file); None when no file is ready."""
        file = self.follower.next_ready()
        if file is None:
            return None
        start = len(self.done)
        inode = self.open.get(file)
        if inode is None:
            self.run(self.follower.read_failed(file, "Bad file descriptor"))
        else:
            self.run(self.follower.sized(file, len(inode.data)))
        return self.done[start:]

    def pump(self, limit: int = 10_000) -> list[Action]:
        start = len(self.done)
        for _ in range(limit):
            if self.step() is None:
                return self.done[start:]
        raise AssertionError("the follower never ran out of work")

    def sweep(self, seconds: float = 0.0) -> list[Action]:
        """The tailer's sweep after ``seconds``: tick, then every name looked at again."""
        self.clock += seconds
        start = len(self.done)
        self.run(self.follower.tick())
        self.see(*sorted(set(self.disk.names()) | set(self.follower.names())))
        self.follower.rescanned()
        return self.done[start:]

    def start(self, records: list[Record] | None = None) -> list[Action]:
        """The tailer's start: checkpoints resumed, then every name in the log dir."""
        start = len(self.done)
        for record in records or []:
            self.run(self.follower.resume(record, *self.disk.look(record.name)))
        self.see(*self.disk.names(), first_start=records is None)
        return self.done[start:]

    def restart(self) -> "Bridge":
        """Stop (checkpoints saved) and a new process on the same disk, resumed from them."""
        records = self.follower.records()
        self.run(self.follower.stop())
        assert not self.open
        again = Bridge(self.disk, read_from=self.settings.read_from,
                       max_line_bytes=self.settings.max_line_bytes,
                       rotate_wait=self.settings.rotate_wait, max_files=self.settings.max_files)
        again.start(records)
        return again

    # -- what the tests read ---------------------------------------------------------------

    def states(self) -> dict[str, str]:
        return {file.path: file.state.name for file in self.follower.followed()}

    def file(self, path: str) -> FollowedFile:
        return next(file for file in self.follower.followed() if file.path == path)


# -- assertion helpers ---------------------------------------------------------------------

def of(kind: type, actions: list[Action]) -> list[Any]:
    return [action for action in actions if isinstance(action, kind)]


def assert_publishes(actions: list[Action], *, offsets: list[int],
                     data: list[bytes] | None = None, path: str | None = None) -> None:
    lines = [line for publish in of(Publish, actions) for line in publish.lines]
    assert [line.offset for line in lines] == offsets, lines
    if data is not None:
        assert [line.data for line in lines] == data
    if path is not None:
        assert {publish.file.path for publish in of(Publish, actions)} <= {path}


def assert_opens(actions: list[Action], *paths: str) -> None:
    assert [action.path for action in of(Open, actions)] == list(paths)


def assert_closes(actions: list[Action], *paths: str) -> None:
    assert [action.file.path for action in of(Close, actions)] == list(paths)


def assert_state(bridge: Bridge, path: str, state: State) -> None:
    assert bridge.file(path).state is state, bridge.states()


def lines_of(*seqs: int, name: str = "d") -> bytes:
    return b"".join(b'{"n":"%s","seq":%d}\n' % (name.encode(), seq) for seq in seqs)
