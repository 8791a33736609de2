"""Zgents: names, the registry model (the seed's registry.json schema) and mailboxes.

No I/O here: the MOO adapter (arqond/moo) turns this into FIFOs, sockets and files.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SCHEMA_VERSION = 1
STATUSES = ("active", "stale", "offline")
ENTRY_KEYS = ("name", "session", "pane", "log", "inbox", "socket", "capabilities", "status",
              "lastSeen")
# [zgents.NAME] keys and what each holds.
TABLE_KEYS = {"name": "a string", "session": "a string", "pane": "a string",
              "capabilities": "a list of strings", "uids": "a list of user names or uids",
              "groups": "a list of group names or gids"}
MAX_FIELD_LENGTH = 256
MAX_CAPABILITIES = 64


class ZgentError(Exception):
    """A refused Zgent name or attribute; the text says which and why."""


def check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise ZgentError(f"a Zgent name must be a string, not {type(name).__name__}")
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise ZgentError(f"invalid Zgent name {name!r}: 1 to 63 of a-z 0-9 . _ -, starting "
                         "with a letter or digit, without '..'")
    return name


def iso_seconds(epoch: float) -> str:
    """The registry's timestamp form: ``2026-02-12T10:00:00Z``."""
    return datetime.fromtimestamp(int(epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _check_text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_FIELD_LENGTH:
        raise ZgentError(f"{key} must be a string of 1 to {MAX_FIELD_LENGTH} characters")
    return value


def check_capabilities(value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_CAPABILITIES:
        raise ZgentError(f"capabilities must be a list of at most {MAX_CAPABILITIES} strings")
    return [_check_text("each capability", item) for item in value]


def _check_principals(key: str, value: Any) -> list[str | int]:
    if not isinstance(value, list) or not all(
            (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
            or (isinstance(v, str) and v) for v in value):
        raise ZgentError(f"{key} must be {TABLE_KEYS[key]}")
    return list(value)


@dataclass
class Spec:
    """What a Zgent is declared as (config table, command arguments or defaults)."""

    id: str
    name: str = ""
    session: str = ""
    pane: str = ""
    capabilities: list[str] = field(default_factory=list)
    uids: list[str | int] = field(default_factory=list)
    groups: list[str | int] = field(default_factory=list)
    source: str = "command"

    @classmethod
    def from_table(cls, zgent_id: str, body: Any, source: str) -> "Spec":
        """Validate one ``[zgents.NAME]`` table or command arguments; defaults follow §4.1."""
        check_name(zgent_id)
        if not isinstance(body, dict):
            raise ZgentError(f"zgents.{zgent_id} must be a table")
        unknown = body.keys() - TABLE_KEYS.keys()
        if unknown:
            raise ZgentError(f"zgents.{zgent_id}: unknown key(s) {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(TABLE_KEYS)})")
        try:
            return cls(
                id=zgent_id,
                name=_check_text("name", body.get("name", zgent_id)),
                session=_check_text("session", body.get("session", zgent_id)),
                pane=_check_text("pane", body.get("pane", f"{zgent_id}:main.0")),
                capabilities=check_capabilities(body.get("capabilities", [])),
                uids=_check_principals("uids", body.get("uids", [])),
                groups=_check_principals("groups", body.get("groups", [])),
                source=source)
        except ZgentError as exc:
            raise ZgentError(f"zgents.{zgent_id}: {exc}") from None

    def table(self) -> dict[str, Any]:
        return {"name": self.name, "session": self.session, "pane": self.pane,
                "capabilities": self.capabilities, "uids": self.uids, "groups": self.groups}


def check_table(body: Any) -> dict[str, Spec]:
    """The whole ``[zgents]`` table of the config file."""
    if not isinstance(body, dict):
        raise ZgentError("[zgents] must hold one [zgents.NAME] table per Zgent")
    return {zgent_id: Spec.from_table(zgent_id, table, "config")
            for zgent_id, table in body.items()}


class Mailbox:
    """Messages to one Zgent until it reads them, oldest first, at most ``size``.

    At the bound the oldest message is dropped to make room (the newest is what a Zgent
    coming back needs most; every message was also published on NAME:inbox and sits in that
    channel's history). ``dropped`` counts them; ``full_since_drain`` lets the adapter log
    once per episode instead of once per message.
    """

    __slots__ = ("messages", "size", "dropped", "full_since_drain")

    def __init__(self, size: int) -> None:
        self.messages: deque[dict[str, Any]] = deque()
        self.size = size
        self.dropped = 0
        self.full_since_drain = False

    def put(self, message: dict[str, Any]) -> bool:
        """Store a message; False when an older one had to be dropped for it."""
        self.messages.append(message)
        if len(self.messages) <= self.size:
            return True
        self.messages.popleft()
        self.dropped += 1
        return False

    def peek(self) -> dict[str, Any] | None:
        """The oldest message, left in place (taken with ``get`` once it was delivered)."""
        return self.messages[0] if self.messages else None

    def get(self) -> dict[str, Any] | None:
        if not self.messages:
            return None
        self.full_since_drain = False
        return self.messages.popleft()

    def resize(self, size: int) -> int:
        """Apply a new bound; returns how many of the oldest messages it dropped."""
        self.size = size
        dropped = 0
        while len(self.messages) > size:
            self.messages.popleft()
            dropped += 1
        self.dropped += dropped
        return dropped

    def __len__(self) -> int:
        return len(self.messages)


@dataclass
class Zgent:
    spec: Spec
    inbox: str
    socket: str
    log: str
    last_seen: float
    status: str = "active"
    mailbox: Mailbox = field(default_factory=lambda: Mailbox(1000))

    @property
    def id(self) -> str:
        return self.spec.id

    def entry(self) -> dict[str, Any]:
        """This Zgent's registry.json entry, keys in the seed's order."""
        return {"name": self.spec.name, "session": self.spec.session, "pane": self.spec.pane,
                "log": self.log, "inbox": self.inbox, "socket": self.socket,
                "capabilities": list(self.spec.capabilities), "status": self.status,
                "lastSeen": iso_seconds(self.last_seen)}

    def touch(self, now: float) -> bool:
        """A sign of life; True when the registry entry changed."""
        before = (self.status, int(self.last_seen))
        self.last_seen = now
        self.status = "active"
        return before != (self.status, int(now))

    def check_stale(self, now: float, window: float) -> bool:
        """active -> stale after ``window`` seconds of silence; True when it changed."""
        if self.status == "active" and now - self.last_seen > window:
            self.status = "stale"
            return True
        return False


def registry_document(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"schemaVersion": SCHEMA_VERSION, "zgents": dict(sorted(entries.items()))}


def check_registry(document: Any) -> dict[str, dict[str, Any]]:
    """Validate a registry.json read from disk; returns its entries or raises ZgentError."""
    if not isinstance(document, dict) or set(document) != {"schemaVersion", "zgents"}:
        raise ZgentError('the top level must be exactly {"schemaVersion", "zgents"}')
    if document["schemaVersion"] != SCHEMA_VERSION:
        raise ZgentError(f"schemaVersion must be {SCHEMA_VERSION}")
    zgents = document["zgents"]
    if not isinstance(zgents, dict):
        raise ZgentError('"zgents" must be an object keyed by Zgent id')
    for zgent_id, entry in zgents.items():
        check_name(zgent_id)
        if not isinstance(entry, dict):
            raise ZgentError(f"zgents.{zgent_id} must be an object")
        unknown = entry.keys() - set(ENTRY_KEYS)
        if unknown:
            raise ZgentError(f"zgents.{zgent_id}: unknown key(s) {', '.join(sorted(unknown))}")
        if entry.get("status") not in STATUSES:
            raise ZgentError(f"zgents.{zgent_id}.status must be one of {', '.join(STATUSES)}")
        if "capabilities" in entry:
            check_capabilities(entry["capabilities"])
        try:
            parse_iso(entry["lastSeen"])
        except (KeyError, TypeError, ValueError):
            raise ZgentError(f"zgents.{zgent_id}.lastSeen must be an ISO 8601 time") from None
    return zgents


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
