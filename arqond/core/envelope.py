"""The ArqonBus v1.0 envelope: parsing, validation, defaults and serialization.

Envelopes are plain dicts on the hot path; this module is the only place that knows which keys
exist, which are required, and in which order they go out on the wire.
"""

from __future__ import annotations

import os
import random
import time
from datetime import datetime, timezone
from typing import Any

import orjson

from arqond import PROTOCOL_VERSION
from arqond.core import payload
from arqond.core.errors import ErrorCode

# Keys a client may send, in wire order. "from" is the seed's legacy alias of from_client.
FIELDS = (
    "id", "timestamp", "type", "version", "room", "channel", "sender", "payload", "metadata",
    "command", "args", "request_id", "status", "error", "error_code", "from_client", "to_client",
)
ALIASES = {"from": "from_client"}
ACCEPTED_KEYS = frozenset(FIELDS) | frozenset(ALIASES)
# Every outbound frame carries these, even when empty; the others only when set.
ALWAYS = ("id", "timestamp", "type", "version", "payload", "args", "metadata")
OPTIONAL = ("room", "channel", "sender", "from_client", "to_client", "command", "request_id",
            "status", "error", "error_code")

INBOUND_TYPES = frozenset(
    {"message", "event", "command", "private", "system", "telemetry", "response", "error"})
STRING_FIELDS = ("id", "timestamp", "type", "version", "room", "channel", "command",
                 "request_id", "status", "error", "error_code", "from_client")
MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 128          # of a room or channel: the name rule is in core/router.py
SERVER_SENDER = "arqonbus"


class EnvelopeError(Exception):
    """A frame that cannot be accepted; becomes an ``error`` frame for the sender."""

    def __init__(self, code: str, message: str, errors: list[str] | None = None,
                 request_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors or [message]
        self.request_id = request_id


class IdGenerator:
    """Message ids shaped like ArqonBus's own: ``arq_<start ns>_<counter>_<6 hex>``."""

    def __init__(self) -> None:
        self._prefix = f"arq_{time.time_ns()}_"
        self._counter = 0
        self._random = random.Random(os.urandom(16))

    def next(self) -> str:
        self._counter += 1
        return f"{self._prefix}{self._counter}_{self._random.getrandbits(24):06x}"


def client_id() -> str:
    return "arq_client_" + os.urandom(16).hex()


class _IsoClock:
    """Naive UTC ISO 8601 of the current time, as ArqonBus stamps the frames it creates
    (``datetime.isoformat``: microseconds, left out when zero).

    Every published frame is stamped, so the date and time of day are formatted once per
    second and only the microseconds per call.
    """

    __slots__ = ("second", "prefix")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def __call__(self) -> str:
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        if second != self.second:
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self.second = second
        return f"{self.prefix}.{micro:06d}" if micro else self.prefix


now_iso = _IsoClock()


def iso_at(epoch: float) -> str:
    """``epoch`` (time.time()) in the same form as now_iso."""
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None).isoformat()


def parse(raw: str | bytes, max_depth: int) -> dict[str, Any]:
    """Decode and validate one inbound frame; returns a normalized envelope dict.

    Missing id/timestamp/version are left for the Bus to fill in (it owns the id generator).
    """
    try:
        data = payload.loads(raw, max_depth)
    except payload.PayloadError as exc:
        message = f"frame is {exc.message}" if exc.code == ErrorCode.INVALID_JSON \
            else exc.message
        raise EnvelopeError(exc.code, message) from None
    if not isinstance(data, dict):
        raise EnvelopeError(ErrorCode.VALIDATION_ERROR,
                            f"frame must be a JSON object, not {json_type(data)}")
    return validate(data)


def validate(data: dict[str, Any]) -> dict[str, Any]:
    request_id = data.get("id") if isinstance(data.get("id"), str) else None
    unknown = data.keys() - ACCEPTED_KEYS
    if unknown:
        names = ", ".join(repr(k) for k in sorted(unknown))
        raise EnvelopeError(ErrorCode.VALIDATION_ERROR, f"unknown top-level key(s): {names}",
                            request_id=request_id)
    for alias, canonical in ALIASES.items():
        if alias in data:
            value = data.pop(alias)
            data.setdefault(canonical, value)
    errors = []
    for key in STRING_FIELDS:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            errors.append(f"{key} must be a string, not {json_type(value)}")
    for key in ("args", "metadata"):
        value = data.get(key)
        if value is not None and not isinstance(value, dict):
            errors.append(f"{key} must be an object, not {json_type(value)}")
    to_client = data.get("to_client")
    if to_client is not None and not _is_id_list(to_client):
        errors.append("to_client must be a client id string or a list of them")
    if errors:
        raise EnvelopeError(ErrorCode.VALIDATION_ERROR, "; ".join(errors), errors, request_id)

    kind = data.get("type") or "message"
    if kind not in INBOUND_TYPES:
        errors.append(f"unknown type {kind!r}; expected one of {', '.join(sorted(INBOUND_TYPES))}")
    message_id = data.get("id")
    if message_id is not None and not (0 < len(message_id) <= MAX_ID_LENGTH):
        errors.append(f"id must be 1 to {MAX_ID_LENGTH} characters")
    version = data.get("version")
    if version is not None and version != PROTOCOL_VERSION:
        errors.append(f"version must be {PROTOCOL_VERSION!r}, not {version!r}")
    timestamp = data.get("timestamp")
    if timestamp is not None:
        try:
            # Relayed as ArqonBus relays it, re-formatted: "...00.000Z" goes on as "+00:00".
            data["timestamp"] = datetime.fromisoformat(timestamp).isoformat()
        except ValueError:
            errors.append(f"timestamp {timestamp!r} is not ISO 8601")
    if kind in ("message", "event") and data.get("payload") in (None, ""):
        errors.append("payload is required for a message")
    if kind == "command" and not (data.get("command") or _legacy_command(data)):
        errors.append("command requires a non-empty 'command' name "
                      "(or payload.command in the legacy shape)")
    if errors:
        raise EnvelopeError(ErrorCode.VALIDATION_ERROR, "; ".join(errors), errors, request_id)
    data["type"] = kind
    if to_client is not None and "metadata" not in data:
        data["metadata"] = {"to_client": to_client}  # as ArqonBus copies the legacy field
    return data


def _legacy_command(data: dict[str, Any]) -> str | None:
    payload = data.get("payload")
    if isinstance(payload, dict) and isinstance(payload.get("command"), str):
        return payload["command"] or None
    return None


def command_of(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Name and args of a command in either shape (top-level, or payload.command/parameters)."""
    name = data.get("command")
    args = data.get("args")
    if not name:
        payload = data["payload"]
        name = payload["command"]
        if args is None:
            parameters = payload.get("parameters")
            args = parameters if isinstance(parameters, dict) else {}
    return name, args or {}


def _is_id_list(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def serialize(env: dict[str, Any]) -> bytes:
    """One envelope to one wire frame: the always-keys first, then whatever else is set."""
    out = {
        "id": env["id"],
        "timestamp": env["timestamp"],
        "type": env["type"],
        "version": env.get("version") or PROTOCOL_VERSION,
        "payload": env.get("payload", {}),
        "args": env.get("args") or {},
        "metadata": env.get("metadata") or {},
    }
    for key in OPTIONAL:
        value = env.get(key)
        if value is not None:
            out[key] = value
    return orjson.dumps(out)
