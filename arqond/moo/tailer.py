"""The narrative bridge: every complete line appended under LOG_DIR is published on the bus once.

inotify (read on the event loop through ``loop.add_reader``) says which names changed; a
periodic stat sweep repeats the work in case an event was missed or the queue overflowed. Files
are followed by identity (device, inode and a fingerprint of their first line), not by name, so
rename+create rotation, copytruncate, truncation, deletion and inode reuse are told apart:

- a file renamed or deleted away is read to its end before its successor at the same name, and
  kept open ``rotate_wait`` seconds for late writes;
- a file that got shorter than the read position (truncation, copytruncate) is read again from
  0, after the lines it lost are taken from a copy of it in the directory when there is one;
- the same inode with a different first line is a new file.

A checkpoint (``checkpoints.py``) records, per file, the first byte not yet published; it moves
only after ``bus.publish`` returned. Message ids derive from the file identity and the line's
offset, so a line published again after ``kill -9`` carries the same id.

Memory is bounded: each read takes at most ``CHUNK`` bytes, a line keeps at most
``max_line_bytes`` (longer lines are published cut, marked malformed), at most ``max_files``
files are followed. The pump reads one chunk of one file per step and yields to the loop between
steps, so a large backlog never stalls other clients, and files take turns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from inotify_simple import INotify
from inotify_simple import flags as inotify_flags

from arqond.config import Config
from arqond.core import narrative
from arqond.core.bus import Bus
from arqond.core.metrics import Sample, counter, counters_of, gauge
from arqond.core.framing import Line, LineFramer
from arqond.core.narrative import QueryTracker, Target
from arqond.moo.checkpoints import CheckpointStore, CorruptCheckpoints, Record
from arqond.log import NOTICE, log_event

log = logging.getLogger("arqond.narrative")

CHUNK = 65536
BROADCAST = "broadcast.jsonl"
DIR_EVENTS = (inotify_flags.CREATE | inotify_flags.MODIFY | inotify_flags.MOVED_FROM
              | inotify_flags.MOVED_TO | inotify_flags.DELETE | inotify_flags.CLOSE_WRITE
              | inotify_flags.ATTRIB)
SELF_EVENTS = inotify_flags.DELETE_SELF | inotify_flags.MOVE_SELF
OTHER_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))

ZgentSeen = Callable[[str, bool], None]
QueryHook = Callable[[str, dict[str, Any]], None]


class TailerError(Exception):
    """The log dir or state dir cannot be used; arqond does not start."""


def _ignore(*_: Any) -> None:
    return None


@dataclass
class Settings:
    read_from: str
    max_line_bytes: int
    sweep_interval: float
    rotate_wait: float
    max_files: int
    max_depth: int

    @classmethod
    def of(cls, config: Config) -> "Settings":
        section = config.narrative
        return cls(section.read_from, section.max_line_bytes, section.sweep_interval,
                   section.rotate_wait, section.max_files, config.server.max_json_depth)


class TrackedFile:
    """One open file and how far it has been published."""

    def __init__(self, name: str, path: str, target: Target, fd: int, st: os.stat_result,
                 offset: int, generation: int, max_line_bytes: int) -> None:
        self.name = name            # the name it is published under
        self.path = path
        self.target = target
        self.fd = fd
        self.dev, self.ino = st.st_dev, st.st_ino
        self.generation = generation
        self.fingerprint: str | None = None
        self.key: str | None = None
        self.buffer = LineFramer(max_line_bytes, offset)
        self.published = offset     # first byte not yet published: the checkpoint
        self.attached = True        # still at its name
        self.detached_at = 0.0
        self.caught_up = False      # read to its end since it left its name
        self.after: TrackedFile | None = None  # a predecessor to finish first

    def learn_identity(self, fp: str | None, key: str | None = None) -> None:
        self.fingerprint = fp
        if fp is not None:
            self.key = key or narrative.identity_key(self.dev, self.ino, fp, self.generation)

    def record(self) -> Record:
        return Record(self.name, self.dev, self.ino, self.fingerprint, self.key,
                      self.generation, self.published)


def _head(fd: int) -> bytes:
    return os.pread(fd, narrative.FINGERPRINT_BYTES, 0)


def _end_of_last_line(fd: int, size: int, limit: int) -> int:
    """Where reading "from the end" starts: after the last newline, so a line being written
    when arqond starts is still published whole. Looks back at most ``limit`` bytes."""
    position = size
    while position > 0 and size - position < limit:
        start = max(0, position - CHUNK)
        newline = os.pread(fd, position - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return size if position > 0 else 0


# What /metrics exports of the narrative bridge (arqonbus_narrative_<name>_total).
TAILER_COUNTERS = {
    "lines_published": "Narrative lines published on the bus.",
    "lines_malformed": "Lines published as {\"raw\": ...} with metadata.malformed.",
    "lines_cut": "Lines longer than narrative.max_line_bytes, published cut.",
    "files_refused": "Files in the log dir refused (symlink, FIFO, unreadable, bad name).",
    "rotations": "Rotations by rename or deletion followed.",
    "truncations": "Truncations (copytruncate or in place) followed.",
    "recovered_from_copies": "Truncated files whose unread lines came from a rotated copy.",
    "queue_overflows": "inotify queue overflows, caught up by a sweep.",
    "hook_errors": "Errors raised by the MOO layer hooks, each logged.",
    "internal_errors": "Lines that failed in arqond itself (a bug), each logged with its file "
                       "and offset and published as {\"raw\": ...} instead.",
}


class NarrativeTailer:
    """The log-dir watcher, an adapter like the transports (start, stop, reload).

    Hooks for the MOO layer, all optional and called synchronously on the loop (an exception in
    one is logged and counted in ``hook_errors``, never stops the bridge):

    - ``on_zgent_seen(name, new_file)``: ``new_file`` True when NAME-narrative.jsonl is found
      (at start-up or created later): register the Zgent; False after each batch of new lines
      in it: refresh its lastSeen.
    - ``on_query(name, obj)``: a valid request line appended to NAME-queries.jsonl (a JSON-RPC
      request or a schema message), to be delivered to NAME like an inbox request.
    - ``on_reply(requester, obj)``: a ``query-response`` line in NAME's narrative whose
      ``queryId`` matches an open query from NAME-queries.jsonl; ``requester`` is that query's
      ``replyTo`` (or ``from``). Each query is answered once; at most 4096 stay open.
    """

    name = "narrative"

    def __init__(self, bus: Bus, config: Config, *, on_zgent_seen: ZgentSeen | None = None,
                 on_query: QueryHook | None = None, on_reply: QueryHook | None = None) -> None:
        self.bus = bus
        self.settings = Settings.of(config)
        self.log_dir = config.moo.log_dir
        self.broadcast_target = os.path.join(config.moo.dir, BROADCAST)
        self.store = CheckpointStore(config.server.state_dir)
        self.on_zgent_seen = on_zgent_seen or _ignore
        self.on_query = on_query or _ignore
        self.on_reply = on_reply or _ignore
        self.queries = QueryTracker()
        self.at_name: dict[str, TrackedFile] = {}
        self.draining: list[TrackedFile] = []
        self.ready: OrderedDict[TrackedFile, None] = OrderedDict()
        self.refused: dict[str, tuple[int, int, str]] = {}
        self.wake = asyncio.Event()
        self.inotify: INotify | None = None
        self.watches: dict[int, str] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.dirty = False
        # Counters, exported by the HTTP metrics.
        self.lines_published = 0
        self.lines_malformed = 0
        self.lines_cut = 0
        self.files_refused = 0
        self.rotations = 0
        self.truncations = 0
        self.recovered_from_copies = 0
        self.queue_overflows = 0
        self.hook_errors = 0
        self.internal_errors = 0

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        for directory in (self.log_dir, os.path.dirname(self.store.path)):
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                raise TailerError(f"cannot use {directory}: {exc.strerror}") from None
        try:
            self.inotify = INotify(nonblocking=True)
            self.watches[self.inotify.add_watch(self.log_dir, DIR_EVENTS | SELF_EVENTS)] = "log"
            moo_dir = os.path.dirname(self.broadcast_target)
            if os.path.isdir(moo_dir):
                self.watches[self.inotify.add_watch(moo_dir, DIR_EVENTS)] = "moo"
        except OSError as exc:
            raise TailerError(f"cannot watch {self.log_dir}: {exc.strerror}") from None
        self._restore()
        self._save(sync=True)
        loop = asyncio.get_running_loop()
        loop.add_reader(self.inotify.fileno(), self._on_inotify)
        self.tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._sweep())]
        self.wake.set()
        log.info("watching %s: %d file(s)", self.log_dir, len(self.at_name))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.inotify is not None:
            asyncio.get_running_loop().remove_reader(self.inotify.fileno())
            self.inotify.close()
            self.inotify = None
        self._save(sync=True)
        self.store.close()
        for tracked in [*self.at_name.values(), *self.draining]:
            os.close(tracked.fd)
        self.at_name.clear()
        self.draining.clear()

    def reload(self, config: Config) -> None:
        self.settings = Settings.of(config)
        for tracked in [*self.at_name.values(), *self.draining]:
            tracked.buffer.max_bytes = self.settings.max_line_bytes

    @property
    def files(self) -> int:
        return len(self.at_name) + len(self.draining)

    def samples(self) -> list[Sample]:
        return [gauge("arqonbus_narrative_files", "Narrative files followed now.", self.files),
                *counters_of(self, "arqonbus_narrative", TAILER_COUNTERS),
                counter("arqonbus_narrative_checkpoint_writes_total",
                        "Checkpoint saves.", self.store.writes),
                counter("arqonbus_narrative_queries_evicted_total",
                        "Open file-based queries forgotten at the tracker's bound.",
                        self.queries.evicted)]

    # -- start-up: checkpoints against what is on disk now ---------------------------------

    def _restore(self) -> None:
        try:
            records = self.store.load()
        except CorruptCheckpoints as exc:
            log_event(log, logging.ERROR, "checkpoint_corrupt",
                      f"checkpoint file unusable ({exc.reason}); moved to {exc.set_aside}; "
                      "reading every narrative file from its beginning (repeated lines keep "
                      "their ids)", path=exc.set_aside)
            records = []
        from_end = records is None and self.settings.read_from == "end"
        for record in records or []:
            self._resume(record)
        for name in sorted(os.listdir(self.log_dir)):
            if name not in self.at_name:
                self._track(name, from_end=from_end)

    def _resume(self, record: Record) -> TrackedFile | None:
        """Reopen a checkpointed file where it is now: at its name, renamed, or as a copy."""
        target = narrative.target_of(record.name)
        if isinstance(target, str):
            return None
        st = self._admissible(record.name)
        if st is not None and (st.st_dev, st.st_ino) == (record.dev, record.ino):
            tracked = self._open(record.name, target, st, record.offset, record.generation)
            if tracked is None:
                return None
            fp = narrative.fingerprint(_head(tracked.fd))
            if record.fingerprint is None or fp == record.fingerprint:
                tracked.learn_identity(record.fingerprint, record.key)
                self._attach(tracked)
                return tracked
            os.close(tracked.fd)  # the same inode now holds another file
            self.truncations += 1
        found = self._find_elsewhere(record)
        if found is None:
            return None
        path, st = found
        tracked = self._open(record.name, target, st, record.offset, record.generation,
                             path=path)
        if tracked is not None:
            tracked.learn_identity(record.fingerprint, record.key)
            self._drain(tracked)
            log_event(log, logging.INFO, "file_rotated", f"{record.name} was rotated while "
                      f"arqond was stopped; reading the rest of it from {path}",
                      path=path, offset=record.offset)
        return tracked

    def _find_elsewhere(self, record: Record) -> tuple[str, os.stat_result] | None:
        """The checkpointed file under another name (rotated), or a copy of it made before a
        copytruncate; None when it is gone."""
        if record.fingerprint is None:
            return None
        copy = None
        for entry in os.scandir(self.log_dir):
            if entry.name == record.name or entry.is_symlink() or not entry.is_file():
                continue
            st = entry.stat(follow_symlinks=False)
            if st.st_size < record.offset or self._tracked_identity(st) is not None:
                continue
            same_inode = (st.st_dev, st.st_ino) == (record.dev, record.ino)
            if not same_inode and copy is not None:
                continue
            try:
                with open(entry.path, "rb") as handle:
                    fp = narrative.fingerprint(handle.read(narrative.FINGERPRINT_BYTES))
            except OSError:
                continue
            if fp == record.fingerprint:
                if same_inode:
                    return entry.path, st
                copy = (entry.path, st)
        return copy

    def _tracked_identity(self, st: os.stat_result) -> TrackedFile | None:
        for tracked in [*self.at_name.values(), *self.draining]:
            if (tracked.dev, tracked.ino) == (st.st_dev, st.st_ino):
                return tracked
        return None

    # -- names: what is at a name now -------------------------------------------------------

    def _refuse(self, name: str, st: os.stat_result | None, reason: str) -> None:
        """Log a refused name once per (name, file, reason), not at every event or sweep."""
        key = (st.st_dev, st.st_ino, reason) if st is not None else (0, 0, reason)
        if self.refused.get(name) == key:
            return
        self.refused[name] = key
        self.files_refused += 1
        log_event(log, logging.WARNING, "file_refused",
                  f"{os.path.join(self.log_dir, name)}: {reason}; not followed",
                  path=os.path.join(self.log_dir, name))

    def _admissible(self, name: str) -> os.stat_result | None:
        """stat of a followable regular file at ``name``; refusals are logged once."""
        path = os.path.join(self.log_dir, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.refused.pop(name, None)
            return None
        if stat.S_ISLNK(st.st_mode):
            if name != BROADCAST or os.path.realpath(path) != \
                    os.path.realpath(self.broadcast_target):
                self._refuse(name, st, "a symbolic link (only broadcast.jsonl pointing to "
                             f"{self.broadcast_target} is followed)")
                return None
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return None
        for check, kind in OTHER_KINDS:
            if check(st.st_mode):
                self._refuse(name, st, f"{kind}, not a regular file")
                return None
        return st

    def _sync(self, name: str) -> None:
        """Bring the tracking of one name in line with the directory."""
        target = narrative.target_of(name)
        if isinstance(target, str):
            self._sync_other(name, target)
            return
        current = self.at_name.get(name)
        st = self._admissible(name)
        if st is None:
            if current is not None:
                self._detach(current, "deleted or renamed")
            return
        if current is not None and (current.dev, current.ino) == (st.st_dev, st.st_ino):
            self._queue(current)
            return
        if current is not None:
            self._detach(current, "replaced by a new file")
        self._track(name, from_end=False, st=st)

    def _sync_other(self, name: str, reason: str) -> None:
        """A name arqond does not publish: a rotated ``x.jsonl.1`` may be a draining file under
        its new name, still written to; a ``.jsonl`` name that maps to no channel is refused."""
        try:
            st = os.lstat(os.path.join(self.log_dir, name))
        except FileNotFoundError:
            self.refused.pop(name, None)
            return
        tracked = self._tracked_identity(st)
        if tracked is not None:
            self._queue(tracked)
        elif name.endswith(narrative.SUFFIX) and not name.startswith("."):
            self._refuse(name, st, reason)

    def _track(self, name: str, *, from_end: bool,
               st: os.stat_result | None = None) -> TrackedFile | None:
        target = narrative.target_of(name)
        if isinstance(target, str):
            return None
        st = st or self._admissible(name)
        if st is None:
            return None
        known = self._tracked_identity(st)
        if known is not None:  # a followed file under a new name (x-narrative.1.jsonl)
            self._queue(known)
            return None
        tracked = self._open(name, target, st, 0, 0)
        if tracked is None:
            return None
        tracked.learn_identity(narrative.fingerprint(_head(tracked.fd)))
        if from_end:
            start = _end_of_last_line(tracked.fd, st.st_size, self.settings.max_line_bytes)
            tracked.buffer.reset(start)
            tracked.published = start
        self._attach(tracked)
        if target.channel == "narrative" and target.zgent:
            self._call(self.on_zgent_seen, target.zgent, True)
        return tracked

    def _open(self, name: str, target: Target, st: os.stat_result, offset: int,
              generation: int, *, path: str | None = None) -> TrackedFile | None:
        if self.files >= self.settings.max_files:
            self._refuse(name, st, f"max_files ({self.settings.max_files}) files are followed "
                         "already")
            return None
        path = path or os.path.join(self.log_dir, name)
        real = os.path.realpath(path) if name == BROADCAST and path.endswith(BROADCAST) else path
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self._refuse(name, st, f"cannot be read: {exc.strerror}")
            return None
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) or \
                not stat.S_ISREG(opened.st_mode):
            os.close(fd)  # replaced between stat and open: the next event or sweep retries
            return None
        self.refused.pop(name, None)
        return TrackedFile(name, os.path.join(self.log_dir, name), target, fd, st, offset,
                           generation, self.settings.max_line_bytes)

    def _attach(self, tracked: TrackedFile) -> None:
        # A file rotated away from this name is read to its end before this one.
        tracked.after = next((old for old in reversed(self.draining)
                              if old.name == tracked.name), None)
        self.at_name[tracked.name] = tracked
        self.dirty = True
        self._queue(tracked)

    def _detach(self, tracked: TrackedFile, why: str) -> None:
        del self.at_name[tracked.name]
        self.rotations += 1
        log_event(log, logging.INFO, "file_rotated", f"{tracked.path} {why}; reading the old "
                  "file to its end first", path=tracked.path)
        self._drain(tracked)

    def _drain(self, tracked: TrackedFile) -> None:
        tracked.attached = False
        tracked.detached_at = time.monotonic()
        self.draining.append(tracked)
        self.dirty = True
        self._queue(tracked)

    def _queue(self, tracked: TrackedFile) -> None:
        self.ready[tracked] = None
        self.wake.set()

    # -- events ---------------------------------------------------------------------------

    def _on_inotify(self) -> None:
        assert self.inotify is not None
        try:
            events = self.inotify.read(timeout=0)
        except BlockingIOError:
            return
        for event in events:
            if event.mask & inotify_flags.Q_OVERFLOW:
                self.queue_overflows += 1
                log.warning("inotify queue overflowed; rescanning %s", self.log_dir)
                self._rescan()
            elif event.mask & SELF_EVENTS:
                log.error("the watched log dir %s was removed or moved; arqond must be "
                          "restarted once it is back", self.log_dir)
            elif self.watches.get(event.wd) == "log" and event.name:
                self._sync(event.name)
            elif self.watches.get(event.wd) == "moo" and event.name == BROADCAST:
                self._sync(BROADCAST)

    def _rescan(self) -> None:
        names = set(os.listdir(self.log_dir)) | set(self.at_name)
        for name in sorted(names):
            self._sync(name)
        for tracked in list(self.draining):
            self._queue(tracked)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            self._rescan()
            self._close_drained()
            if self.dirty:
                self._save(sync=False)

    def _close_drained(self) -> None:
        now = time.monotonic()
        for tracked in list(self.draining):
            if tracked.caught_up and tracked not in self.ready and \
                    now - tracked.detached_at >= self.settings.rotate_wait:
                self.draining.remove(tracked)
                os.close(tracked.fd)
                self.dirty = True

    # -- reading and publishing ------------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.ready:
                tracked = next(iter(self.ready))
                del self.ready[tracked]
                first = tracked
                while first.after is not None and not first.after.caught_up and \
                        first.after in self.draining:
                    first = first.after
                if first is not tracked:
                    self.ready[tracked] = None  # its turn comes after its predecessor's
                more = self._step(first)
                if more:
                    self.ready[first] = None
                # Yield first: the frames just published are written to the clients' sockets
                # by callbacks already queued (the WebSocket write batching), and only lines
                # that have left arqond may be checkpointed, or a kill -9 could lose them.
                await asyncio.sleep(0)
                if self.dirty:
                    self._save(sync=False)

    def _step(self, tracked: TrackedFile) -> bool:
        """Read and publish at most one chunk; True when more is waiting."""
        try:
            size = os.fstat(tracked.fd).st_size
            if size < tracked.buffer.read_position:
                self._truncated(tracked)
                return True  # via the pump, so a rescued copy goes first
            remaining = size - tracked.buffer.read_position
            if remaining <= 0:
                tracked.caught_up = not tracked.attached
                return False
            data = os.pread(tracked.fd, min(CHUNK, remaining), tracked.buffer.read_position)
            fp = narrative.fingerprint(_head(tracked.fd))
        except OSError as exc:
            log.error("%s: read failed: %s; closing it", tracked.path, exc.strerror)
            self._forget(tracked)
            return False
        if tracked.fingerprint is None:
            tracked.learn_identity(fp)
        elif fp != tracked.fingerprint:
            self._truncated(tracked)  # same inode, another first line: what was read is stale
            return True
        lines = tracked.buffer.feed(data)
        if lines:
            self._publish(tracked, lines)
        return len(data) < remaining

    def _forget(self, tracked: TrackedFile) -> None:
        if self.at_name.get(tracked.name) is tracked:
            del self.at_name[tracked.name]
        if tracked in self.draining:
            self.draining.remove(tracked)
        self.ready.pop(tracked, None)
        os.close(tracked.fd)
        self.dirty = True

    def _truncated(self, tracked: TrackedFile) -> None:
        """Shorter than what was read, or another first line: start over at 0, after taking
        any lines not yet published from a copy of the old content (copytruncate)."""
        self.truncations += 1
        record = tracked.record()
        copy = self._find_elsewhere(record) if tracked.published else None
        if copy is not None and copy[1].st_size > tracked.published:
            path, st = copy
            rescued = self._open(tracked.name, tracked.target, st, tracked.published,
                                 tracked.generation, path=path)
            if rescued is not None:
                rescued.learn_identity(tracked.fingerprint, tracked.key)
                self._drain(rescued)
                tracked.after = rescued
                self.recovered_from_copies += 1
                log_event(log, NOTICE, "file_rotated", f"{tracked.path} was truncated; "
                          f"publishing its lines after offset {tracked.published} from the "
                          f"copy {path} first", path=tracked.path)
        log_event(log, NOTICE, "file_rotated", f"{tracked.path} was truncated or rewritten at "
                  f"offset {tracked.published}; reading it again from the start",
                  path=tracked.path)
        tracked.generation += 1
        tracked.buffer.reset(0)
        tracked.published = 0
        tracked.learn_identity(None)
        tracked.key = None
        self.dirty = True

    def _publish(self, tracked: TrackedFile, lines: list[Line]) -> None:
        assert tracked.key is not None
        target = tracked.target
        requests = target.channel == "queries" and target.zgent is not None
        for line in lines:
            env = self._publish_line(tracked, line, requests)
            tracked.published = line.end
            self.lines_published += 1
            malformed = env["metadata"].get("malformed")
            if malformed:
                self.lines_malformed += 1
                self.lines_cut += line.cut
                log_event(log, logging.INFO, "line_malformed",
                          f"{tracked.path} offset {line.offset}: {malformed}; published as raw",
                          path=tracked.path, offset=line.offset)
            elif target.zgent is not None:
                self._route_query(target, env["payload"], requests)
        self.dirty = True
        if target.channel == "narrative" and target.zgent:
            self._call(self.on_zgent_seen, target.zgent, False)

    def _publish_line(self, tracked: TrackedFile, line: Line,
                      requests: bool) -> dict[str, Any]:
        """Publish one line; a failure inside arqond publishes it as raw instead, so one line
        can never stop the bridge."""
        assert tracked.key is not None
        env = narrative.envelope(tracked.target, tracked.path, tracked.key, line,
                                 self.settings.max_depth, requests=requests)
        try:
            self.bus.publish(env)
        except Exception as exc:
            self.internal_errors += 1
            log.exception("%s offset %d: publishing failed; published as raw instead",
                          tracked.path, line.offset)
            env = narrative.line_envelope(
                tracked.target, tracked.path, tracked.key, line,
                {"raw": line.data.decode("utf-8", "replace")},
                f"arqond could not publish it ({type(exc).__name__}: {exc})")
            self.bus.publish(env)
        return env

    def _route_query(self, target: Target, obj: dict[str, Any], requests: bool) -> None:
        assert target.zgent is not None
        if requests:
            self.queries.note_request(target.zgent, obj)
            self._call(self.on_query, target.zgent, obj)
        elif target.channel == "narrative":
            requester = self.queries.take_response(target.zgent, obj)
            if requester is not None:
                self._call(self.on_reply, requester, obj)

    def _call(self, hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:  # a hook's bug must not stop the bridge
            self.hook_errors += 1
            log.exception("narrative hook %s failed", getattr(hook, "__name__", hook))

    def _save(self, *, sync: bool) -> None:
        records = [tracked.record() for tracked in [*self.draining, *self.at_name.values()]]
        try:
            self.store.save(records, sync=sync)
        except OSError as exc:
            log.error("cannot write checkpoints to %s: %s", self.store.path, exc.strerror)
            return
        self.dirty = False
