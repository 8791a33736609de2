"""The narrative bridge: every complete line appended under LOG_DIR is published on the bus once.

An adapter that only carries out what the follower (arqond/core/narrative/follow.py) decides:
inotify (read on the event loop through ``loop.add_reader``) says which names changed, and a
periodic stat sweep repeats the work in case an event was missed or the queue overflowed; each
name is looked at (lstat) and told to the follower, whose actions this module carries out:
os.open, pread and close of the files, publishing lines on the bus, the checkpoint file.

A checkpoint (``checkpoints.py``) records, per file, the first byte not yet published; it is
saved only once the lines before it have left arqond (see ``_pump``). Message ids derive from
the file identity and the line's offset, so a line published again after ``kill -9`` carries
the same id.

Memory is bounded: each read takes at most ``follow.CHUNK`` bytes, a line keeps at most
``max_line_bytes`` (longer lines are published cut, marked malformed), at most ``max_files``
files are followed. The pump reads one chunk of one file per step and yields to the loop between
steps, so a large backlog never stalls other clients, and files take turns.

No task dies from one record: a line that fails inside arqond is published as raw, a step of a
file or a name that raises is logged with its file and offset, counted in ``internal_errors``,
and tried again at the next sweep. ``failed`` names a task that ended anyway, for /health.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from typing import Any, Callable, Iterator, Sequence

from inotify_simple import INotify
from inotify_simple import flags as inotify_flags

from arqond.config import Config
from arqond.core.bus import Bus
from arqond.core.framing import Line
from arqond.core.metrics import Sample, counter, counters_of, gauge
from arqond.core.narrative import follow, schema
from arqond.core.narrative.actions import Announce, Close, Find, Open, Publish, Read, Stat
from arqond.core.narrative.files import FollowedFile
from arqond.core.narrative.ids import FINGERPRINT_BYTES, stored_through
from arqond.core.narrative.names import BROADCAST, Target
from arqond.core.narrative.queries import QueryTracker
from arqond.log import log_event
from arqond.moo.checkpoints import CheckpointStore, CorruptCheckpoints

log = logging.getLogger("arqond.narrative")

DIR_EVENTS = (inotify_flags.CREATE | inotify_flags.MODIFY | inotify_flags.MOVED_FROM
              | inotify_flags.MOVED_TO | inotify_flags.DELETE | inotify_flags.CLOSE_WRITE
              | inotify_flags.ATTRIB)
SELF_EVENTS = inotify_flags.DELETE_SELF | inotify_flags.MOVE_SELF
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

ZgentSeen = Callable[[str, bool], None]
QueryHook = Callable[[str, dict[str, Any]], None]


class TailerError(Exception):
    """The log dir or state dir cannot be used; arqond does not start."""


def _ignore(*_: Any) -> None:
    return None


def follow_settings(config: Config) -> follow.Settings:
    section = config.narrative
    return follow.Settings(section.read_from, section.max_line_bytes, section.rotate_wait,
                           section.max_files, config.moo.log_dir,
                           os.path.join(config.moo.dir, BROADCAST))


def _head_of(path: str) -> bytes | None:
    """The first bytes of a file found by a Find, None when it cannot be read."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError:
        return None
    try:
        return os.pread(fd, FINGERPRINT_BYTES, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


# What /metrics exports of the narrative bridge (arqonbus_narrative_<name>_total).
TAILER_COUNTERS = {
    "lines_published": "Narrative lines published on the bus.",
    "lines_already_stored": "Lines not published again at a start: their stream had stored "
                            "them before arqond stopped (the checkpoint lagged).",
    "lines_malformed": "Lines published as {\"raw\": ...} with metadata.malformed.",
    "lines_cut": "Lines longer than narrative.max_line_bytes, published cut.",
    "queue_overflows": "inotify queue overflows, caught up by a sweep.",
    "hook_errors": "Errors raised by the MOO layer hooks, each logged.",
    "internal_errors": "Failures in arqond itself (a bug), each logged with its file and "
                       "offset: a line published as {\"raw\": ...} instead, or a file or name "
                       "left until the next sweep.",
}
FOLLOWER_COUNTERS = {
    "files_refused": "Files in the log dir refused (symlink, FIFO, unreadable, bad name).",
    "rotations": "Rotations by rename or deletion followed.",
    "truncations": "Truncations (copytruncate or in place) followed.",
    "recovered_from_copies": "Truncated files whose unread lines came from a rotated copy.",
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
        self.log_dir = config.moo.log_dir
        self.broadcast_target = os.path.join(config.moo.dir, BROADCAST)
        self.sweep_interval = config.narrative.sweep_interval
        self.max_depth = config.server.max_json_depth
        self.follower = follow.Follower(follow_settings(config), time.monotonic)
        self.store = CheckpointStore(config.server.state_dir)
        self.on_zgent_seen = on_zgent_seen or _ignore
        self.on_query = on_query or _ignore
        self.on_reply = on_reply or _ignore
        self.queries = QueryTracker()
        self.fds: dict[FollowedFile, int] = {}
        self.wake = asyncio.Event()
        self.inotify: INotify | None = None
        self.watches: dict[int, str] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.failed: str | None = None  # which task ended, and why: /health reports it
        # Files whose first lines this run were checked against their stream's store.
        self.checked_store: set[FollowedFile] = set()
        self.carry_out: dict[type, Callable[[Any], follow.Actions | None]] = {
            Open: self._open, Read: self._read, Publish: self._publish, Close: self._close,
            Find: self._find, Announce: self._announce}
        # Counters, exported by the HTTP metrics.
        self.lines_published = 0
        self.lines_already_stored = 0
        self.lines_malformed = 0
        self.lines_cut = 0
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
        self.tasks = [asyncio.create_task(self._pump(), name="narrative pump"),
                      asyncio.create_task(self._sweep(), name="narrative sweep")]
        for task in self.tasks:
            task.add_done_callback(self._task_ended)
        self.wake.set()
        log.info("watching %s: %d file(s)", self.log_dir, self.follower.files)

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
        self._carry_out(self.follower.stop())

    def reload(self, config: Config) -> None:
        self.follower.reload(follow_settings(config))
        self.sweep_interval = config.narrative.sweep_interval
        self.max_depth = config.server.max_json_depth

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        self.failed = f"{task.get_name()} ended: {task.exception()!r}"
        log.error("the narrative bridge stopped working: %s", self.failed)

    @property
    def files(self) -> int:
        return self.follower.files

    def faults(self) -> list[str]:
        """For /health: the bridge's task that ended, if one did."""
        return [f"narrative bridge: {self.failed}"] if self.failed else []

    def samples(self) -> list[Sample]:
        return [gauge("arqonbus_narrative_files", "Narrative files followed now.", self.files),
                *counters_of(self, "arqonbus_narrative", TAILER_COUNTERS),
                *counters_of(self.follower, "arqonbus_narrative", FOLLOWER_COUNTERS),
                counter("arqonbus_narrative_checkpoint_writes_total",
                        "Checkpoint saves.", self.store.writes),
                counter("arqonbus_narrative_queries_evicted_total",
                        "Open file-based queries forgotten at the tracker's bound.",
                        self.queries.evicted)]

    # -- observations: names ---------------------------------------------------------------

    def _restore(self) -> None:
        """Checkpoints against what is on disk now, then every name in the log dir."""
        try:
            records = self.store.load()
        except CorruptCheckpoints as exc:
            log_event(log, logging.ERROR, "checkpoint_corrupt",
                      f"checkpoint file unusable ({exc.reason}); moved to {exc.set_aside}; "
                      "reading every narrative file from its beginning (repeated lines keep "
                      "their ids)", path=exc.set_aside)
            records = []
        for record in records or []:
            self._guarded(record.name, lambda: self._carry_out(
                self.follower.resume(record, *self._look(record.name))))
        for name in sorted(os.listdir(self.log_dir)):
            self._guarded(name, lambda: self._carry_out(self.follower.name_seen(
                name, *self._look(name), first_start=records is None)))

    def _look(self, name: str) -> tuple[os.stat_result | None, str | None]:
        """lstat of a name, and for a link to arqond's own broadcast log its real path and
        what stat says is there."""
        path = os.path.join(self.log_dir, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None, None
        if not stat.S_ISLNK(st.st_mode):
            return st, None
        real = os.path.realpath(path)
        if real != os.path.realpath(self.broadcast_target):
            return st, None
        try:
            return os.stat(real), real
        except FileNotFoundError:
            return None, real

    def _name_changed(self, name: str) -> None:
        self._guarded(name, lambda: self._carry_out(
            self.follower.name_seen(name, *self._look(name))))

    def _guarded(self, name: str, call: Callable[[], None]) -> None:
        """Look at one name; a failure is a bug, logged, and the name is looked at again at
        its next event or sweep."""
        try:
            call()
        except Exception:
            self.internal_errors += 1
            log.exception("%s: looking at it failed inside arqond; trying again at its next "
                          "event or sweep", os.path.join(self.log_dir, name))

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
                self._name_changed(event.name)
            elif self.watches.get(event.wd) == "moo" and event.name == BROADCAST:
                self._name_changed(BROADCAST)
        if self.follower.ready:
            self.wake.set()

    def _rescan(self) -> None:
        for name in sorted(set(os.listdir(self.log_dir)) | set(self.follower.names())):
            self._name_changed(name)
        self.follower.rescanned()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            self.sweep()

    def sweep(self) -> None:
        """One stat sweep: drained files past rotate_wait closed, held files released, every
        name looked at again."""
        try:
            self._carry_out(self.follower.tick())
            self._rescan()
            if self.follower.dirty:
                self._save(sync=False)
        except Exception:
            self.internal_errors += 1
            log.exception("sweep of %s failed inside arqond; trying again at the next one",
                          self.log_dir)
        if self.follower.ready:
            self.wake.set()

    # -- reading and publishing ------------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while (file := self.follower.next_ready()) is not None:
                self._step(file)
                # Yield first: the frames just published are written to the clients' sockets
                # by callbacks already queued (the WebSocket write batching), and only lines
                # that have left arqond may be checkpointed, or a kill -9 could lose them.
                # With a store, that is once it has them: so also a file read no faster
                # than the store keeps up (what waits for it stays one chunk).
                await asyncio.sleep(0)
                await self._stored()
                if self.follower.dirty:
                    self._save(sync=False)

    def _stored(self) -> "asyncio.Future[None]":
        """Done once every message published so far is stored and delivered."""
        settled = asyncio.get_running_loop().create_future()
        self.bus.after_pending(lambda: settled.done() or settled.set_result(None))
        return settled

    def _step(self, file: FollowedFile) -> None:
        """Read and publish at most one chunk of ``file``."""
        try:
            try:
                size = os.fstat(self.fds[file]).st_size
            except OSError as exc:
                self._carry_out(self.follower.read_failed(file, exc.strerror))
            else:
                self._carry_out(self.follower.sized(file, size))
        except Exception:
            self.internal_errors += 1
            log.exception("%s offset %d: reading failed inside arqond; the file waits for the "
                          "next sweep", file.path, file.framer.read_position)
            self.follower.step_failed(file)

    def _carry_out(self, actions: follow.Actions) -> None:
        for action in actions:
            answer = self.carry_out[type(action)](action)
            if answer:
                self._carry_out(answer)

    def _open(self, action: Open) -> follow.Actions:
        try:
            fd = os.open(action.path, OPEN_FLAGS)
        except OSError as exc:
            return self.follower.open_failed(action, exc.strerror)
        try:
            st = os.fstat(fd)
            head = tail = b""
            if stat.S_ISREG(st.st_mode):  # a FIFO swapped in since the look is never read
                head = os.pread(fd, FINGERPRINT_BYTES, 0)
                tail_size = min(action.tail, st.st_size)
                if tail_size:
                    tail = os.pread(fd, tail_size, st.st_size - tail_size)
        except OSError as exc:
            os.close(fd)
            return self.follower.open_failed(action, exc.strerror)
        self.fds[action.file] = fd
        return self.follower.opened(action, st, head, tail)

    def _read(self, action: Read) -> follow.Actions:
        fd = self.fds[action.file]
        try:
            data = os.pread(fd, action.size, action.offset)
            head = os.pread(fd, FINGERPRINT_BYTES, 0)
        except OSError as exc:
            return self.follower.read_failed(action.file, exc.strerror)
        return self.follower.data_read(action, data, head)

    def _close(self, action: Close) -> None:
        self.checked_store.discard(action.file)
        fd = self.fds.pop(action.file, None)
        if fd is not None:
            os.close(fd)

    def _find(self, action: Find) -> follow.Actions:
        return self.follower.found(action, action.choose(self._regular_files(), _head_of))

    def _regular_files(self) -> Iterator[tuple[str, str, Stat]]:
        for entry in os.scandir(self.log_dir):
            if entry.is_file(follow_symlinks=False):
                try:
                    yield entry.name, entry.path, entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue

    def _announce(self, action: Announce) -> None:
        self._call(self.on_zgent_seen, action.zgent, True)

    def _publish(self, action: Publish) -> None:
        file = action.file
        target = file.target
        requests = target.takes_requests
        lines = action.lines
        if file not in self.checked_store:
            lines = self._not_stored_yet(file, lines)
        for line in lines:
            env = self._publish_line(file, line, requests)
            if env is None:
                continue
            self.lines_published += 1
            malformed = env["metadata"].get("malformed")
            if malformed:
                self.lines_malformed += 1
                self.lines_cut += line.cut
                log_event(log, logging.INFO, "line_malformed",
                          f"{file.path} offset {line.offset}: {malformed}; published as raw",
                          path=file.path, offset=line.offset)
            elif target.zgent is not None:
                self._route_query(target, env["payload"], requests)
        if target.registers:
            self._call(self.on_zgent_seen, target.zgent, False)

    def _not_stored_yet(self, file: FollowedFile, lines: Sequence[Line]) -> Sequence[Line]:
        """The first lines a run publishes of a file: those its stream holds already (stored
        before a crash, the checkpoint not yet written) are not published again."""
        assert file.key is not None
        self.checked_store.add(file)
        through = stored_through(self.bus.last_id(file.target.room, file.target.channel),
                                 file.key)
        fresh = [line for line in lines if line.offset > through]
        if len(fresh) < len(lines):
            self.lines_already_stored += len(lines) - len(fresh)
            log.info("%s: %d line(s) up to offset %d were stored before arqond stopped; not "
                     "published again", file.path, len(lines) - len(fresh), through)
        return fresh

    def _publish_line(self, file: FollowedFile, line: Line,
                      requests: bool) -> dict[str, Any] | None:
        """Publish one line; a failure inside arqond publishes it as raw instead, so one line
        can never stop the bridge. None when even that failed (logged, counted)."""
        assert file.key is not None
        try:
            env = schema.envelope(file.target, file.path, file.key, line, self.max_depth,
                                  requests=requests)
            self.bus.publish(env)
            return env
        except Exception as exc:
            self.internal_errors += 1
            log.exception("%s offset %d: publishing failed; published as raw instead",
                          file.path, line.offset)
            reason = f"arqond could not publish it ({type(exc).__name__}: {exc})"
        try:
            env = schema.raw_envelope(file.target, file.path, file.key, line, reason)
            self.bus.publish(env)
            return env
        except Exception:
            self.internal_errors += 1
            log.exception("%s offset %d: publishing it as raw failed too; the line is lost",
                          file.path, line.offset)
            return None

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
        try:
            self.store.save(self.follower.records(), sync=sync)
        except OSError as exc:
            log.error("cannot write checkpoints to %s: %s", self.store.path, exc.strerror)
            return
        except Exception:  # a bug: the lines stay published, the save is tried again
            self.internal_errors += 1
            log.exception("saving checkpoints to %s failed inside arqond", self.store.path)
            return
        self.follower.dirty = False
