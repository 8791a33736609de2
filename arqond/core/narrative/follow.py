"""The file follower: observations of the log dir in, actions out; no I/O, no clock of its own.

Files are followed by identity (device, inode and a fingerprint of their first line), not by
name, so rename+create rotation, copytruncate, truncation, deletion and inode reuse are told
apart. Each file's life cycle (files.py) moves only through this table:

=========== ====================== =========== =============================================
state       observation            next        actions
=========== ====================== =========== =============================================
OPENING     opened, at its name    FOLLOWING   queue it; Announce NAME if NAME-narrative.jsonl
                                               is new; a first start from the end begins
                                               after the last newline
OPENING     opened elsewhere       DRAINING    queue it; a RESCUE copy is read before the
                                               truncated file it rescues
OPENING     open failed            CLOSED      refuse the name once (not when it was only
                                               replaced between look and open)
OPENING     another first line     CLOSED      Close; Find the checkpointed file elsewhere
            (resuming)                         (inode reuse while arqond was stopped)
FOLLOWING   name gone or replaced  DRAINING    rotation: read it to its end before what now
                                               is at its name
any open    grew                   same        Read one chunk; Publish its complete lines
FOLLOWING   read to its end        FOLLOWING   -
DRAINING    read to its end        DRAINED     its successor at the name may go on
FOLLOWING,  shrank, or another     same, or    read it again from 0 as its next generation;
DRAINING,   first line (copy-      DRAINING    Find a copy holding the lines not yet
DRAINED     truncate, truncation,  from        published (copytruncate) and read that first
            inode reuse)           DRAINED
any open    sweep                  same        its first line is checked at its next step
                                               even when it did not grow (a rewrite to the
                                               length already read shows only there)
DRAINED     sweep, rotate_wait     CLOSED      Close
            past since it left,
            first line checked
any open    read failed            CLOSED      Close
any open    arqond stops           CLOSED      Close
=========== ====================== =========== =============================================

A file in the way of another (its predecessor at the same name, or the copy that rescues it)
is stepped first while it is DRAINING. Rotation while arqond was stopped: ``resume`` reopens a
checkpointed file at its name when its inode and first line are unchanged, else Finds it under
another name (or a copy) and drains it from the checkpoint, before what is at its name now.

Reading one file is two observations: ``sized`` (fstat) answers with a Read of at most CHUNK
bytes, ``data_read`` with a Publish of the complete lines. Files take turns: one chunk per step.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

from arqond.core.narrative.actions import (Action, Announce, Close, Find, Open, OpenReason,
                                           Publish, Read, Stat)
from arqond.core.narrative.files import Event, FollowedFile, Record, State
from arqond.core.narrative.ids import fingerprint
from arqond.core.narrative.names import BROADCAST, SUFFIX, Target, target_of
from arqond.log import NOTICE, log_event, printable

log = logging.getLogger("arqond.narrative")

CHUNK = 65536
Actions = Sequence[Action]
NOTHING: Actions = ()
OTHER_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


@dataclass(frozen=True)
class Settings:
    read_from: str          # "end" or "beginning", for files found at a first start
    max_line_bytes: int
    rotate_wait: float
    max_files: int
    log_dir: str
    broadcast_target: str   # moo.dir/broadcast.jsonl: where the one allowed link leads


def start_of_last_line(tail: bytes, size: int) -> int:
    """Where reading "from the end" starts: after the last newline, so a line being written
    when arqond starts is still published whole. ``tail`` is the end of the file."""
    newline = tail.rfind(b"\n")
    if newline >= 0:
        return size - len(tail) + newline + 1
    return 0 if len(tail) == size else size


class Follower:
    """Every file of one log dir: which are followed, in which state, and whose turn it is."""

    def __init__(self, settings: Settings, now: Callable[[], float]) -> None:
        self.settings = settings
        self.now = now
        self.at_name: dict[str, FollowedFile] = {}
        self.away: list[FollowedFile] = []        # DRAINING and DRAINED
        self.ready: OrderedDict[FollowedFile, None] = OrderedDict()
        self.held: set[FollowedFile] = set()      # a step failed: not stepped until a tick
        self.unverified: set[FollowedFile] = set()  # first line to check even with no data
        self.refused: dict[str, tuple[int, int, str]] = {}
        self.dirty = False                        # records changed since the last save
        # Counters, exported by the tailer.
        self.files_refused = 0
        self.rotations = 0
        self.truncations = 0
        self.recovered_from_copies = 0

    @property
    def files(self) -> int:
        return len(self.at_name) + len(self.away)

    def followed(self) -> list[FollowedFile]:
        return [*self.away, *self.at_name.values()]

    def records(self) -> list[Record]:
        return [file.record() for file in self.followed()]

    def reload(self, settings: Settings) -> None:
        self.settings = settings
        for file in self.followed():
            file.framer.max_bytes = settings.max_line_bytes

    # -- names: what is at a name now ------------------------------------------------------

    def name_seen(self, name: str, st: Stat | None, broadcast_link: str | None = None, *,
                  first_start: bool = False) -> Actions:
        """What lstat says is at ``name`` now (None: nothing). ``broadcast_link`` is the real
        path when the name is a symbolic link to arqond's own broadcast log; ``st`` then
        describes that file. ``first_start``: no checkpoints existed (read_from applies)."""
        target = target_of(name)
        if isinstance(target, str):
            return self._other_name_seen(name, st, target)
        st = self._admissible(name, st, broadcast_link)
        current = self.at_name.get(name)
        if st is None:
            if current is not None:
                self._leave(current, "deleted or renamed")
            return NOTHING
        if current is not None:
            if (current.dev, current.ino) == (st.st_dev, st.st_ino):
                self._queue(current)
                return NOTHING
            self._leave(current, "replaced by a new file")
        known = self._with_identity(st)
        if known is not None:  # a followed file under a new name (x-narrative.1.jsonl)
            self._queue(known)
            return NOTHING
        file = FollowedFile(name, os.path.join(self.settings.log_dir, name), target,
                            st.st_dev, st.st_ino, offset=0, generation=0,
                            max_line_bytes=self.settings.max_line_bytes)
        from_end = first_start and self.settings.read_from == "end"
        return self._open(file, OpenReason.NEW, path=broadcast_link,
                          tail=self.settings.max_line_bytes if from_end else 0)

    def names(self) -> list[str]:
        """Names followed now: a rescan looks at them even when they left the directory."""
        return list(self.at_name)

    def _other_name_seen(self, name: str, st: Stat | None, reason: str) -> Actions:
        """A name arqond does not publish: a rotated ``x.jsonl.1`` may be a file away from its
        name, still written to; a ``.jsonl`` name that maps to no channel is refused."""
        if st is None:
            self.refused.pop(name, None)
            return NOTHING
        known = self._with_identity(st)
        if known is not None:
            self._queue(known)
        elif name.endswith(SUFFIX) and not name.startswith("."):
            self._refuse(name, st.st_dev, st.st_ino, reason)
        return NOTHING

    def _admissible(self, name: str, st: Stat | None, broadcast_link: str | None) -> Stat | None:
        """``st`` when it is a regular file arqond may follow at ``name``, else None."""
        if st is None:
            self.refused.pop(name, None)
            return None
        if stat.S_ISLNK(st.st_mode) or (broadcast_link is not None and name != BROADCAST):
            self._refuse(name, st.st_dev, st.st_ino, f"a symbolic link (only {BROADCAST} "
                         f"pointing to {self.settings.broadcast_target} is followed)")
            return None
        for check, kind in OTHER_KINDS:
            if check(st.st_mode):
                self._refuse(name, st.st_dev, st.st_ino, f"{kind}, not a regular file")
                return None
        return st

    def _refuse(self, name: str, dev: int, ino: int, reason: str) -> None:
        """Log a refused name once per (name, file, reason), not at every event or sweep."""
        if self.refused.get(name) == (dev, ino, reason):
            return
        self.refused[name] = (dev, ino, reason)
        self.files_refused += 1
        path = printable(os.path.join(self.settings.log_dir, name))
        log_event(log, logging.WARNING, "file_refused", f"{path}: {reason}; not followed",
                  path=path)

    def _with_identity(self, st: Stat) -> FollowedFile | None:
        for file in self.followed():
            if (file.dev, file.ino) == (st.st_dev, st.st_ino):
                return file
        return None

    # -- opening ---------------------------------------------------------------------------

    def _open(self, file: FollowedFile, why: OpenReason, *, path: str | None = None,
              tail: int = 0, rescues: FollowedFile | None = None) -> Actions:
        if self.files >= self.settings.max_files:
            self._refuse(file.name, file.dev, file.ino, f"max_files "
                         f"({self.settings.max_files}) files are followed already")
            return NOTHING
        return [Open(file, why, path or file.path, tail, rescues)]

    def opened(self, open_: Open, st: Stat, head: bytes, tail: bytes = b"") -> Actions:
        """The adapter opened ``open_.path``: its fstat, first bytes and ``open_.tail`` last
        bytes."""
        file = open_.file
        if (st.st_dev, st.st_ino) != (file.dev, file.ino) or not stat.S_ISREG(st.st_mode):
            file.fire(Event.OPEN_FAILED)  # replaced between look and open: the next event
            return [Close(file)]          # or sweep looks again
        self.refused.pop(file.name, None)
        why = open_.why
        if why is OpenReason.RESUME and file.fingerprint is not None and \
                fingerprint(head) != file.fingerprint:
            file.fire(Event.NOT_THE_SAME)  # the same inode holds another file now
            self.truncations += 1
            return [Close(file), *self._find(file.record())]
        if why is OpenReason.NEW:
            file.learn_identity(fingerprint(head))
            if open_.tail:
                start = start_of_last_line(tail, st.st_size)
                file.framer.reset(start)
                file.published = start
        if why is OpenReason.NEW or why is OpenReason.RESUME:
            file.fire(Event.OPENED_AT_NAME)
            # A file rotated away from this name is read to its end before this one.
            file.after = next((old for old in reversed(self.away) if old.name == file.name),
                              None)
            self.at_name[file.name] = file
            self.dirty = True
            self._queue(file)
            if why is OpenReason.NEW and file.target.registers:
                return [Announce(file.target.zgent)]
            return NOTHING
        file.fire(Event.OPENED_AWAY)
        self._send_away(file)
        rescued = open_.rescues
        if rescued is not None:
            rescued.after = file
            self.recovered_from_copies += 1
            log_event(log, NOTICE, "file_rotated", f"{rescued.path} was truncated; publishing "
                      f"its lines after offset {file.published} from the copy {file.path} "
                      "first", path=rescued.path)
        else:
            log_event(log, logging.INFO, "file_rotated", f"{file.name} was rotated while "
                      f"arqond was stopped; reading the rest of it from {file.path}",
                      path=file.path, offset=file.published)
        return NOTHING

    def open_failed(self, open_: Open, reason: str) -> Actions:
        open_.file.fire(Event.OPEN_FAILED)
        self._refuse(open_.file.name, open_.file.dev, open_.file.ino, f"cannot be read: {reason}")
        return NOTHING

    # -- after a restart --------------------------------------------------------------------

    def resume(self, record: Record, st: Stat | None,
               broadcast_link: str | None = None) -> Actions:
        """A checkpoint, and what is at its name now: reopen the file there, or look for it
        under another name (rotated while arqond was stopped) or as a copy."""
        target = target_of(record.name)
        if isinstance(target, str):
            return NOTHING
        st = self._admissible(record.name, st, broadcast_link)
        if st is not None and (st.st_dev, st.st_ino) == (record.dev, record.ino):
            file = self._from_record(record, target,
                                     os.path.join(self.settings.log_dir, record.name), st)
            return self._open(file, OpenReason.RESUME, path=broadcast_link)
        return self._find(record)

    def _find(self, record: Record, rescues: FollowedFile | None = None) -> Actions:
        if record.fingerprint is None and rescues is not None:
            return NOTHING  # a copy is recognised by its first line
        # A copy must hold something past what was published to be worth reading.
        min_size = record.offset + 1 if rescues is not None else record.offset
        skip = frozenset((file.dev, file.ino) for file in self.followed())
        return [Find(record, min_size, skip, rescues)]

    def found(self, find: Find, answer: tuple[str, Stat] | None) -> Actions:
        """Where the adapter found what ``find`` looked for (None: nowhere)."""
        target = target_of(find.record.name)
        if answer is None or isinstance(target, str):
            return NOTHING
        path, st = answer
        file = self._from_record(find.record, target, path, st)
        why = OpenReason.ROTATED if find.rescues is None else OpenReason.RESCUE
        return self._open(file, why, rescues=find.rescues)

    def _from_record(self, record: Record, target: Target, path: str, st: Stat) -> FollowedFile:
        file = FollowedFile(record.name, path, target, st.st_dev, st.st_ino,
                            offset=record.offset, generation=record.generation,
                            max_line_bytes=self.settings.max_line_bytes)
        file.learn_identity(record.fingerprint, record.key)
        return file

    # -- reading ---------------------------------------------------------------------------

    def next_ready(self) -> FollowedFile | None:
        """The file to step now; a file waits while a file in its way is DRAINING."""
        if not self.ready:
            return None
        file, _ = self.ready.popitem(last=False)
        first = file
        while (before := first.after) is not None:
            if before.state is not State.DRAINING:
                first.after = None  # read to its end: no longer in the way
                break
            first = before
        if first is not file:
            self.ready[file] = None  # its turn comes after its predecessor's
        return first

    def sized(self, file: FollowedFile, size: int) -> Actions:
        """fstat says the file has ``size`` bytes."""
        position = file.framer.read_position
        if size < position:
            return self._truncated(file)
        remaining = size - position
        if not remaining:
            if file in self.unverified:  # rewritten to exactly its old size? Read its head.
                self.unverified.discard(file)
                return [Read(file, position, 0, 0)]
            file.fire(Event.AT_END)
            return NOTHING
        file.fire(Event.GREW)
        return [Read(file, position, min(CHUNK, remaining), remaining)]

    def data_read(self, read: Read, data: bytes, head: bytes) -> Actions:
        """The bytes a Read asked for, and the file's first bytes read just after them."""
        file = read.file
        fp = fingerprint(head)
        if file.fingerprint is None:
            file.learn_identity(fp)
        elif fp != file.fingerprint:
            return self._truncated(file)  # same inode, another first line: what was read is stale
        self.unverified.discard(file)
        if len(data) < read.remaining:
            self._queue(file)
        else:
            file.fire(Event.AT_END)
        lines = file.framer.feed(data)
        if not lines:
            return NOTHING
        file.published = lines[-1].end
        self.dirty = True
        return [Publish(file, lines)]

    def _truncated(self, file: FollowedFile) -> Actions:
        """Shorter than what was read, or another first line: start over at 0, after taking
        any lines not yet published from a copy of the old content (copytruncate)."""
        self.truncations += 1
        file.fire(Event.TRUNCATED)
        old = file.record()
        log_event(log, NOTICE, "file_rotated", f"{file.path} was truncated or rewritten at "
                  f"offset {old.offset}; reading it again from the start", path=file.path)
        file.rewind()
        self.dirty = True
        self._queue(file)  # via the ready queue, so a rescuing copy goes first
        return self._find(old, rescues=file)

    def read_failed(self, file: FollowedFile, reason: str) -> Actions:
        log.error("%s: read failed: %s; closing it", file.path, reason)
        return self._close(file, Event.READ_FAILED)

    def step_failed(self, file: FollowedFile) -> None:
        """A step of ``file`` raised (a bug, logged by the adapter): it waits for a tick."""
        self.held.add(file)
        self.ready.pop(file, None)

    # -- rotation and time -----------------------------------------------------------------

    def _leave(self, file: FollowedFile, why: str) -> None:
        del self.at_name[file.name]
        self.rotations += 1
        log_event(log, logging.INFO, "file_rotated", f"{file.path} {why}; reading the old "
                  "file to its end first", path=file.path)
        file.fire(Event.LEFT_NAME)
        self._send_away(file)

    def _send_away(self, file: FollowedFile) -> None:
        file.since = self.now()
        self.away.append(file)
        self.unverified.add(file)  # not closed before its first line was checked once more
        self.dirty = True
        self._queue(file)

    def _queue(self, file: FollowedFile) -> None:
        if file not in self.held:
            self.ready[file] = None

    def rescanned(self) -> None:
        """Every name was looked at again: files away from their name are read again too
        (a late write to them may have gone unreported), and the first line of every file is
        checked even when it did not grow: a copytruncate that left a file exactly as long as
        what was read of it shows only there."""
        for file in self.away:
            self._queue(file)
        self.unverified.update(self.followed())

    def tick(self) -> Actions:
        """The periodic sweep: held files may be stepped again, and files read to their end
        rotate_wait seconds after they left their name are closed."""
        self.held.clear()
        now = self.now()
        actions: list[Action] = []
        for file in list(self.away):
            if file.state is State.DRAINED and file not in self.ready and \
                    file not in self.unverified and now - file.since >= self.settings.rotate_wait:
                actions += self._close(file, Event.EXPIRED)
        return actions

    def stop(self) -> Actions:
        actions: list[Action] = []
        for file in self.followed():
            actions += self._close(file, Event.STOPPED)
        return actions

    def _close(self, file: FollowedFile, event: Event) -> Actions:
        file.fire(event)
        if self.at_name.get(file.name) is file:
            del self.at_name[file.name]
        if file in self.away:
            self.away.remove(file)
        self.ready.pop(file, None)
        self.held.discard(file)
        self.unverified.discard(file)
        self.dirty = True
        return [Close(file)]
