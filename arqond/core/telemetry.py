"""Telemetry without I/O: inbound event validation, the frames and envelopes built from events,
and the per-client coalescing of agent_activity reports.

The telemetry port speaks its own small JSON dialect (``event_type`` frames, as ArqonBus's
telemetry server sends them); validated events also travel on the bus as ``telemetry``
envelopes so ordinary bus clients can follow them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from arqond import SERVICE_NAME
from arqond.core import payload as payloads
from arqond.core.protocol import TELEMETRY_TARGET
from arqond.core.clients import Client
from arqond.core.envelope import SERVER_SENDER, json_type, now_iso
from arqond.core.errors import ErrorCode

TELEMETRY_STREAM = TELEMETRY_TARGET
DASHBOARD_EVENTS = ("integriguard", "dashboard-events")
MAX_EVENT_TYPE_LENGTH = 128
# Largest inbound telemetry frame, in bytes; larger ones get an error frame, not a close.
MAX_EVENT_BYTES = 65536
INBOUND_KEYS = frozenset({"eventType", "payload", "timestamp"})
SCHEMA_VERSION = "1.0"
SUBSCRIPTION_TYPES = ("subscribe", "unsubscribe")
# arqond's own event names: a client may not send them, so that a watcher can trust an event
# so named to come from arqond (the Bus's events, CASIL's, and the frames of this port).
# arqond(8) lists them; a test keeps this set in step with the events the code emits.
RESERVED_EVENT_TYPES = frozenset({
    "access_refused", "agent_activity", "audit", "casil_decision", "casil_internal_error",
    "casil_reloaded", "channel_created", "channel_deleted", "client_connected",
    "client_disconnected", "client_slow", "cron_cancelled", "error", "internal_error",
    "limit_reached", "policy_refusal", "store_failed", "telemetry_connected"})


class TelemetryError(Exception):
    """An inbound telemetry frame that is refused; the text says what is wrong."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class TelemetryEvent:
    event_type: str
    payload: dict[str, Any]
    source: str           # the telemetry connection's id, or "arqonbus" for arqond's own events
    timestamp: str


def parse_inbound(raw: str | bytes, max_depth: int) -> dict[str, Any]:
    """Decode one inbound frame into a JSON object, or raise TelemetryError.

    The JSON rule is every surface's (arqond/core/payload.py): an event too deep to be sent
    on must be refused here, not fail while it is broadcast.
    """
    # Characters are not bytes: a text frame is measured as it came on the wire, UTF-8.
    size = len(raw) if isinstance(raw, bytes) or len(raw) * 4 <= MAX_EVENT_BYTES \
        else len(raw.encode())
    if size > MAX_EVENT_BYTES:
        raise TelemetryError([f"frame is {size} bytes; telemetry events are limited to "
                              f"{MAX_EVENT_BYTES} bytes"])
    try:
        data = payloads.loads(raw, max_depth)
    except payloads.PayloadError as exc:
        raise TelemetryError([f"frame is {exc.message}" if exc.code == ErrorCode.INVALID_JSON
                              else exc.message]) from None
    if not isinstance(data, dict):
        raise TelemetryError([f"frame must be a JSON object, not {json_type(data)}"])
    return data


def is_subscription(data: dict[str, Any]) -> bool:
    """ArqonBus's ``{"type": "subscribe"|"unsubscribe", "events": [...]}``, checked.

    ArqonBus's telemetry server logs the list and filters nothing, and says nothing back; so
    does arqond: every watcher keeps getting every event, and an ArqonBus client's next frame
    is still the next event. Other keys are ignored, as with ping; an ``events`` that is not a
    list of names is refused, as it says nothing arqond could log."""
    if data.get("type") not in SUBSCRIPTION_TYPES:
        return False
    events = data.get("events", [])
    wrong = json_type(events) if not isinstance(events, list) else next(
        (f"an array holding {json_type(e)}" for e in events if not isinstance(e, str)), None)
    if wrong is not None:
        raise TelemetryError([f"{data['type']}: events must be an array of event type names "
                              f"(strings), not {wrong}"])
    return True


def validate_event(data: dict[str, Any], source: str) -> TelemetryEvent:
    """An inbound ``{"eventType": ..., "payload": {...}}`` object, checked field by field."""
    errors = []
    unknown = data.keys() - INBOUND_KEYS
    if unknown:
        errors.append(f"unknown key(s) {', '.join(repr(k) for k in sorted(unknown))}; a "
                      "telemetry event has eventType, payload and optionally timestamp")
    event_type = data.get("eventType")
    if event_type is None:
        errors.append("eventType is required (a non-empty string)")
    elif not isinstance(event_type, str):
        errors.append(f"eventType must be a string, not {json_type(event_type)}")
    elif not event_type.strip():
        errors.append("eventType must not be empty")
    elif len(event_type) > MAX_EVENT_TYPE_LENGTH:
        errors.append(f"eventType must be at most {MAX_EVENT_TYPE_LENGTH} characters")
    elif event_type.strip().lower() in RESERVED_EVENT_TYPES:
        errors.append(f"eventType {event_type!r} is reserved for arqond's own events "
                      "(arqond(8) lists them); choose another name")
    if "payload" not in data:
        errors.append("payload is required (a JSON object)")
    elif not isinstance(data["payload"], dict):
        errors.append(f"payload must be a JSON object, not {json_type(data['payload'])}")
    timestamp = data.get("timestamp")
    if timestamp is not None and not isinstance(timestamp, str):
        errors.append(f"timestamp must be a string, not {json_type(timestamp)}")
    if errors:
        raise TelemetryError(errors)
    return TelemetryEvent(event_type, data["payload"], source, timestamp or now_iso())


