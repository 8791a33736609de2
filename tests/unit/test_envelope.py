"""The ArqonBus v1.0 envelope (arqond/core/envelope.py): the accepted frame as a table of
bad frames and the exact error each gets, defaults, the wire order of keys, ids and stamps.

The daemon test tests/test_ws_bad_input.py proves once per surface that these errors reach
the client and disturb nobody; the rule itself is here, row by row."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from arqond.core import envelope
from arqond.core.envelope import EnvelopeError
from arqond.core.errors import ErrorCode
from tests.unit.harness import BusHarness, assert_ack, assert_error

# (id, frame, code, the whole error text). One row per rule of envelope.parse.
BAD_FRAMES = [
    ("not json", "this is not json", ErrorCode.INVALID_JSON,
     re.compile(r"frame is not valid JSON: .+: line 1 column 1 \(char 0\)")),
    ("json array", "[1, 2]", ErrorCode.VALIDATION_ERROR,
     "frame must be a JSON object, not an array"),
    ("json number", "42", ErrorCode.VALIDATION_ERROR, "frame must be a JSON object, not a number"),
    ("json string", '"hi"', ErrorCode.VALIDATION_ERROR,
     "frame must be a JSON object, not a string"),
    ("json null", "null", ErrorCode.VALIDATION_ERROR, "frame must be a JSON object, not null"),
    ("json boolean", "true", ErrorCode.VALIDATION_ERROR,
     "frame must be a JSON object, not a boolean"),
    ("unknown keys", '{"type":"message","payload":{},"content":"x","zz":1}',
     ErrorCode.VALIDATION_ERROR, "unknown top-level key(s): 'content', 'zz'"),
    ("room not a string", '{"type":"message","room":5,"payload":{"a":1}}',
     ErrorCode.VALIDATION_ERROR, "room must be a string, not a number"),
    ("args not an object", '{"type":"command","command":"ping","args":[1]}',
     ErrorCode.VALIDATION_ERROR, "args must be an object, not an array"),
    ("metadata not an object", '{"type":"message","payload":{"a":1},"metadata":"m"}',
     ErrorCode.VALIDATION_ERROR, "metadata must be an object, not a string"),
    ("to_client empty", '{"type":"private","payload":{"a":1},"to_client":""}',
     ErrorCode.VALIDATION_ERROR, "to_client must be a client id string or a list of them"),
    ("to_client not ids", '{"type":"private","payload":{"a":1},"to_client":["a",1]}',
     ErrorCode.VALIDATION_ERROR, "to_client must be a client id string or a list of them"),
    ("two type errors", '{"type":5,"id":7,"payload":{"a":1}}', ErrorCode.VALIDATION_ERROR,
     "id must be a string, not a number; type must be a string, not a number"),
    ("bad version", '{"type":"message","payload":{"a":1},"version":"2.0"}',
     ErrorCode.VALIDATION_ERROR, "version must be '1.0', not '2.0'"),
    ("bad timestamp", '{"type":"message","payload":{"a":1},"timestamp":"yesterday"}',
     ErrorCode.VALIDATION_ERROR, "timestamp 'yesterday' is not ISO 8601"),
    ("unknown type", '{"type":"shout","payload":{"a":1}}', ErrorCode.VALIDATION_ERROR,
     "unknown type 'shout'; expected one of command, error, event, message, private, "
     "response, system, telemetry"),
    ("empty payload", '{"type":"message","payload":""}', ErrorCode.VALIDATION_ERROR,
     "payload is required for a message"),
    ("no payload", '{"type":"event"}', ErrorCode.VALIDATION_ERROR,
     "payload is required for a message"),
    ("command without name", '{"type":"command","args":{}}', ErrorCode.VALIDATION_ERROR,
     "command requires a non-empty 'command' name (or payload.command in the legacy shape)"),
    ("legacy command empty", '{"type":"command","payload":{"command":""}}',
     ErrorCode.VALIDATION_ERROR,
     "command requires a non-empty 'command' name (or payload.command in the legacy shape)"),
    ("id too long", '{"id":"' + "i" * 129 + '","payload":{"a":1}}', ErrorCode.VALIDATION_ERROR,
     "id must be 1 to 128 characters"),
    ("id empty", '{"id":"","payload":{"a":1}}', ErrorCode.VALIDATION_ERROR,
     "id must be 1 to 128 characters"),
    ("several rules", '{"type":"message","version":"0.9","id":""}', ErrorCode.VALIDATION_ERROR,
     "id must be 1 to 128 characters; version must be '1.0', not '0.9'; "
     "payload is required for a message"),
    ("too deep", "[" * 65 + "]" * 65, ErrorCode.VALIDATION_ERROR,
     "JSON nests deeper than 64 levels (server.max_json_depth)"),
]


@pytest.mark.parametrize("raw, code, text", [row[1:] for row in BAD_FRAMES],
                         ids=[row[0] for row in BAD_FRAMES])
def test_bad_frames_are_refused_with_a_clear_error(raw, code, text):
    with pytest.raises(EnvelopeError) as refused:
        envelope.parse(raw, 64)
    error = refused.value
    assert error.code == code
    if isinstance(text, re.Pattern):
        assert text.fullmatch(error.message), error.message
    else:
        assert error.message == text
    assert "; ".join(error.errors) == error.message


@pytest.mark.parametrize("raw, code, text", [row[1:] for row in BAD_FRAMES],
                         ids=[row[0] for row in BAD_FRAMES])
def test_a_bad_frame_gets_its_error_and_disturbs_nobody(raw, code, text):
    bus = BusHarness()
    sender, bystander = bus.connect(), bus.connect()
    assert_error(sender.send(raw), code, text)
    bystander.assert_silent()
    assert sender.ok("ping")["pong"] is True   # still usable
    # A good message afterwards still flows: the bad one disturbed nothing.
    assert_ack(sender.send({"type": "message", "payload": {"after": True}}))
    assert bystander.next("message")["payload"] == {"after": True}


def test_the_request_id_of_a_refused_frame_is_kept_when_it_is_a_string():
    with pytest.raises(EnvelopeError) as refused:
        envelope.parse('{"id":"arq_1_9_abcdef","type":"message","payload":{},"bogus":1}', 64)
    assert refused.value.request_id == "arq_1_9_abcdef"
    with pytest.raises(EnvelopeError) as refused:
        envelope.parse('{"id":9,"type":"message","payload":{}}', 64)
    assert refused.value.request_id is None


@pytest.mark.parametrize("raw", [
    '{"payload":{"a":1}}',
    '{"id":"' + "i" * 128 + '","room":"' + "r" * 128 + '","payload":{"a":1}}',
    '{"type":"command","payload":{"command":"ping"}}',
    '{"type":"private","to_client":["arq_client_1"],"payload":{"a":1}}',
    '{"type":"response"}',
    '{"timestamp":"2025-01-01T12:00:00+02:00","version":"1.0","payload":[1]}',
    '{"payload":' + "[" * 63 + "]" * 63 + "}",      # 64 levels: the depth bound
])
def test_good_frames_at_the_bounds_are_accepted(raw):
    assert envelope.parse(raw, 64)["type"] in envelope.INBOUND_TYPES


def test_parse_fills_the_type_and_resolves_the_from_alias():
    env = envelope.parse('{"type":"message","payload":{"a":1},"from":"x"}', 64)
    assert env["from_client"] == "x" and "from" not in env
    assert envelope.parse(b'{"payload":{"a":1}}', 64)["type"] == "message"  # the default type
    both = envelope.parse('{"payload":{"a":1},"from":"x","from_client":"y"}', 64)
    assert both["from_client"] == "y"


@pytest.mark.parametrize("frame, expected", [
    ({"type": "command", "command": "ping", "args": {"x": 1}}, ("ping", {"x": 1})),
    ({"type": "command", "command": "ping"}, ("ping", {})),
    ({"type": "command", "payload": {"command": "ping", "parameters": {"x": 1}}},
     ("ping", {"x": 1})),
    ({"type": "command", "payload": {"command": "ping", "parameters": [1]}}, ("ping", {})),
    ({"type": "command", "payload": {"command": "ping"}, "args": {"y": 2}}, ("ping", {"y": 2})),
])
def test_command_name_and_args_in_either_shape(frame, expected):
    assert envelope.command_of(frame) == expected


def test_serialize_puts_the_always_keys_first_and_leaves_unset_ones_out():
    out = orjson.loads(envelope.serialize({"id": "i", "timestamp": "t", "type": "message",
                                           "room": "r", "status": None}))
    assert out == {"id": "i", "timestamp": "t", "type": "message", "version": "1.0",
                   "payload": {}, "args": {}, "metadata": {}, "room": "r"}
    assert list(out) == ["id", "timestamp", "type", "version", "payload", "args", "metadata",
                         "room"]
    full = {key: key for key in envelope.OPTIONAL}
    out = orjson.loads(envelope.serialize({"id": "i", "timestamp": "t", "type": "x",
                                           "payload": None, **full}))
    assert list(out)[7:] == list(envelope.OPTIONAL) and out["payload"] is None


def test_ids_are_unique_and_shaped():
    ids = envelope.IdGenerator()
    seen = {ids.next() for _ in range(1000)}
    assert len(seen) == 1000
    parts = next(iter(seen)).split("_")
    assert parts[0] == "arq" and len(parts) == 4 and len(parts[3]) == 6
    assert re.fullmatch(r"arq_client_[0-9a-f]{32}", envelope.client_id())


@pytest.mark.parametrize("ns", [
    1_700_000_000_000_000_000,          # whole second: no fraction, as isoformat leaves it out
    1_700_000_000_000_001_999,          # one microsecond; nanoseconds are dropped, not rounded
    1_700_000_000_999_999_999,          # the last microsecond of a second
    1_700_000_001_000_000_000,          # the next second: the cached date and time move on
    1_704_067_199_500_000_000,          # the last second of 2023
    1_704_067_200_000_250_000,          # and the first of 2024
])
def test_now_iso_matches_datetime_isoformat(monkeypatch, ns):
    clock = envelope._IsoClock()
    monkeypatch.setattr(envelope.time, "time_ns", lambda: ns - 1_000_000_000)
    clock()   # a second earlier, so the cache holds another second
    monkeypatch.setattr(envelope.time, "time_ns", lambda: ns)
    expected = (datetime(1970, 1, 1) + timedelta(microseconds=ns // 1000)).isoformat()
    assert clock() == expected


def test_iso_at_writes_an_epoch_as_now_iso_does():
    assert envelope.iso_at(1_700_000_000.5) == "2023-11-14T22:13:20.500000"
    assert envelope.iso_at(1_700_000_000) == "2023-11-14T22:13:20"
    assert datetime.fromisoformat(envelope.iso_at(0)).replace(tzinfo=timezone.utc).timestamp() \
        == 0


@pytest.mark.parametrize("value, name", [(None, "null"), (True, "a boolean"), (1, "a number"),
                                         (1.5, "a number"), ("s", "a string"), ([], "an array"),
                                         ({}, "an object")])
def test_json_type_names(value, name):
    assert envelope.json_type(value) == name
