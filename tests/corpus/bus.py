"""Frames for the bus protocol: the WebSocket port, the local bus socket and the control socket
speak it alike (one frame per WebSocket message, or per line).

Every frame that gets past JSON decoding carries an ``id``, so the ``request_id`` of its
error is known exactly. Accepted frames go to the sentinel channel, where the sentinel sees
what they became.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator

import orjson

from tests.corpus.json_text import JsonCase, json_cases
from tests.corpus.oracle import type_name

ROOM, CHANNEL = "corpus", "sentinel"
DEEP = "JSON nests deeper than {max_depth} levels (server.max_json_depth)"
NAME_RULE = ("1 to 128 characters, no control characters, no ':' (it separates room from "
             "channel), and not '*' alone (the wildcard)")
INBOUND_TYPES = "command, error, event, message, private, response, system, telemetry"
STRING_FIELDS = ("id", "timestamp", "type", "version", "room", "channel", "command",
                 "request_id", "status", "error", "error_code", "from_client")
WRONG_TYPES = (1, 2.5, True, [], {}, ["x"], {"a": 1})
DROP = object()  # a field left out of the frame


@dataclass(frozen=True)
class Refused:
    """One error frame. ``text`` None: "frame is " and the reference decoder's syntax error
    for the bytes as the surface decodes them."""

    code: str
    text: str | None
    request_id: str | None = None


@dataclass(frozen=True)
class Failed:
    """A command's failure: a ``response`` with status error, then the command_response ack."""

    command: str
    code: str
    text: str
    request_id: str
    # What a client that is not an admin gets instead (the WebSocket port's TCP peers here).
    refused_to_non_admin: str | None = None


@dataclass(frozen=True)
class Routed:
    """Accepted: acknowledged, and the sentinel channel receives ``payload``."""

    payload: Any
    request_id: str | None = None
    channel: str | None = CHANNEL  # None: sent to the whole room


@dataclass(frozen=True)
class Acked:
    """Accepted and acknowledged, routed elsewhere or nowhere: the sentinel receives nothing
    (a channel of its own for its first publisher, or a room that does not exist)."""

    request_id: str


@dataclass(frozen=True)
class Ignored:
    """Accepted and answered with nothing (a client's ``response`` or ``error`` frame)."""


@dataclass(frozen=True)
class BusCase:
    name: str
    data: bytes
    expect: Refused | Failed | Routed | Acked | Ignored
    xfail: str | None = None   # a known bug in a file outside this test's reach: why
    kind: str = field(default="frame")  # what part of the corpus it comes from

    @property
    def one_line(self) -> bool:
        """Whether a line-framed surface can carry it as one line."""
        return b"\n" not in self.data


_ids = (f"corpus-{n}" for n in itertools.count(1))


def message(**fields: Any) -> tuple[str, bytes]:
    """A message frame to the sentinel with fields changed (DROP removes one); its id."""
    frame: dict[str, Any] = {"id": next(_ids), "type": "message", "room": ROOM,
                             "channel": CHANNEL, "payload": {"n": 1}}
    for key, value in fields.items():
        if value is DROP:
            frame.pop(key, None)
        else:
            frame[key] = value
    return frame["id"] if isinstance(frame.get("id"), str) else None, orjson.dumps(frame)


def command(name: str, args: dict[str, Any] | bytes) -> tuple[str, bytes]:
    """A command frame; ``args`` as bytes is JSON text orjson would not write (big integers)."""
    request_id = next(_ids)
    head = orjson.dumps({"id": request_id, "type": "command", "command": name})
    return request_id, head[:-1] + b',"args":' + (
        args if isinstance(args, bytes) else orjson.dumps(args)) + b"}"


def embedded(case: JsonCase) -> bytes:
    return (b'{"type":"message","room":"%s","channel":"%s","payload":'
            % (ROOM.encode(), CHANNEL.encode()) + case.text + b"}")


def json_frames(max_depth: int) -> Iterator[BusCase]:
    """Each JSON text as a whole frame, and as the payload of a message to the sentinel."""
    deep = DEEP.format(max_depth=max_depth)
    for case in json_cases(max_depth):
        if case.verdict == "invalid":
            yield BusCase(f"frame: {case.name}", case.text, Refused("INVALID_JSON", None),
                          kind="json")
        elif case.verdict == "deep":
            yield BusCase(f"frame: {case.name}", case.text, Refused("VALIDATION_ERROR", deep),
                          kind="json")
        else:
            yield BusCase(f"frame: {case.name}", case.text, _whole_frame(case.text),
                          kind="json")
        if case.verdict == "invalid":
            expect: Any = Refused("INVALID_JSON", None)
        elif case.depth + 1 > max_depth:
            expect = Refused("VALIDATION_ERROR", deep)
        else:
            value = orjson.loads(case.text)
            expect = Refused("VALIDATION_ERROR", "payload is required for a message") \
                if value is None or value == "" else Routed(value)
        yield BusCase(f"payload: {case.name}", embedded(case), expect, kind="json")


