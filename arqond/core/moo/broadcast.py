"""A broadcast as the seed's BroadcastMessage: one line of MOO_DIR/broadcast.jsonl."""

from __future__ import annotations

from typing import Any

from arqond.core.moo.names import ZgentError

PRIORITIES = ("info", "normal", "urgent")


def broadcast_message(payload: Any, sender: str, ts: str) -> dict[str, Any]:
    """A bus message for moo:broadcast as the seed's BroadcastMessage (one broadcast.jsonl line).

    The payload is the announcement text, or an object with ``content`` (text) and optionally
    ``from``, ``priority`` (info, normal, urgent; default normal) and ``meta`` (an object).
    """
    if isinstance(payload, str):
        payload = {"content": payload}
    if not isinstance(payload, dict) or not isinstance(payload.get("content"), str) \
            or not payload["content"]:
        raise ZgentError("a broadcast needs its text as the payload or as payload.content")
    unknown = payload.keys() - {"ts", "from", "type", "content", "priority", "meta"}
    if unknown:
        raise ZgentError(f"a broadcast has no field(s) {', '.join(sorted(unknown))}")
    priority = payload.get("priority", "normal")
    if priority not in PRIORITIES:
        raise ZgentError(f"broadcast priority must be one of {', '.join(PRIORITIES)}")
    if payload.get("type", "broadcast") != "broadcast":
        raise ZgentError('a broadcast\'s type is always "broadcast"')
    source = payload.get("from", sender)
    if not isinstance(source, str) or not source:
        raise ZgentError("broadcast from must be a non-empty string")
    line: dict[str, Any] = {"ts": ts, "from": source, "type": "broadcast",
                            "content": payload["content"], "priority": priority}
    if "meta" in payload:
        if not isinstance(payload["meta"], dict):
            raise ZgentError("broadcast meta must be an object")
        line["meta"] = payload["meta"]
    return line
