"""Which room:channel the lines of a file in the log dir go to, decided by its name alone."""

from __future__ import annotations

import re
from dataclasses import dataclass

from arqond.core.moo.names import ZgentError, check_name

SUFFIX = ".jsonl"
# The part of a file name that names a channel: plain characters only, so every name that a
# file can have is a channel name and no file name needs quoting in a shell.
FILE_CHANNEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MOO_ROOM = "moo"
# The one name that may be a symbolic link: arqond's own, to moo.dir/broadcast.jsonl.
BROADCAST = "broadcast.jsonl"


@dataclass(frozen=True)
class Target:
    """Where the lines of one file go; ``zgent`` is None for the moo-wide files."""

    room: str
    channel: str
    zgent: str | None

    @property
    def default_sender(self) -> str:
        return self.zgent or MOO_ROOM

    @property
    def registers(self) -> bool:
        """NAME-narrative.jsonl: its appearance registers Zgent NAME, its lines refresh it."""
        return self.zgent is not None and self.channel == "narrative"

    @property
    def takes_requests(self) -> bool:
        """NAME-queries.jsonl: its lines are requests for Zgent NAME (seed Phase 3)."""
        return self.zgent is not None and self.channel == "queries"


def target_of(filename: str) -> Target | str:
    """``NAME-KIND.jsonl`` → NAME:KIND (split at the last '-'), ``STEM.jsonl`` → moo:STEM.

    Returns a Target, or a string saying why the name is refused. NAME follows THE Zgent-name
    rule (arqond/core/moo/names.py), so a file is published only for a Zgent that can exist.
    """
    if not filename.endswith(SUFFIX) or filename.startswith("."):
        return f"not a {SUFFIX} file"
    stem = filename[:-len(SUFFIX)]
    name, dash, kind = stem.rpartition("-")
    if not dash:
        if not FILE_CHANNEL_RE.fullmatch(stem):
            return f"{stem!r} is not a valid channel name"
        return Target(MOO_ROOM, stem, None)
    try:
        check_name(name)
    except ZgentError as exc:
        return f"{name!r} is not a valid Zgent name ({exc})"
    if not FILE_CHANNEL_RE.fullmatch(kind):
        return f"{kind!r} is not a valid channel name"
    return Target(name, kind, name)
