"""What the follower asks its adapter to do, and the answers it expects back.

Each observation the follower is given returns a list of actions; the adapter carries them out
in order, and answers an Open (``opened`` or ``open_failed``), a Read (``data_read`` or
``read_failed``) and a Find (``found``) before it gives the follower anything else.
"""

from __future__ import annotations

import stat
from enum import Enum
from typing import Callable, Iterable, NamedTuple, Protocol

from arqond.core.framing import Line
from arqond.core.narrative.files import FollowedFile, Record
from arqond.core.narrative.ids import fingerprint


class Stat(Protocol):
    """What the follower reads of a stat result; os.stat_result has it."""

    @property
    def st_dev(self) -> int: ...
    @property
    def st_ino(self) -> int: ...
    @property
    def st_mode(self) -> int: ...
    @property
    def st_size(self) -> int: ...


class OpenReason(Enum):
    NEW = "a new file at its name"
    RESUME = "a checkpointed file at its name: its first line must still be the same"
    ROTATED = "a checkpointed file found under another name (rotated while arqond was stopped)"
    RESCUE = "a copy of a truncated file, holding lines not yet published"


class Open(NamedTuple):
    """Open ``path`` read-only (no symlinks followed), then answer ``opened`` with its fstat,
    its first FINGERPRINT_BYTES and its last ``tail`` bytes, or ``open_failed``."""

    file: FollowedFile      # in OPENING; the identity it must have is file.dev, file.ino
    why: OpenReason
    path: str
    tail: int = 0           # reading a first start "from the end" needs the end
    rescues: FollowedFile | None = None  # RESCUE: the truncated file, read after this copy


class Read(NamedTuple):
    """Read ``size`` bytes at ``offset`` and the first FINGERPRINT_BYTES, answer
    ``data_read``; ``remaining`` is how much lay past ``offset`` when it was asked."""

    file: FollowedFile
    offset: int
    size: int
    remaining: int


class Publish(NamedTuple):
    """Publish these complete lines of ``file`` (file.target, file.key, file.path)."""

    file: FollowedFile
    lines: list[Line]


class Close(NamedTuple):
    file: FollowedFile


class Announce(NamedTuple):
    """NAME-narrative.jsonl appeared: Zgent NAME exists (the MOO layer registers it)."""

    zgent: str


class Find(NamedTuple):
    """Look in the log dir for the file ``record`` describes, under another name, or for a copy
    of it (same first line) with at least ``min_size`` bytes; answer ``found``. A record
    without a fingerprint (no first line was complete) is found by its inode alone."""

    record: Record
    min_size: int
    skip: frozenset[tuple[int, int]]   # files followed already: not what is looked for
    rescues: FollowedFile | None = None  # a truncated file (else: resuming after a restart)

    def choose(self, entries: Iterable[tuple[str, str, Stat]],
               head_of: Callable[[str], bytes | None]) -> tuple[str, Stat] | None:
        """The answer among ``(name, path, lstat)`` of the dir: the file itself (same inode,
        same first line) wins, else the first copy. ``head_of(path)`` reads a first line
        (None when it cannot), and is called only for files that could be the answer."""
        copy = None
        wanted = (self.record.dev, self.record.ino)
        for name, path, st in entries:
            if name == self.record.name or not stat.S_ISREG(st.st_mode) or \
                    st.st_size < self.min_size or (st.st_dev, st.st_ino) in self.skip:
                continue
            same_inode = (st.st_dev, st.st_ino) == wanted
            if self.record.fingerprint is None:  # no first line known: its inode or nothing
                if same_inode:
                    return path, st
                continue
            if not same_inode and copy is not None:
                continue
            head = head_of(path)
            if head is not None and fingerprint(head) == self.record.fingerprint:
                if same_inode:
                    return path, st
                copy = (path, st)
        return copy


Action = Open | Read | Publish | Close | Announce | Find
