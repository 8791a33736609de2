"""Frames for the telemetry port: ``{"eventType": TYPE, "payload": {...}}`` events, and
``{"type": "ping"}``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import orjson

from tests.corpus.bus import DEEP
from tests.corpus.json_text import json_cases
from tests.corpus.oracle import type_name

MAX_EVENT_BYTES = 65536
UNKNOWN = "unknown key(s) {}; a telemetry event has eventType, payload and optionally timestamp"
NO_TYPE = "eventType is required (a non-empty string)"
NO_PAYLOAD = "payload is required (a JSON object)"
# arqond's own event names, written out as arqond(8) lists them.
RESERVED = ("access_refused", "agent_activity", "audit", "casil_decision",
            "casil_internal_error", "casil_reloaded", "channel_created", "channel_deleted",
            "client_connected", "client_disconnected", "client_slow", "cron_cancelled",
            "error", "internal_error", "limit_reached", "policy_refusal", "store_failed",
            "telemetry_connected")


@dataclass(frozen=True)
class Refused:
    """An error frame listing ``errors``; None: the reference decoder's syntax error."""

    errors: tuple[str, ...] | None


@dataclass(frozen=True)
class Broadcast:
    """Accepted: every other watcher receives the event with this payload."""

    event_type: str
    payload: Any


@dataclass(frozen=True)
class Pong:
    pass


@dataclass(frozen=True)
class TelemetryCase:
    name: str
    data: bytes
    expect: Refused | Broadcast | Pong


