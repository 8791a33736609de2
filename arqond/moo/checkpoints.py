"""Read positions of the narrative tailer, kept in one file in the state dir.

The tailer saves after every chunk it publishes, so a save must be cheap: each one appends the
whole document as one JSON line (one write(2) to a file kept open), and the last line that is a
whole document is the one that counts. A save cut short (a full disk, a power loss) leaves a
line that does not parse, and the one before it is used; a process crash needs nothing more,
because the page cache outlives the process. Past COMPACT_BYTES the file is replaced
(temporary file, rename) by one holding the newest document. ``sync`` adds fsync of the file
and its directory, at start and stop only: an fsync on the event loop would stall every client
for as long as the disk takes. After a power loss the file may be as far behind as the kernel's
writeback delay (about 30 s), and the lines of that span are published again, with their ids.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Any

import orjson

from arqond.core.narrative.files import Record
from arqond.moo.files import AppendFile

FILENAME = "narrative-checkpoints.json"
VERSION = 1
# Size past which the next save starts the file afresh: a rename every few thousand saves.
COMPACT_BYTES = 1 << 20


class CorruptCheckpoints(Exception):
    """The checkpoint file could not be used; ``set_aside`` names where it was moved."""

    def __init__(self, reason: str, set_aside: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.set_aside = set_aside


def _record(data: Any) -> Record:
    if not isinstance(data, dict):
        raise ValueError("entry is not an object")
    record = Record(**data)
    if not (isinstance(record.name, str) and isinstance(record.dev, int)
            and isinstance(record.ino, int) and isinstance(record.offset, int)
            and record.offset >= 0 and isinstance(record.generation, int)
            and isinstance(record.fingerprint, (str, type(None)))
            and isinstance(record.key, (str, type(None)))):
        raise ValueError(f"entry for {data.get('name')!r} has wrong field types")
    return record


class CheckpointStore:
    def __init__(self, state_dir: str) -> None:
        self.file = AppendFile(os.path.join(state_dir, FILENAME))
        self.writes = 0

    @property
    def path(self) -> str:
        return self.file.path

    def load(self) -> list[Record] | None:
        """The stored records, or None when there is no checkpoint file (a first start).

        Raises CorruptCheckpoints after moving an unusable file aside.
        """
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None
        problem = "the file is empty"
        # The newest whole document wins (an earlier arqond wrote one, with no newline).
        for line in reversed(raw.splitlines()):
            try:
                return _document(line)
            except (ValueError, TypeError) as exc:
                problem = str(exc)
        aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
        os.replace(self.path, aside)
        raise CorruptCheckpoints(problem, aside)

    def save(self, records: list[Record], *, sync: bool = False) -> None:
        line = orjson.dumps({"version": VERSION, "files": [asdict(r) for r in records]}) + b"\n"
        if self.file.fd < 0 or self.file.size + len(line) > COMPACT_BYTES:
            self.file.replace(line)
        else:
            self.file.append(line)
        if sync:
            self.file.sync()
        self.writes += 1

    def close(self) -> None:
        self.file.close()


def _document(line: bytes) -> list[Record]:
    data = orjson.loads(line)
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"not a version {VERSION} checkpoint document")
    files = data.get("files")
    if not isinstance(files, list):
        raise ValueError("files is not a list")
    return [_record(entry) for entry in files]
