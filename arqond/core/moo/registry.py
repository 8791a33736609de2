"""The registry: what each Zgent is declared as, its status, and registry.json (the seed's
schema) with the checks a file read back must pass.

Statuses move on signs of life and silence, judged against times the caller passes in (no
clock here): active after a sign of life, stale after ``stale_after`` seconds of silence,
offline once unregistered (or stopped, or without its handler when so configured). An
unregistered Zgent stays listed, offline, until ``purge_after`` seconds have passed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

from arqond.core.moo.names import ZgentError, check_name

SCHEMA_VERSION = 1
ENTRY_KEYS = ("name", "session", "pane", "log", "inbox", "socket", "capabilities", "status",
              "lastSeen")
# Beyond the seed's keys, in a cluster's registry.json only: the node that serves it.
NODE_KEY = "node"
# [zgents.NAME] keys and what each holds.
TABLE_KEYS = {"name": "a string", "session": "a string", "pane": "a string",
              "capabilities": "a list of strings", "uids": "a list of user names or uids",
              "groups": "a list of group names or gids"}
# The key of the saved spec (STATE_DIR/moo-zgents.json, never a command's argument) that says
# who registered it.
SAVED_OWNER = "owner"
MAX_FIELD_LENGTH = 256
MAX_CAPABILITIES = 64


class Status(StrEnum):
    ACTIVE = "active"
    STALE = "stale"
    OFFLINE = "offline"


# Plain names for the members (reading one off its Enum class costs about 0.1 us in 3.11,
# and a handler's every answer is a sign of life).
ACTIVE, STALE, OFFLINE = Status.ACTIVE, Status.STALE, Status.OFFLINE


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
    # The principal key ("uid:1000", "sub:alice") that registered it, or the owner of the
    # narrative file that brought it in; None for one the configuration declares.
    owner: str | None = None

    @classmethod
    def from_table(cls, zgent_id: str, body: Any, source: str, owner: str | None = None
                   ) -> "Spec":
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
                source=source, owner=owner)
        except ZgentError as exc:
            raise ZgentError(f"zgents.{zgent_id}: {exc}") from None

    def table(self) -> dict[str, Any]:
        return {"name": self.name, "session": self.session, "pane": self.pane,
                "capabilities": self.capabilities, "uids": self.uids, "groups": self.groups}

    def saved_table(self) -> dict[str, Any]:
        """The table kept in the state dir: the spec and who owns it."""
        return {**self.table(), **({SAVED_OWNER: self.owner} if self.owner else {})}

    @classmethod
    def from_saved(cls, zgent_id: str, body: Any) -> "Spec":
        """A spec as ``saved_table`` kept it (registered again at start)."""
        if not isinstance(body, dict):
            raise ZgentError(f"zgents.{zgent_id} must be a table")
        owner = body.get(SAVED_OWNER)
        if owner is not None and (not isinstance(owner, str) or not owner):
            raise ZgentError(f"zgents.{zgent_id}.{SAVED_OWNER} must be a principal key")
        table = {key: value for key, value in body.items() if key != SAVED_OWNER}
        return cls.from_table(zgent_id, table, "command", owner)


def check_table(body: Any) -> dict[str, Spec]:
    """The whole ``[zgents]`` table of the config file."""
    if not isinstance(body, dict):
        raise ZgentError("[zgents] must hold one [zgents.NAME] table per Zgent")
    return {zgent_id: Spec.from_table(zgent_id, table, "config")
            for zgent_id, table in body.items()}


@dataclass
class Zgent:
    """A served Zgent's registry entry as a model: its spec, its paths, its status."""

    spec: Spec
    inbox: str
    socket: str
    log: str
    last_seen: float
    status: Status = ACTIVE
    # The cluster node that serves it (arqond/cluster); None on a single node.
    node: str | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    def entry(self) -> dict[str, Any]:
        """This Zgent's registry.json entry, keys in the seed's order (and, in a cluster,
        the node that serves it)."""
        entry = {"name": self.spec.name, "session": self.spec.session, "pane": self.spec.pane,
                 "log": self.log, "inbox": self.inbox, "socket": self.socket,
                 "capabilities": list(self.spec.capabilities), "status": self.status.value,
                 "lastSeen": iso_seconds(self.last_seen)}
        if self.node is not None:
            entry[NODE_KEY] = self.node
        return entry

    def touch(self, now: float) -> bool:
        """A sign of life; True when the registry entry changed."""
        before = (self.status, int(self.last_seen))
        self.last_seen = now
        self.status = ACTIVE
        return before != (self.status, int(now))

    def check_stale(self, now: float, window: float) -> bool:
        """active -> stale after ``window`` seconds of silence; True when it changed."""
        if self.status is ACTIVE and now - self.last_seen > window:
            self.status = STALE
            return True
        return False