def _whole_frame(text: bytes) -> Refused:
    """What a valid JSON text that is no envelope gets, by the envelope's rules."""
    value = orjson.loads(text)
    if not isinstance(value, dict):
        return Refused("VALIDATION_ERROR", f"frame must be a JSON object, not {type_name(value)}")
    if value:  # every test text's keys are unknown to the envelope
        names = ", ".join(repr(key) for key in sorted(value))
        return Refused("VALIDATION_ERROR", f"unknown top-level key(s): {names}")
    return Refused("VALIDATION_ERROR", "payload is required for a message")


def field_frames() -> Iterator[BusCase]:
    """Wrong types in every field, unknown keys, bad values: the envelope's own rules."""
    for key in (*STRING_FIELDS, "from"):
        for value in WRONG_TYPES:
            request_id, data = message(**{key: value})
            named = "from_client" if key == "from" else key
            yield BusCase(f"{key} is {orjson.dumps(value).decode()}", data, Refused(
                "VALIDATION_ERROR", f"{named} must be a string, not {type_name(value)}",
                None if key == "id" else request_id))
    for key in ("args", "metadata"):
        for value in (1, "text", False, [], [{"a": 1}]):
            request_id, data = message(**{key: value})
            yield BusCase(f"{key} is {orjson.dumps(value).decode()}", data, Refused(
                "VALIDATION_ERROR", f"{key} must be an object, not {type_name(value)}",
                request_id))
    for value in (5, "", [1], [""], ["ok", 2], {"a": 1}, False):
        request_id, data = message(to_client=value)
        yield BusCase(f"to_client is {orjson.dumps(value).decode()}", data, Refused(
            "VALIDATION_ERROR", "to_client must be a client id string or a list of them",
            request_id))
    for keys in (["zz"], ["content", "zz"], ["Type"], [""], ["\u0000"], ["a\nb"],
                 ["ключ"], ["k" * 1000], ["payload ", " id"], ["__proto__"]):
        request_id, data = message(**{key: 1 for key in keys})
        names = ", ".join(repr(key) for key in sorted(keys))
        yield BusCase(f"unknown keys {names[:40]}", data, Refused(
            "VALIDATION_ERROR", f"unknown top-level key(s): {names}", request_id))
    request_id, data = message(timestamp=5, room=6, channel=None, metadata=[])
    yield BusCase("several wrong fields at once", data, Refused(
        "VALIDATION_ERROR", "timestamp must be a string, not a number; room must be a string, "
        "not a number; metadata must be an object, not an array", request_id))
    for kind in ("shout", "MESSAGE", " message", "message ", "message_response",
                 "command_response", "welcome", "x" * 300, "mess\u0000age", "ping"):
        request_id, data = message(type=kind)
        yield BusCase(f"type {kind[:20]!r}", data, Refused(
            "VALIDATION_ERROR", f"unknown type {kind!r}; expected one of {INBOUND_TYPES}",
            request_id))
    for kind in ("response", "error"):
        _, data = message(type=kind)
        yield BusCase(f"a client's {kind} frame", data, Ignored())
    for value, accepted in (("", False), ("x" * 129, False), ("x" * 128, True),
                            ("\u0000", True), ("é" * 128, True), ("é" * 129, False)):
        request_id, data = message(id=value)
        yield BusCase(f"id of {len(value)} characters {value[:1]!r}", data,
                      Routed({"n": 1}, value) if accepted else
                      Refused("VALIDATION_ERROR", "id must be 1 to 128 characters", value))
    for value in ("2.0", "", "1", "1.0 ", "v1.0"):
        request_id, data = message(version=value)
        yield BusCase(f"version {value!r}", data, Refused(
            "VALIDATION_ERROR", f"version must be '1.0', not {value!r}", request_id))
    for value in ("yesterday", "", "2024-13-01T00:00:00", "2024-01-01T25:00:00",
                  "2024-02-30", "2024-01-01T00:00:00+25:00", "now\u0000"):
        request_id, data = message(timestamp=value)
        yield BusCase(f"timestamp {value!r}", data, Refused(
            "VALIDATION_ERROR", f"timestamp {value!r} is not ISO 8601", request_id))
    for value in ("2024-01-01", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00.123456+05:30"):
        request_id, data = message(timestamp=value)
        yield BusCase(f"timestamp {value!r} accepted", data, Routed({"n": 1}, request_id))
    for key, value in (("room", "x" * 129), ("room", "*"), ("room", "x\u0000"),
                       ("room", "tab\there"), ("room", "corpus\n"), ("room", "corpus\r"),
                       ("room", "del\u007f"), ("room", "next line\u0085"),
                       ("channel", "x" * 129), ("channel", "*"), ("channel", "\u001b[0m"),
                       ("channel", "sentinel\n")):
        request_id, data = message(**{key: value})
        yield BusCase(f"{key} named {value[:20]!r}", data, Refused(
            "VALIDATION_ERROR", f"invalid {key} name {value!r}: {NAME_RULE}", request_id))
    # Any other string is a name, as in ArqonBus: the first message creates the channel for
    # its publisher, and goes only to who joins it.
    for value in ("bad name", "-dash", ".dot", "_under", "a/b", "a\\b", "..", "ünï",
                  "emoji\U0001f600", "semi;colon", "x" * 128, "zero\u200bwidth", "<script>"):
        request_id, data = message(room=value)
        yield BusCase(f"room named {value[:20]!r}: a channel of its own", data,
                      Acked(request_id))
    for room, channel in (("nowhere", "x"), ("corpus", "nothing"), ("corpus:nothing", DROP),
                          ("nowhere", DROP)):
        request_id, data = message(room=room, channel=channel)
        shown = f"{room}:{channel}" if channel is not DROP else f"{room} alone"
        yield BusCase(f"target {shown}: elsewhere or nowhere", data, Acked(request_id))
    for room, channel in (("", "sentinel"), ("corpus", "")):
        request_id, data = message(room=room, channel=channel)
        yield BusCase(f"empty {'room' if not room else 'channel'} is left out", data,
                      Acked(request_id) if not room else Routed({"n": 1}, request_id, None))
    request_id, data = message(room="corpus:sentinel", channel=DROP)
    yield BusCase("target as room:channel in room", data, Routed({"n": 1}, request_id))
    request_id, data = message(room=DROP, channel="corpus:sentinel")
    yield BusCase("target as room:channel in channel", data, Routed({"n": 1}, request_id))
    for kind in ("message", "event"):
        for value in (DROP, None, ""):
            request_id, data = message(type=kind, payload=value)
            shown = "missing" if value is DROP else orjson.dumps(value).decode()
            yield BusCase(f"{kind} payload {shown}", data, Refused(
                "VALIDATION_ERROR", "payload is required for a message", request_id))
    for value in (0, False, [], {}, "text", 0.0, [None]):
        request_id, data = message(payload=value)
        yield BusCase(f"payload {orjson.dumps(value).decode()} accepted", data,
                      Routed(value, request_id))
    request_id, data = message(type=DROP)
    yield BusCase("type missing: a message", data, Routed({"n": 1}, request_id))
    request_id, data = message(type="")
    yield BusCase("type empty: a message", data, Routed({"n": 1}, request_id))
    request_id, data = message(sender="someone-else", to_client=[])
    yield BusCase("sender claimed, to_client empty", data, Routed({"n": 1}, request_id))
    without_name = "command requires a non-empty 'command' name " \
        "(or payload.command in the legacy shape)"
    for extra in ({}, {"command": ""}, {"payload": {"command": ""}},
                  {"payload": {"command": 5}}, {"payload": "ping"}):
        request_id, data = message(**{"type": "command", "payload": DROP, **extra})
        yield BusCase(f"command frame {orjson.dumps(extra).decode()[:30]}", data, Refused(
            "VALIDATION_ERROR", without_name, request_id))
    no_target = ("a private message needs payload.target or to_client: a client id or a list "
                 "of client ids")
    for extra in ({}, {"payload": {"target": []}}, {"payload": {"target": [1]}},
                  {"payload": "text"}, {"payload": {"target": ""}}):
        request_id, data = message(type="private", room=DROP, channel=DROP, **extra)
        yield BusCase(f"private {orjson.dumps(extra).decode()[:30]}", data,
                      Refused("VALIDATION_ERROR", no_target, request_id))
    for targets in ("nobody", ["nobody", "noone"]):
        request_id, data = message(type="private", room=DROP, channel=DROP, to_client=targets)
        missing = targets if isinstance(targets, str) else ", ".join(targets)
        yield BusCase(f"private to {missing}", data, Refused(
            "TARGET_NOT_FOUND", f"no connected client with id {missing}", request_id))


# (command, args, error code, error text): each answered with a failed response.
COMMAND_ERRORS = [
    ("nope", {}, "UNKNOWN_COMMAND", "unknown command 'nope'; the help command lists them"),
    ("NOPE\u0000", {}, "UNKNOWN_COMMAND",
     "unknown command 'NOPE\\x00'; the help command lists them"),
    ("join_channel", {"room": 5}, "VALIDATION_ERROR", "argument 'room' must be str, not a number"),
    ("join_channel", {"channel": []}, "VALIDATION_ERROR",
     "argument 'channel' must be str, not an array"),
    ("join_channel", {"room": "x" * 129, "channel": "x"}, "VALIDATION_ERROR",
     f"invalid room name {'x' * 129!r}: {NAME_RULE}"),
    ("join_channel", {"room": "*", "channel": "bad\u0000"}, "VALIDATION_ERROR",
     f"invalid channel name 'bad\\x00': {NAME_RULE}"),
    ("history", {"room": "science", "limit": 0},
     "VALIDATION_ERROR", "limit must be between 1 and 500"),
    ("history", {"room": "science", "limit": 501},
     "VALIDATION_ERROR", "limit must be between 1 and 500"),
    ("history", {"room": "science", "limit": -3},
     "VALIDATION_ERROR", "limit must be between 1 and 500"),
    ("history", b'{"room":"science","limit":18446744073709551616}', "VALIDATION_ERROR",
     "argument 'limit' must be int, not a number"),
    ("history", {"room": "science", "limit": "10"},
     "VALIDATION_ERROR", "argument 'limit' must be int, not a string"),
    ("history", {"room": "science", "limit": 1.5},
     "VALIDATION_ERROR", "argument 'limit' must be int, not a number"),
    ("history", {"room": "science", "limit": True}, "VALIDATION_ERROR",
     "argument 'limit' must be int, not a boolean"),
    ("history", {"room": "science", "since": "yesterday"},
     "VALIDATION_ERROR", "since 'yesterday' is not ISO 8601"),
    ("list_channels", {"offset": -1}, "VALIDATION_ERROR", "offset must be 0 or more"),
    ("list_channels", {"offset": "x"}, "VALIDATION_ERROR",
     "argument 'offset' must be int, not a string"),
    ("list_channels", {"room": "absent-room"}, "NOT_FOUND", "room absent-room does not exist"),
    ("list_channels", {"limit": 1001}, "VALIDATION_ERROR", "limit must be between 1 and 1000"),
    ("history.get", {"room": "science", "since": "2024-01-02", "until": "2024-01-01"},
     "VALIDATION_ERROR", "until is before since"),
    ("history.replay", {"room": "science"}, "VALIDATION_ERROR",
     "history.replay requires argument 'from_ts'"),
    ("history.replay", {"room": "science", "from_ts": "x", "to_ts": "2024-01-01"},
     "VALIDATION_ERROR", "from_ts 'x' is not ISO 8601"),
    ("history.replay", {"room": "science", "from_ts": "2024-01-01", "to_ts": "2024-01-02",
                        "strict_sequence": "yes"},
     "VALIDATION_ERROR", "argument 'strict_sequence' must be bool, not a string"),
    ("op.store.set", {"key": "k"}, "VALIDATION_ERROR", "op.store.set requires a non-null 'value'"),
    ("op.store.set", {"key": "k", "value": None}, "VALIDATION_ERROR",
     "op.store.set requires a non-null 'value'"),
    ("op.store.set", {"key": "", "value": 1}, "VALIDATION_ERROR", "key must not be empty"),
    ("op.store.set", {"key": "k", "value": "x" * 70000}, "LIMIT_EXCEEDED",
     "value of 70002 bytes is larger than store.max_value_bytes (65536)"),
    ("op.store.set", {"key": 5, "value": 1}, "VALIDATION_ERROR",
     "argument 'key' must be str, not a number"),
    ("op.store.set", {"key": "k", "value": 1, "namespace": 7}, "VALIDATION_ERROR",
     "argument 'namespace' must be str, not a number"),
    ("op.store.get", {}, "VALIDATION_ERROR", "op.store.get requires argument 'key'"),
    ("op.cron.schedule", {"channel": "x"}, "VALIDATION_ERROR",
     "Validation error: op.cron.schedule requires non-empty room and channel"),
    ("op.cron.schedule", {"room": "a", "channel": "b", "payload": {"x": 1},
                          "delay_seconds": -1},
     "VALIDATION_ERROR", "Validation error: delay_seconds must be from 0.01 to 2.6784e+06"),
    ("op.cron.schedule", {"room": "a", "channel": "b", "payload": {"x": 1},
                          "delay_seconds": 1e300},
     "VALIDATION_ERROR", "Validation error: delay_seconds must be from 0.01 to 2.6784e+06"),
    ("op.cron.schedule", {"room": "a", "channel": "b", "payload": {"x": 1}, "repeat_count": 0},
     "VALIDATION_ERROR", "Validation error: repeat_count must be from 1 to 1000000"),
    ("op.cron.schedule", {"room": "a", "channel": "b", "payload": {"x": 1}, "repeat_count": 3},
     "VALIDATION_ERROR", "Validation error: interval_seconds is required when repeat_count > 1"),
    ("op.cron.schedule", {"room": "a", "channel": "b", "payload": "str"}, "VALIDATION_ERROR",
     "argument 'payload' must be dict, not a string"),
    ("op.cron.schedule", {"room": "a\tb", "channel": "b", "payload": {}}, "VALIDATION_ERROR",
     f"invalid room name 'a\\tb': {NAME_RULE}"),
    ("op.cron.cancel", {"job_id": "nope"}, "NOT_FOUND", "no cron job 'nope'"),
    ("op.cron.cancel", {}, "VALIDATION_ERROR", "op.cron.cancel requires argument 'job_id'"),
    ("identify", {"age": 3}, "VALIDATION_ERROR", "unknown identity field 'age'"),
    ("identify", {"screen_name": ""}, "VALIDATION_ERROR",
     "screen_name must be a string of 1 to 256 characters"),
    ("identify", {"screen_name": "x" * 257}, "VALIDATION_ERROR",
     "screen_name must be a string of 1 to 256 characters"),
    ("identify", {"type": 5}, "VALIDATION_ERROR", "type must be a string of 1 to 256 characters"),
    ("create_channel", {"room": "science", "channel": "general"}, "CHANNEL_EXISTS",
     "channel science:general already exists"),
    ("delete_channel", {"room": "science", "channel": "general"}, "CHANNEL_PROTECTED",
     "channel science:general is hard-coded and cannot be deleted"),
    ("delete_channel", {"room": "absent-room", "channel": "x"}, "NOT_FOUND",
     "channel absent-room:x does not exist"),
    ("leave_channel", {"room": "science", "channel": "explore"}, "NOT_A_MEMBER",
     "client is not in science:explore"),
    ("channel_info", {"room": "absent-room", "channel": "x"}, "NOT_FOUND",
     "channel absent-room:x does not exist"),
    ("op.webhook.register", {"url": "ftp://x/"}, "VALIDATION_ERROR",
     "Validation error: url must start with http:// or https:// and name a host"),
    ("op.webhook.register", {"url": "http://[::1"}, "VALIDATION_ERROR",
     "Validation error: bad url: Invalid IPv6 URL"),
    ("op.webhook.register", {}, "VALIDATION_ERROR",
     "op.webhook.register requires argument 'url'"),
    ("op.casil.reload", {"mode": "audit"}, "VALIDATION_ERROR",
     "Validation error: mode: must be one of monitor, enforce, not 'audit'"),
    ("op.casil.reload", {"redaction_patterns": ["("]}, "VALIDATION_ERROR",
     "Validation error: redaction_patterns: '(' is not a valid regular expression "
     "(missing ), unterminated subpattern at position 0)"),
]


# Who may run what (arqond/core/access.py, the admin flag of each command), restated.
ADMIN_ONLY = {"create_channel", "delete_channel", "op.casil.reload"}
WEBHOOK_COMMANDS = {"op.webhook.register", "op.webhook.list", "op.webhook.unregister"}


def command_frames() -> Iterator[BusCase]:
    for name, args, code, text in COMMAND_ERRORS:
        request_id, data = command(name, args)
        shown = args.decode() if isinstance(args, bytes) else orjson.dumps(args).decode()
        refusal = f"{name} is for admin clients only" if name in ADMIN_ONLY else \
            "not allowed to use webhooks (allowed: admins)" if name in WEBHOOK_COMMANDS else None
        yield BusCase(f"{name} {shown[:70]}", data,
                      Failed(name, code, text, request_id, refusal), kind="command")


def bus_corpus(max_depth: int) -> list[BusCase]:
    return [*json_frames(max_depth), *field_frames(), *command_frames()]
