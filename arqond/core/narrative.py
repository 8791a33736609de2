"""Narrative lines to bus envelopes: file names, line splitting, the seed's schema, message ids.

No I/O here: the tailer (arqond/moo/tailer.py) reads the files, frames them into lines
(arqond/core/framing.py) and hands the lines to these pieces.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from arqond.core import payload
from arqond.core.framing import Line
from arqond.core.router import NAME_RE

SUFFIX = ".jsonl"
MOO_ROOM = "moo"
ZGENT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# The fingerprint covers the first line, or this many bytes of it when it is longer.
FINGERPRINT_BYTES = 256
# Optional fields of the seed's message schema and the JSON type each must have.
OPTIONAL_FIELDS = {"tags": "an array of strings", "queryId": "a string",
                   "correlationId": "a string", "ttl": "a number of seconds"}


@dataclass(frozen=True)
class Target:
    """Where the lines of one file go; ``zgent`` is None for the moo-wide files."""

    room: str
    channel: str
    zgent: str | None

    @property
    def default_sender(self) -> str:
        return self.zgent or MOO_ROOM


def target_of(filename: str) -> Target | str:
    """``NAME-KIND.jsonl`` → NAME:KIND (split at the last '-'), ``STEM.jsonl`` → moo:STEM.

    Returns a Target, or a string saying why the name is refused.
    """
    if not filename.endswith(SUFFIX) or filename.startswith("."):
        return f"not a {SUFFIX} file"
    stem = filename[:-len(SUFFIX)]
    name, dash, kind = stem.rpartition("-")
    if not dash:
        if not NAME_RE.match(stem):
            return f"{stem!r} is not a valid channel name"
        return Target(MOO_ROOM, stem, None)
    if not ZGENT_NAME_RE.match(name):
        return (f"{name!r} is not a valid Zgent name (lower-case letters, digits, '.', '_', '-'; "
                "at most 63)")
    if not NAME_RE.match(kind):
        return f"{kind!r} is not a valid channel name"
    return Target(name, kind, name)


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


# -- the seed's message schema -------------------------------------------------------------

def schema_problem(obj: dict[str, Any]) -> str | None:
    """Why a narrative object breaks the seed's schema (ts, from, type, content required;
    tags, queryId, correlationId, ttl optional and typed), or None when it fits."""
    problems = []
    ts = obj.get("ts")
    if not isinstance(ts, str):
        problems.append("ts missing" if ts is None else "ts must be an ISO 8601 string")
    else:
        try:
            datetime.fromisoformat(ts)
        except ValueError:
            problems.append(f"ts {ts!r} is not ISO 8601")
    for key in ("from", "type"):
        value = obj.get(key)
        if not (isinstance(value, str) and value):
            problems.append(f"{key} missing" if value is None else f"{key} must be a non-empty "
                            "string")
    content = obj.get("content")
    if not isinstance(content, (str, dict)):
        problems.append("content missing" if content is None else
                        "content must be a string or an object")
    for key, expected in OPTIONAL_FIELDS.items():
        if key in obj and not _fits(key, obj[key]):
            problems.append(f"{key} must be {expected}")
    return "; ".join(problems) or None


def _fits(key: str, value: Any) -> bool:
    if key == "tags":
        return isinstance(value, list) and all(isinstance(tag, str) for tag in value)
    if key == "ttl":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    return isinstance(value, str)


def request_problem(obj: dict[str, Any]) -> str | None:
    """A query file takes JSON-RPC requests (inbox style) as well as schema messages."""
    if isinstance(obj.get("method"), str) and isinstance(obj.get("id"), (str, int)):
        return None
    return schema_problem(obj)


def decode_line(line: Line, max_depth: int, *,
                requests: bool = False) -> tuple[dict[str, Any], str | None]:
    """The payload for one line and, when it is malformed, the reason."""
    text = line.data.decode("utf-8", "replace")
    if line.cut:
        return {"raw": text}, (f"line of {line.length} bytes is longer than max_line_bytes "
                               f"({len(line.data)}); published cut to that length")
    if not text.strip():
        return {"raw": text}, "empty line"
    try:
        obj = payload.loads(line.data, max_depth)
    except payload.PayloadError as exc:
        return {"raw": text}, exc.message
    if not isinstance(obj, dict):
        return {"raw": text}, "not a JSON object"
    problem = request_problem(obj) if requests else schema_problem(obj)
    if problem:
        return {"raw": text}, f"breaks the message schema: {problem}"
    return obj, None


def envelope(target: Target, path: str, key: str, line: Line, max_depth: int, *,
             requests: bool = False) -> dict[str, Any]:
    """The bus envelope of one narrative line (DESIGN §3)."""
    body, malformed = decode_line(line, max_depth, requests=requests)
    return line_envelope(target, path, key, line, body, malformed)


def line_envelope(target: Target, path: str, key: str, line: Line, body: dict[str, Any],
                  malformed: str | None) -> dict[str, Any]:
    sender = body.get("from") if malformed is None else None
    metadata: dict[str, Any] = {"source": {"path": path, "offset": line.offset}}
    if malformed:
        metadata["malformed"] = malformed
    return {"id": message_id(key, line.offset), "type": "event", "room": target.room,
            "channel": target.channel,
            "sender": sender if isinstance(sender, str) and sender else target.default_sender,
            "payload": body, "metadata": metadata}


# -- file-based queries (seed Phase 3) -----------------------------------------------------

class QueryTracker:
    """Remembers who asked: queryId → requester, per answering Zgent, bounded.

    A request in NAME-queries.jsonl names its requester in ``replyTo`` (or ``from``) and its
    id in ``queryId`` (or JSON-RPC ``id``); a ``query-response`` line in NAME's narrative with
    the same queryId goes back to that requester. Past ``limit`` open queries the oldest is
    forgotten and counted in ``evicted``.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.open: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.evicted = 0

    def note_request(self, zgent: str, obj: dict[str, Any]) -> None:
        query_id = obj.get("queryId", obj.get("id"))
        requester = obj.get("replyTo") or obj.get("from")
        if not isinstance(query_id, (str, int)) or not isinstance(requester, str):
            return
        self.open[(zgent, str(query_id))] = requester
        self.open.move_to_end((zgent, str(query_id)))
        while len(self.open) > self.limit:
            self.open.popitem(last=False)
            self.evicted += 1

    def take_response(self, zgent: str, obj: dict[str, Any]) -> str | None:
        """The requester a narrative line answers, if it is a response to an open query."""
        if obj.get("type") != "query-response" or not isinstance(obj.get("queryId"), str):
            return None
        return self.open.pop((zgent, obj["queryId"]), None)