def event(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def reserved_message(name: str) -> str:
    return f"eventType {name!r} is reserved for arqond's own events (arqond(8) lists them); " \
        "choose another name"


def json_frames(max_depth: int) -> Iterator[TelemetryCase]:
    deep = DEEP.format(max_depth=max_depth)
    for case in json_cases(max_depth):
        if case.verdict == "invalid":
            yield TelemetryCase(f"frame: {case.name}", case.text, Refused(None))
        elif case.verdict == "deep":
            yield TelemetryCase(f"frame: {case.name}", case.text, Refused((deep,)))
        else:
            value = orjson.loads(case.text)
            if not isinstance(value, dict):
                expect = Refused((f"frame must be a JSON object, not {type_name(value)}",))
            else:
                unknown = [UNKNOWN.format(", ".join(repr(k) for k in sorted(value)))] \
                    if value else []
                expect = Refused((*unknown, NO_TYPE, NO_PAYLOAD))
            yield TelemetryCase(f"frame: {case.name}", case.text, expect)
        data = b'{"eventType":"corpus","payload":' + case.text + b"}"
        if case.verdict == "invalid":
            expect = Refused(None)
        elif case.depth + 1 > max_depth:
            expect = Refused((deep,))
        else:
            value = orjson.loads(case.text)
            expect = Broadcast("corpus", value) if isinstance(value, dict) else Refused(
                (f"payload must be a JSON object, not {type_name(value)}",))
        yield TelemetryCase(f"payload: {case.name}", data, expect)


def field_frames() -> Iterator[TelemetryCase]:
    for value in (1, 2.5, True, [], {}, ["corpus"]):
        yield TelemetryCase(f"eventType is {orjson.dumps(value).decode()}",
                            event(eventType=value, payload={}),
                            Refused((f"eventType must be a string, not {type_name(value)}",)))
    yield TelemetryCase("eventType null", event(eventType=None, payload={}), Refused((NO_TYPE,)))
    for value in ("", " ", "\t\n"):
        yield TelemetryCase(f"eventType {value!r}", event(eventType=value, payload={}),
                            Refused(("eventType must not be empty",)))
    for size, accepted in ((128, True), (129, False), (10000, False)):
        name = "e" * size
        yield TelemetryCase(f"eventType of {size} characters", event(eventType=name, payload={}),
                            Broadcast(name, {}) if accepted else
                            Refused(("eventType must be at most 128 characters",)))
    for value in ("é" * 128, "\u0000", "a\u202eb", "\U0001f600", "x" * 127 + "\U0001f600"):
        yield TelemetryCase(f"eventType {value[:8]!r} accepted", event(eventType=value, payload={}),
                            Broadcast(value, {}))
    for name in RESERVED:
        yield TelemetryCase(f"reserved {name}", event(eventType=name, payload={}),
                            Refused((reserved_message(name),)))
    for name in ("CLIENT_CONNECTED", " channel_created", "Casil_Decision\t"):
        yield TelemetryCase(f"reserved in another case {name!r}",
                            event(eventType=name, payload={}), Refused((reserved_message(name),)))
    yield TelemetryCase("a name that only starts like a reserved one",
                        event(eventType="client_connected.v2", payload={}),
                        Broadcast("client_connected.v2", {}))
    for value in (1, "text", True, [], None):
        yield TelemetryCase(f"payload is {orjson.dumps(value).decode()}",
                            event(eventType="corpus", payload=value),
                            Refused((f"payload must be a JSON object, not {type_name(value)}",)))
    yield TelemetryCase("payload missing", event(eventType="corpus"), Refused((NO_PAYLOAD,)))
    for value in (1, True, [], {}):
        yield TelemetryCase(f"timestamp is {orjson.dumps(value).decode()}",
                            event(eventType="corpus", payload={}, timestamp=value),
                            Refused((f"timestamp must be a string, not {type_name(value)}",)))
    yield TelemetryCase("timestamp any string", event(eventType="corpus", payload={"t": 1},
                                                      timestamp="whenever"),
                        Broadcast("corpus", {"t": 1}))
    for keys in (["type"], ["event_type"], ["source", "id"], ["EventType"], [""]):
        yield TelemetryCase(f"unknown keys {keys}",
                            event(eventType="corpus", payload={}, **{key: 1 for key in keys}),
                            Refused((UNKNOWN.format(", ".join(repr(k) for k in sorted(keys))),)))
    yield TelemetryCase("every field wrong at once",
                        event(eventType=5, payload=[], timestamp=5, extra=1),
                        Refused((UNKNOWN.format("'extra'"), "eventType must be a string, not a "
                                 "number", "payload must be a JSON object, not an array",
                                 "timestamp must be a string, not a number")))
    for frame in (b'{"type":"ping"}', b'{"type":"ping","payload":[1]}', b' {"type":"ping"} '):
        yield TelemetryCase(f"ping {frame.decode().strip()}", frame, Pong())
    yield TelemetryCase("pong is no event", b'{"type":"pong"}',
                        Refused((UNKNOWN.format("'type'"), NO_TYPE, NO_PAYLOAD)))
    for size, accepted in ((MAX_EVENT_BYTES, True), (MAX_EVENT_BYTES + 1, False)):
        yield TelemetryCase(f"frame of {size} bytes", sized(size, "x"), Broadcast(
            "corpus", orjson.loads(sized(size, "x"))["payload"]) if accepted else Refused(
                (f"frame is {size} bytes; telemetry events are limited to "
                 f"{MAX_EVENT_BYTES} bytes",)))
    # Fewer characters than bytes: the bound is in bytes on the wire.
    data = sized(MAX_EVENT_BYTES + 2, "é")
    yield TelemetryCase("two-byte characters past the bound in bytes, not in characters", data,
                        Refused((f"frame is {len(data)} bytes; telemetry events are limited to "
                                 f"{MAX_EVENT_BYTES} bytes",)))


def sized(size: int, fill: str) -> bytes:
    """A valid event of exactly ``size`` bytes (or one more, for a 2-byte ``fill``)."""
    head = b'{"eventType":"corpus","payload":{"s":"'
    tail = b'"}}'
    room = size - len(head) - len(tail)
    width = len(fill.encode())
    return head + (fill * (room // width)).encode() + b"x" * (room % width) + tail


def telemetry_corpus(max_depth: int) -> list[TelemetryCase]:
    return [*json_frames(max_depth), *field_frames()]
