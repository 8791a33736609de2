"""The I/O-free narrative pieces as tables: file names, the line schema and envelopes, ids,
query tracking, and the seed's moo-tail format."""

from __future__ import annotations

import re

import orjson
import pytest

from arqond.cli.narrative import format_moo_line, hook_line
from arqond.core.envelope import MAX_ID_LENGTH
from arqond.core.framing import Line
from arqond.core.narrative import ids, names, schema
from arqond.core.narrative.names import Target
from arqond.core.narrative.queries import QueryTracker

ID_RE = re.compile(r"^arq_\d+_\d+_[0-9a-f]{6}$")
GOOD = b'{"ts":"2026-02-12T10:00:00Z","from":"dreader","type":"narrative","content":"hi"}'
DEPTH = 64  # server.max_json_depth's default
DEEP_LINE = (b'{"ts":"2026-02-12T10:00:00Z","from":"dreader","type":"narrative","content":'
             + b'{"a":' * 300 + b'1' + b'}' * 300 + b'}')


@pytest.mark.parametrize("filename, expected", [
    ("dreader-narrative.jsonl", Target("dreader", "narrative", "dreader")),
    ("dreader-events.jsonl", Target("dreader", "events", "dreader")),
    ("gamma-watch-narrative.jsonl", Target("gamma-watch", "narrative", "gamma-watch")),
    ("dreader-queries.jsonl", Target("dreader", "queries", "dreader")),
    ("presence.jsonl", Target("moo", "presence", None)),
    ("broadcast.jsonl", Target("moo", "broadcast", None)),
    ("events.jsonl", Target("moo", "events", None)),
])
def test_file_names_map_to_room_channel(filename, expected):
    assert names.target_of(filename) == expected


@pytest.mark.parametrize("filename, registers, takes_requests", [
    ("dreader-narrative.jsonl", True, False), ("dreader-queries.jsonl", False, True),
    ("dreader-events.jsonl", False, False), ("narrative.jsonl", False, False),
    ("queries.jsonl", False, False)])
def test_what_a_file_means_for_its_zgent(filename, registers, takes_requests):
    target = names.target_of(filename)
    assert (target.registers, target.takes_requests) == (registers, takes_requests)


@pytest.mark.parametrize("filename, reason", [
    ("dreader-narrative.jsonl.1", "not a .jsonl file"),
    (".hidden-narrative.jsonl", "not a .jsonl file"),
    ("DReader-narrative.jsonl", "not a valid Zgent name"),
    ("-narrative.jsonl", "not a valid Zgent name"),
    # THE Zgent-name rule (core/zgents.py): a file is never published for a Zgent that
    # could not be registered.
    ("a..b-narrative.jsonl", "'a..b' is not a valid Zgent name (invalid Zgent name 'a..b': "
     "1 to 63 of a-z 0-9 . _ -, starting with a letter or digit, without '..')"),
    (("x" * 64) + "-narrative.jsonl", "is not a valid Zgent name"),
    ("dreader-.jsonl", "not a valid channel name"),
    ("sp ace.jsonl", "not a valid channel name"),
])
def test_bad_file_names_are_refused_with_a_reason(filename, reason):
    refused = names.target_of(filename)
    assert isinstance(refused, str) and reason in refused


def test_fingerprint_covers_the_first_line_and_waits_for_it():
    assert ids.fingerprint(b'{"partial"') is None
    first = ids.fingerprint(b"line one\n")
    assert first == ids.fingerprint(b"line one\nline two\n")  # grows, stays the same
    assert first != ids.fingerprint(b"line 1!!\n")
    long_line = b"x" * (ids.FINGERPRINT_BYTES + 10)
    assert ids.fingerprint(long_line) == ids.fingerprint(long_line + b"yz\n")


def test_message_ids_are_deterministic_and_shaped_like_arqonbus_ids():
    key = ids.identity_key(2049, 1234, "abcdef0123456789", 0)
    first = ids.message_id(key, 0)
    assert first == ids.message_id(key, 0)
    assert ID_RE.match(first) and len(first) <= MAX_ID_LENGTH
    others = {ids.message_id(key, 81), ids.message_id(key + "x", 0),
              ids.message_id(ids.identity_key(2049, 1234, "abcdef0123456789", 1),
                                   0)}
    assert first not in others and len(others) == 3
    # Pinned: checkpoints written by one version are read by the next, and a line published
    # again after an upgrade must keep its id.
    assert ids.message_id("1:2:abc:0", 77) == "arq_9283694654893908951_77_a1cf06"


@pytest.mark.parametrize("obj, problem", [
    ({"from": "d", "type": "narrative", "content": "x"}, "ts missing"),
    ({"ts": "yesterday", "from": "d", "type": "narrative", "content": "x"}, "not ISO 8601"),
    ({"ts": "2026-02-12T10:00:00Z", "type": "narrative", "content": "x"}, "from missing"),
    ({"ts": "2026-02-12T10:00:00Z", "from": "", "type": "n", "content": "x"}, "from must be"),
    ({"ts": "2026-02-12T10:00:00Z", "from": "d", "content": "x"}, "type missing"),
    ({"ts": "2026-02-12T10:00:00Z", "from": "d", "type": "n"}, "content missing"),
    ({"ts": "2026-02-12T10:00:00Z", "from": "d", "type": "n", "content": 5}, "content must"),
    ({"ts": "2026-02-12T10:00:00Z", "from": "d", "type": "n", "content": "x", "tags": "spx"},
     "tags must be an array of strings"),
    ({"ts": "2026-02-12T10:00:00Z", "from": "d", "type": "n", "content": "x", "ttl": -1},
     "ttl must be"),
    ({"ts": "2026-02-12T10:00:00Z", "from": "d", "type": "n", "content": "x", "queryId": 1},
     "queryId must be a string"),
    ({"ts": "2026-02-12T10:00:00Z", "from": "d", "type": "n", "content": "x",
      "correlationId": ["a"]}, "correlationId must be a string"),
])
def test_schema_problems_are_named(obj, problem):
    found = schema.schema_problem(obj)
    assert found is not None and problem in found