# The source of a Zgent another node of a cluster serves: never saved, it comes back from
# the cluster's registry.
CLUSTER = "cluster"


class Retired(NamedTuple):
    entry: dict[str, Any]     # as it was when unregistered, status offline
    since: float              # when it was unregistered


class Registry:
    """Every Zgent registry.json lists: the served ones, and the unregistered ones kept
    offline until ``purge_after``."""

    def __init__(self) -> None:
        self.live: dict[str, Zgent] = {}
        self.retired: dict[str, Retired] = {}

    def add(self, zgent: Zgent) -> None:
        self.live[zgent.id] = zgent
        self.retired.pop(zgent.id, None)

    def retire(self, name: str, now: float) -> dict[str, Any]:
        """NAME is no longer served: its entry stays, offline, until purged."""
        zgent = self.live.pop(name)
        zgent.status = OFFLINE
        entry = zgent.entry()
        self.retired[name] = Retired(entry, now)
        return entry

    def touch(self, name: str, now: float) -> bool:
        zgent = self.live.get(name)
        return zgent is not None and zgent.touch(now)

    def set_offline(self, name: str) -> bool:
        zgent = self.live.get(name)
        if zgent is None or zgent.status is OFFLINE:
            return False
        zgent.status = OFFLINE
        return True

    def sweep(self, now: float, stale_after: float, purge_after: float,
              attended: Container[str]) -> tuple[bool, list[str]]:
        """Statuses after silence, and the retired entries to drop; returns whether the
        document changed and which names were purged. A Zgent in ``attended`` (a handler is
        attached) counts as alive; ``purge_after`` 0 keeps retired entries for ever."""
        changed = False
        for name, zgent in self.live.items():
            changed |= zgent.touch(now) if name in attended else \
                zgent.check_stale(now, stale_after)
        purged = [name for name, retired in self.retired.items()
                  if purge_after and now - retired.since > purge_after]
        for name in purged:
            del self.retired[name]
        return changed or bool(purged), purged

    def entries(self) -> dict[str, dict[str, Any]]:
        entries = {name: retired.entry for name, retired in self.retired.items()}
        entries.update({name: zgent.entry() for name, zgent in self.live.items()})
        return entries

    def document(self) -> dict[str, Any]:
        return registry_document(self.entries())

    def saved(self) -> dict[str, dict[str, Any]]:
        """Specs of the Zgents registered at run time (by command or a narrative log): they
        are registered again at the next start. Config ones come from the config file."""
        return {name: zgent.spec.saved_table() for name, zgent in sorted(self.live.items())
                if zgent.spec.source not in ("config", CLUSTER)}


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
    statuses = [status.value for status in Status]
    for zgent_id, entry in zgents.items():
        check_name(zgent_id)
        if not isinstance(entry, dict):
            raise ZgentError(f"zgents.{zgent_id} must be an object")
        unknown = entry.keys() - {*ENTRY_KEYS, NODE_KEY}
        if unknown:
            raise ZgentError(f"zgents.{zgent_id}: unknown key(s) {', '.join(sorted(unknown))}")
        if entry.get("status") not in statuses:
            raise ZgentError(f"zgents.{zgent_id}.status must be one of {', '.join(statuses)}")
        if "capabilities" in entry:
            check_capabilities(entry["capabilities"])
        try:
            parse_iso(entry["lastSeen"])
        except (KeyError, TypeError, ValueError):
            raise ZgentError(f"zgents.{zgent_id}.lastSeen must be an ISO 8601 time") from None
    return zgents


def check_written_registry(raw: bytes, written_sha256: str | None) -> None:
    """A registry.json read back at start: valid, and the very file arqond wrote last (its
    digest is kept with the saved Zgents), so a hand edit is found."""
    check_registry(orjson.loads(raw))
    if written_sha256 is not None and hashlib.sha256(raw).hexdigest() != written_sha256:
        raise ZgentError("changed since arqond wrote it (declare Zgents in [zgents.NAME] or "
                         "with arqon zgent register instead)")


def check_saved(raw: bytes) -> dict[str, Any]:
    """The saved-Zgents file (STATE_DIR/moo-zgents.json) read back at start."""
    document = orjson.loads(raw)
    if not isinstance(document, dict) or not isinstance(document.get("zgents"), dict) \
            or not isinstance(document.get("registry_sha256"), str):
        raise ZgentError('expected {"zgents": {NAME: {...}}, "registry_sha256": "..."}')
    for zgent_id, table in document["zgents"].items():
        Spec.from_saved(zgent_id, table)
    return document


def saved_document(registry_data: bytes, saved: dict[str, dict[str, Any]]) -> bytes:
    """What STATE_DIR/moo-zgents.json holds next to the registry.json bytes ``registry_data``."""
    return orjson.dumps({"zgents": saved,
                         "registry_sha256": hashlib.sha256(registry_data).hexdigest()}) + b"\n"
