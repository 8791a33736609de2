"""Read positions of the narrative tailer, kept in one JSON file in the state dir.

The file is replaced atomically (temporary file, rename), so a crash at any moment leaves either
the old or the new version, never half of one. ``sync`` adds fsync of the file and its directory
for power loss; a process crash does not need it because the page cache survives the process.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson

FILENAME = "narrative-checkpoints.json"
VERSION = 1


class CorruptCheckpoints(Exception):
    """The checkpoint file could not be used; ``set_aside`` names where it was moved."""

    def __init__(self, reason: str, set_aside: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.set_aside = set_aside


@dataclass
class Record:
    name: str          # the name the file was published under (it decides room:channel)
    dev: int
    ino: int
    fingerprint: str | None
    key: str | None    # what message ids derive from (narrative.identity_key)
    generation: int
    offset: int        # first byte not yet published


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
        self.path = os.path.join(state_dir, FILENAME)
        self.writes = 0

    def load(self) -> list[Record] | None:
        """The stored records, or None when there is no checkpoint file (a first start).

        Raises CorruptCheckpoints after moving an unusable file aside.
        """
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError(f"not a version {VERSION} checkpoint document")
            files = data.get("files")
            if not isinstance(files, list):
                raise ValueError("files is not a list")
            return [_record(entry) for entry in files]
        except (ValueError, TypeError) as exc:
            aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
            os.replace(self.path, aside)
            raise CorruptCheckpoints(str(exc), aside) from None

    def save(self, records: list[Record], *, sync: bool = False) -> None:
        document = orjson.dumps({"version": VERSION, "files": [asdict(r) for r in records]})
        temporary = self.path + ".tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, document)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        if sync:
            directory = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        self.writes += 1