def test_schema_accepts_the_seed_examples():
    for obj in ({"ts": "2026-02-12T10:00:00Z", "from": "dreader", "type": "narrative",
                 "content": "SPX volume spike detected at 5835", "tags": ["spx", "volume"]},
                {"ts": "2026-02-12T10:00:01Z", "from": "dreader", "type": "query-response",
                 "queryId": "q-123", "content": {"symbol": "SPX", "volume": 125000}},
                {"ts": "2026-02-12T10:00:05Z", "from": "dreader", "type": "status",
                 "content": "healthy", "uptime": 3600, "ttl": 30}):
        assert schema.schema_problem(obj) is None


def test_envelope_of_a_good_line():
    target = Target("dreader", "narrative", "dreader")
    env = schema.envelope(target, "/var/log/moo/dreader-narrative.jsonl", "k",
                             Line(7, GOOD, len(GOOD)), DEPTH)
    assert env == {"id": ids.message_id("k", 7), "type": "event", "room": "dreader",
                   "channel": "narrative", "sender": "dreader",
                   "payload": {"ts": "2026-02-12T10:00:00Z", "from": "dreader",
                               "type": "narrative", "content": "hi"},
                   "metadata": {"source": {"path": "/var/log/moo/dreader-narrative.jsonl",
                                           "offset": 7}}}


@pytest.mark.parametrize("data, length, reason", [
    (b"not json", 8, "not valid JSON"),
    (b"[1, 2]", 6, "not a JSON object"),
    (b"   ", 3, "empty line"),
    (b'{"ts":"2026-02-12T10:00:00Z"}', 29, "breaks the message schema: from missing"),
    (b'{"a":1', 5000, "longer than max_line_bytes"),
    (b'\xff\xfe{"x":1}', 9, "not valid JSON"),
    # Valid JSON and schema, but deeper than anything arqond could send on.
    (DEEP_LINE, len(DEEP_LINE), "JSON nests deeper than 64 levels (server.max_json_depth)"),
])
def test_malformed_lines_become_raw_with_a_reason(data, length, reason):
    target = Target("moo", "presence", None)
    env = schema.envelope(target, "/l/presence.jsonl", "k", Line(0, data, length), DEPTH)
    assert env["payload"] == {"raw": data.decode("utf-8", "replace")}
    assert reason in env["metadata"]["malformed"]
    assert env["sender"] == "moo"  # no trusted "from" in a malformed line


def test_query_files_accept_json_rpc_requests():
    request = b'{"id":"q-1","method":"query","params":{},"replyTo":"parseclipmate"}'
    target = Target("dreader", "queries", "dreader")
    env = schema.envelope(target, "/l/q", "k", Line(0, request, len(request)), DEPTH,
                             requests=True)
    assert "malformed" not in env["metadata"] and env["payload"]["method"] == "query"
    env = schema.envelope(target, "/l/q", "k", Line(0, request, len(request)), DEPTH)
    assert "malformed" in env["metadata"]  # a narrative file wants the message schema


def test_query_tracker_routes_responses_to_the_requester_once():
    tracker = QueryTracker(limit=2)
    tracker.note_request("dreader", {"id": "q-1", "method": "query", "replyTo": "pcm"})
    tracker.note_request("dreader", {"queryId": "q-2", "from": "other", "type": "query",
                                     "ts": "x", "content": "?"})
    response = {"type": "query-response", "queryId": "q-1", "from": "dreader"}
    assert tracker.take_response("gamma", response) is None  # another Zgent's narrative
    assert tracker.take_response("dreader", {**response, "type": "narrative"}) is None
    assert tracker.take_response("dreader", response) == "pcm"
    assert tracker.take_response("dreader", response) is None  # answered already
    tracker.note_request("dreader", {"id": 3, "method": "q", "replyTo": "a"})
    tracker.note_request("dreader", {"id": 4, "method": "q", "replyTo": "b"})
    assert tracker.evicted == 1 and ("dreader", "q-2") not in tracker.open
    assert tracker.take_response("dreader", {"type": "query-response", "queryId": "3"}) == "a"


def test_moo_tail_format_matches_the_seed():
    env = {"timestamp": "2026-11-20T23:00:00", "payload": {
        "ts": "2026-02-12T14:30:01Z", "from": "dreader", "type": "narrative",
        "content": "SPX volume spike detected at 5835"}}
    assert format_moo_line(env) == "[14:30:01] SPX volume spike detected at 5835"
    env["payload"]["content"] = {"symbol": "SPX", "volume": 125000}
    assert format_moo_line(env) == '[14:30:01] {"symbol":"SPX","volume":125000}'
    assert format_moo_line({"timestamp": "2026-11-20T23:00:09.5", "payload": {"raw": "oops"}}) \
        == "[23:00:09] oops"


def test_hook_lines_are_valid_messages_whatever_the_values():
    line = hook_line("dreader", "window-created",
                     {"session": "dreader", "window_name": 'it\'s "q" $(x) \\ \n'})
    obj = orjson.loads(line)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert obj["window_name"] == 'it\'s "q" $(x) \\ \n'
    assert schema.schema_problem(obj) is None and obj["from"] == "dreader"
