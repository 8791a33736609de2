"""The seed's message schema for narrative lines, and the bus envelope of one line (DESIGN §3).

A line that breaks the schema is still published, as ``{"raw": ...}`` with
``metadata.malformed`` saying why: nothing is dropped silently.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from arqond.core import payload
from arqond.core.framing import Line
from arqond.core.narrative.ids import message_id
from arqond.core.narrative.names import Target

# Optional fields of the seed's message schema and the JSON type each must have.
OPTIONAL_FIELDS = {"tags": "an array of strings", "queryId": "a string",
                   "correlationId": "a string", "ttl": "a number of seconds"}


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
    if line.cut:
        return {"raw": line.data.decode("utf-8", "replace")}, (
            f"line of {line.length} bytes is longer than max_line_bytes ({len(line.data)}); "
            "published cut to that length")
    obj, malformed, _ = payload.object_or_raw(line.data, max_depth)
    if malformed is not None:
        return obj, malformed
    problem = request_problem(obj) if requests else schema_problem(obj)
    if problem:
        return {"raw": line.data.decode("utf-8", "replace")}, \
            f"breaks the message schema: {problem}"
    return obj, None


def envelope(target: Target, path: str, key: str, line: Line, max_depth: int, *,
             requests: bool = False) -> dict[str, Any]:
    """The bus envelope of one narrative line (DESIGN §3)."""
    body, malformed = decode_line(line, max_depth, requests=requests)
    return line_envelope(target, path, key, line, body, malformed)


def raw_envelope(target: Target, path: str, key: str, line: Line,
                 malformed: str) -> dict[str, Any]:
    """The line as ``{"raw": ...}``, for when arqond itself failed on it."""
    return line_envelope(target, path, key, line, {"raw": line.data.decode("utf-8", "replace")},
                         malformed)


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
