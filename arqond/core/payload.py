"""The one rule for JSON that arqond accepts from anyone: it decodes, and it nests at most
``max_depth`` levels.

Why a depth bound: orjson decodes 1024 levels but encodes only 254, and arqond wraps what it
accepts (an envelope around a payload, a JSON-RPC reply around history) before sending it on.
A value deeper than what can be sent would be accepted at one edge and fail at another: a
narrative line that stops the bridge, a frame that poisons history. Accepting only what can
always be sent on, with room for the wrappers, closes that door at every surface at once.
The bound is server.max_json_depth (arqond/config.py says how high it may go).
"""

from __future__ import annotations

from typing import Any

import orjson

from arqond.core.errors import ErrorCode


class PayloadError(Exception):
    """A value arqond will not accept; ``code`` is the wire error code, ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def too_deep_message(max_depth: int) -> str:
    return f"JSON nests deeper than {max_depth} levels (server.max_json_depth)"


def loads(raw: bytes | str, max_depth: int) -> Any:
    """Decode ``raw``; PayloadError (INVALID_JSON or VALIDATION_ERROR) when refused."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(ErrorCode.INVALID_JSON, f"not valid JSON: {exc}") from None
    check_depth(raw, value, max_depth)
    return value


def check_depth(raw: bytes | str, value: Any, max_depth: int) -> None:
    """PayloadError when ``value`` (decoded from ``raw``) nests deeper than ``max_depth``."""
    # A value cannot nest deeper than the number of brackets that open in its text: counting
    # them runs in C, so the walk below is only paid for frames with many brackets.
    opening = raw.count(b"[" if isinstance(raw, bytes) else "[") + \
        raw.count(b"{" if isinstance(raw, bytes) else "{")
    if opening > max_depth and depth_exceeds(value, max_depth):
        raise PayloadError(ErrorCode.VALIDATION_ERROR, too_deep_message(max_depth))


def depth_exceeds(value: Any, max_depth: int) -> bool:
    """True when ``value`` has more than ``max_depth`` levels of arrays and objects.

    Iterative, so a deep value cannot exhaust the interpreter's stack.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False


def object_or_raw(raw: bytes, max_depth: int) -> tuple[dict[str, Any], str | None, bool]:
    """A line as a message: a JSON object as it is; anything else as ``{"raw": line}`` with
    why it is not one (metadata.malformed), and whether that is a refusal of JSON arqond will
    not carry (nested too deep) rather than text that simply is no object."""
    text = raw.decode("utf-8", "replace")
    if not text.strip():
        return {"raw": text}, "empty line", False
    try:
        value = loads(raw, max_depth)
    except PayloadError as exc:
        return {"raw": text}, exc.message, exc.code != ErrorCode.INVALID_JSON
    if not isinstance(value, dict):
        return {"raw": text}, "not a JSON object", False
    return value, None, False