def server_event(event: str, fields: dict[str, Any]) -> TelemetryEvent:
    """arqond's own lifecycle events (a Bus listener's arguments) as telemetry."""
    return TelemetryEvent(event, dict(fields), SERVER_SENDER, now_iso())


def event_frame(event: TelemetryEvent) -> bytes:
    """What telemetry clients receive: ArqonBus's ``event_type`` shape, plus ``eventType``."""
    return orjson.dumps({
        "event_type": event.event_type, "eventType": event.event_type,
        "event_id": str(uuid.uuid4()), "timestamp": event.timestamp, "source": event.source,
        "payload": event.payload, "server_name": SERVICE_NAME,
        "schema_version": SCHEMA_VERSION})


def bus_envelope(event: TelemetryEvent, target: tuple[str, str] = TELEMETRY_STREAM
                 ) -> dict[str, Any]:
    """A ``telemetry`` envelope for the bus (payload keeps the event's own payload whole)."""
    room, channel = target
    return {"type": "telemetry", "room": room, "channel": channel, "sender": event.source,
            "payload": {"eventType": event.event_type, "client_id": event.source,
                        "payload": event.payload}}


def connected_frame(host: str, port: int) -> bytes:
    return orjson.dumps({
        "event_type": "telemetry_connected", "timestamp": now_iso(),
        "message": "Connected to ArqonBus telemetry",
        "server_config": {"host": host, "port": port, "filtered_events": []}})


def pong_frame() -> bytes:
    return orjson.dumps({"type": "pong", "timestamp": now_iso()})


def error_frame(errors: list[str], code: str = ErrorCode.VALIDATION_ERROR) -> bytes:
    message = "; ".join(errors)
    return orjson.dumps({"type": "error", "event_type": "error", "error": message,
                         "error_code": code, "errors": errors, "timestamp": now_iso()})


class _Window:
    __slots__ = ("client", "pending", "room", "channel", "last_message_id")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.pending = 0
        self.room: str | None = None
        self.channel: str | None = None
        self.last_message_id: str | None = None


class ActivityCoalescer:
    """At most one agent_activity event per agent client per interval.

    The first message from an agent is reported at once and opens a window; messages inside
    the window are only counted. ``tick`` (called once per interval) reports each window's
    count as one event and keeps the window open while the agent stays busy, so a chatty agent
    costs one event per interval however fast it sends. State is one small entry per agent
    active in the last interval, so it is bounded by the number of connected clients.
    """

    def __init__(self) -> None:
        self.windows: dict[str, _Window] = {}
        self.events_total = 0
        self.coalesced_total = 0   # messages folded into a later event instead of their own

    def observe(self, env: dict[str, Any], client: Client | None) -> dict[str, Any] | None:
        """A routed message; returns an agent_activity payload to publish now, or None."""
        if client is None or not client.is_agent:
            return None
        window = self.windows.get(client.id)
        if window is not None:
            window.pending += 1
            window.room, window.channel = env.get("room"), env.get("channel")
            window.last_message_id = env.get("id")
            self.coalesced_total += 1
            return None
        window = self.windows[client.id] = _Window(client)
        return self._report(window, 1, env.get("room"), env.get("channel"), env.get("id"))

    def tick(self) -> list[dict[str, Any]]:
        """End of an interval: one payload per window with messages; idle windows close."""
        reports = []
        for client_id, window in list(self.windows.items()):
            if window.pending:
                reports.append(self._report(window, window.pending, window.room,
                                            window.channel, window.last_message_id))
                window.pending = 0
            else:
                del self.windows[client_id]
        return reports

    def _report(self, window: _Window, messages: int, room: str | None, channel: str | None,
                message_id: str | None) -> dict[str, Any]:
        self.events_total += 1
        client = window.client
        return {"client_id": client.id, "client_type": client.type,
                "screen_name": client.screen_name, "messages": messages, "room": room,
                "channel": channel, "last_message_id": message_id, "at": now_iso()}


def activity_envelope(report: dict[str, Any]) -> dict[str, Any]:
    room, channel = DASHBOARD_EVENTS
    return {"type": "telemetry", "room": room, "channel": channel, "sender": SERVER_SENDER,
            "payload": {"eventType": "agent_activity", **report}}
