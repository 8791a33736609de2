"""Connected clients and the sink interface through which the core hands them frames."""

from __future__ import annotations

import time
from typing import Any, Mapping, Protocol

from arqond.core.envelope import client_id, iso_at, now_iso
from arqond.core.principal import NOBODY, Principal

CLIENT_TYPES = ("human", "dashboard", "ai-agent", "agent", "service", "system", "zgent", "bot")
# Clients whose messages are not reported as agent_activity telemetry.
NON_AGENT_TYPES = frozenset({"human", "dashboard", "system"})
IDENTITY_KEYS = ("type", "screen_name", "personality", "avatar")
MAX_IDENTITY_LENGTH = 256
# Connection query parameters that set identity fields (client_type is ArqonBus's spelling).
IDENTITY_QUERY_PARAMS = {"client_type": "type", "type": "type", "screen_name": "screen_name",
                         "personality": "personality", "avatar": "avatar"}

# Close codes the core asks adapters to use (documented in arqond(8)).
CLOSE_SLOW_CONSUMER = 4008
CLOSE_GOING_AWAY = 1001


def identity_from_query(query: Mapping[str, str]) -> dict[str, str]:
    return {IDENTITY_QUERY_PARAMS[key]: value for key, value in query.items()
            if key in IDENTITY_QUERY_PARAMS}


class Sink(Protocol):
    """What a transport gives the core for one client. Both calls must return at once."""

    def send(self, frame: bytes) -> bool:
        """Queue one frame; False when the client's bounded outgoing buffer is full."""

    def close(self, code: int, reason: str) -> None:
        """Start closing the connection; the adapter later calls Bus.detach."""

    def buffered(self) -> int:
        """Bytes queued for the client and not yet taken by the kernel."""


class Client:
    __slots__ = ("id", "sink", "transport", "principal", "admin", "type", "screen_name",
                 "personality", "avatar", "connected_at", "last_active", "room", "channel",
                 "subscriptions", "peer", "open")

    def __init__(self, sink: Sink | None, transport: str, principal: Principal = NOBODY, *,
                 peer: str = "") -> None:
        self.id = client_id()
        # None for a sender that is not a connection (an HTTP POST): nothing is sent to it.
        self.sink = sink
        self.transport = transport
        # Who is behind it (arqond/core/principal.py); admin is read on every command.
        self.principal = principal
        self.admin = principal.admin
        self.type = "human"
        self.screen_name: str | None = None
        self.personality: str | None = None
        self.avatar: str | None = None
        self.connected_at = now_iso()
        # A float, set on every inbound frame; formatted only when someone asks.
        self.last_active = time.time()
        # The "current" room/channel: the fallback target of messages that name none.
        self.room: str | None = None
        self.channel: str | None = None
        self.subscriptions: set[tuple[str, str]] = set()
        self.peer = peer
        self.open = True

    def identify(self, fields: dict[str, Any]) -> list[str]:
        """Apply identity fields; returns the problems found (nothing is applied if any)."""
        problems = []
        for key, value in fields.items():
            if key not in IDENTITY_KEYS:
                problems.append(f"unknown identity field {key!r}")
            elif not isinstance(value, str) or not (0 < len(value) <= MAX_IDENTITY_LENGTH):
                problems.append(f"{key} must be a string of 1 to {MAX_IDENTITY_LENGTH} characters")
        if not problems:
            for key, value in fields.items():
                setattr(self, key, value)
        return problems

    @property
    def is_agent(self) -> bool:
        return self.type not in NON_AGENT_TYPES

    def describe(self) -> dict[str, Any]:
        return {
            "client_id": self.id,
            "type": self.type,
            "transport": self.transport,
            "screen_name": self.screen_name,
            "personality": self.personality,
            "avatar": self.avatar,
            "role": self.principal.role,
            "tenant_id": self.principal.tenant,
            "subject": self.principal.subject,
            "principal": self.principal.name,
            "admin": self.admin,
            "connected_at": self.connected_at,
            "last_activity": iso_at(self.last_active),
            "room": self.room,
            "channel": self.channel,
            "subscriptions": sorted(f"{r}:{c}" for r, c in self.subscriptions),
        }
