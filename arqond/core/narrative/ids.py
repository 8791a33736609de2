"""File identities and message ids: the same line of the same file always gets the same id.

A file is known by its device, inode and a fingerprint of its first line (inode numbers are
reused), and by how many times it was truncated (its generation). Message ids derive from that
identity key and the line's offset, so a line published again after a crash carries its id.
The ids are pinned by a test: checkpoints written by one version are read by the next.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

# The fingerprint covers the first line, or this many bytes of it when it is longer.
FINGERPRINT_BYTES = 256


def fingerprint(head: bytes) -> str | None:
    """Content identity of a file from its first bytes: the first line (or its first
    FINGERPRINT_BYTES); None while the file is too short to tell."""
    newline = head.find(b"\n", 0, FINGERPRINT_BYTES)
    if newline >= 0:
        head = head[:newline + 1]
    elif len(head) >= FINGERPRINT_BYTES:
        head = head[:FINGERPRINT_BYTES]
    else:
        return None
    return hashlib.blake2b(head, digest_size=8).hexdigest()


def identity_key(dev: int, ino: int, fp: str, generation: int) -> str:
    """What message ids are derived from; ``generation`` counts truncations of the file."""
    return f"{dev}:{ino}:{fp}:{generation}"


def message_id(key: str, offset: int) -> str:
    """The same line of the same file always gets the same id, shaped like ArqonBus ids
    (``arq_<number>_<number>_<6 hex>``), so a line republished after a crash can be dropped."""
    line_hash = hashlib.blake2b(f"{key}@{offset}".encode(), digest_size=3).hexdigest()
    return f"arq_{_file_number(key)}_{offset}_{line_hash}"


@lru_cache(maxsize=1024)
def _file_number(key: str) -> int:
    """The file part of message ids: the same for every line of a file, so hashed once."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def stored_through(last_id: str | None, key: str) -> int:
    """The offset of the last line of the file ``key`` that its stream already holds, when
    the stream's last message (``last_id``) is a line of that file; else -1. After a crash
    the checkpoint may lag the store: lines up to there are not published twice."""
    if last_id is None:
        return -1
    parts = last_id.split("_")
    if len(parts) != 4 or not parts[2].isdigit():
        return -1
    offset = int(parts[2])
    return offset if message_id(key, offset) == last_id else -1
