"""The bad-input corpus (tests/corpus/) against the pure rules, in-process: the one JSON rule,
envelope validation, JSON-RPC checks, telemetry events, narrative lines and file names, and
the HTTP adapter's reading of a request head. The daemon tests (tests/test_corpus_*.py) prove
the same cases on the wire; these say which rule answers each, at any bound."""

from __future__ import annotations

from dataclasses import replace

import h11
import orjson
import pytest

from arqond import config as configuration
from arqond.core import envelope, jsonrpc, payload, telemetry
from arqond.core.access import Action, Who
from arqond.core.envelope import EnvelopeError
from arqond.core.framing import Line
from arqond.core.narrative.names import target_of
from arqond.core.narrative.schema import decode_line
from arqond.core.webhooks import Webhooks
from arqond.transports.http import HttpError, Request
from tests.corpus.bus import Refused, Routed, bus_corpus
from tests.corpus.http import BAD_HEADS, HttpCase, http_corpus
from tests.corpus.json_text import json_cases
from tests.corpus.moo import (FILE_NAMES, JSON_SYNTAX, LineCase, RpcAnswer,
                              narrative_cases, socket_cases)
from tests.corpus.oracle import depth, syntax_error
from tests.corpus.telemetry import Broadcast, Pong, telemetry_corpus
from tests.corpus.telemetry import Refused as TelemetryRefused
from tests.unit.harness import BusHarness

MAX_DEPTH = 64


@pytest.mark.parametrize("bound", (8, 64, 200))
def test_the_json_rule_gives_each_text_its_verdict_at_any_bound(bound):
    for case in json_cases(bound):
        try:
            value = payload.loads(case.text, bound)
        except payload.PayloadError as exc:
            verdict = {"INVALID_JSON": "invalid", "VALIDATION_ERROR": "deep"}[exc.code]
            if verdict == "invalid":
                assert exc.message == f"not valid JSON: {syntax_error(case.text)}", case.name
            else:
                assert exc.message == f"JSON nests deeper than {bound} levels " \
                    "(server.max_json_depth)", case.name
        else:
            verdict = "valid"
            assert depth(value) <= bound, case.name
        assert verdict == case.verdict, case.name


def test_the_json_rules_own_cases_are_what_they_say():
    """The corpus's claims about its texts, checked against the reference decoder."""
    for case in json_cases(MAX_DEPTH):
        if case.verdict == "invalid":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(case.text)
        else:
            assert depth(orjson.loads(case.text)) == case.depth or case.depth == 0, case.name


ENVELOPE_STAGE = [case for case in bus_corpus(MAX_DEPTH)
                  if isinstance(case.expect, Refused) and case.kind != "command"
                  and case.expect.code in ("INVALID_JSON", "VALIDATION_ERROR")]


@pytest.mark.parametrize("case", ENVELOPE_STAGE, ids=lambda case: case.name)
def test_envelope_rules_refuse_each_frame_with_its_exact_error_or_pass_it_to_routing(case):
    expect = case.expect
    try:
        envelope.parse(case.data, MAX_DEPTH)
    except EnvelopeError as exc:
        text = expect.text if expect.text is not None else \
            f"frame is not valid JSON: {syntax_error(case.data)}"
        assert (exc.code, exc.message, exc.request_id) == (expect.code, text, expect.request_id)
    else:  # refused later, by the routing rules (names, targets)
        assert "name" in expect.text or "private" in expect.text, case.name


@pytest.mark.parametrize("case", [case for case in bus_corpus(MAX_DEPTH)
                                  if isinstance(case.expect, Routed)],
                         ids=lambda case: case.name)
def test_every_frame_the_corpus_accepts_serializes_and_is_routed(case):
    harness = BusHarness()
    sender, sentinel = harness.connect(), harness.connect()
    sentinel.ok("join_channel", {"room": "corpus", "channel": "sentinel"})
    sentinel.take()
    assert [frame["type"] for frame in sender.send(case.data)] == ["message_response"]
    assert [frame["payload"] for frame in sentinel.take()] == [case.expect.payload]


def test_a_private_frame_whose_target_is_a_number_is_refused_as_invalid():
    harness = BusHarness()
    sender = harness.connect()
    frames = sender.send({"id": "p-1", "type": "private", "payload": {"target": 5}})
    assert [(f["error_code"], f["error"]) for f in frames] == [(
        "VALIDATION_ERROR", "a private message needs payload.target or to_client: a client "
        "id or a list of client ids")]


def test_a_webhook_header_name_ending_in_a_newline_is_refused():
    harness = BusHarness()
    settings = replace(configuration.defaults().webhooks, allow_non_admin=True,
                       allowed_destinations=("http://127.0.0.1:*",))
    harness.bus.access.rules[Action.WEBHOOK] = Who.IDENTIFIED
    harness.plug(Webhooks(settings, harness.bus.charges))
    response = harness.connect().command("op.webhook.register", {
        "url": "http://127.0.0.1:9/hook", "headers": {"X-Token\n": "abc"}})
    assert (response["status"], response["error"]) == (
        "error", "Validation error: header name 'X-Token\\n' is not a valid token or is set "
        "by arqond itself")


JSON_RPC_RULES = [case for case in socket_cases(MAX_DEPTH)
                  if case.expect.code in (jsonrpc.RpcCode.PARSE_ERROR,
                                          jsonrpc.RpcCode.INVALID_REQUEST)
                  and not case.name.startswith("a line of")]


@pytest.mark.parametrize("case", JSON_RPC_RULES, ids=lambda case: case.name)
def test_json_rpc_rules_refuse_each_line_with_its_exact_error(case):
    expect: RpcAnswer = case.expect
    try:
        obj = jsonrpc.decode(case.line, MAX_DEPTH)
        if "method" in obj:
            jsonrpc.check_request(obj)
        else:  # the socket's own words for an object that is neither request nor envelope
            return
    except jsonrpc.RpcError as exc:
        message = expect.message if expect.message is not None else \
            f"parse error: not valid JSON: {syntax_error(case.line)}"
        assert (exc.code, exc.message, exc.request_id) == (expect.code, message, expect.id)
    else:
        raise AssertionError(f"{case.name}: accepted")


@pytest.mark.parametrize("case", telemetry_corpus(MAX_DEPTH), ids=lambda case: case.name)
def test_telemetry_rules_answer_each_frame(case):
    try:
        data = telemetry.parse_inbound(case.data, MAX_DEPTH)
        if data.get("type") == "ping":
            assert isinstance(case.expect, Pong)
            return
        event = telemetry.validate_event(data, "arq_client_x")
    except UnicodeDecodeError:
        return  # not a text frame: the WebSocket library closes 1007 first
    except telemetry.TelemetryError as exc:
        assert isinstance(case.expect, TelemetryRefused), case.name
        errors = list(case.expect.errors) if case.expect.errors is not None else \
            [f"frame is not valid JSON: {syntax_error(case.data)}"]
        assert exc.errors == errors
        return
    assert isinstance(case.expect, Broadcast), case.name
    assert (event.event_type, event.payload) == (case.expect.event_type, case.expect.payload)
    # What is accepted can always be sent on: to watchers and onto the bus.
    orjson.loads(telemetry.event_frame(event))
    envelope.serialize({"id": "x", "timestamp": "t", **telemetry.bus_envelope(event)})


@pytest.mark.parametrize("case", list(narrative_cases(MAX_DEPTH)), ids=lambda case: case.name)
def test_narrative_lines_decode_to_their_payload_and_reason(case: LineCase):
    max_bytes = 4096
    line = Line(0, case.line[:max_bytes], len(case.line))
    body, malformed = decode_line(line, MAX_DEPTH)
    expected = case.malformed
    if expected == JSON_SYNTAX:
        expected += syntax_error(case.line)
    assert (body, malformed) == (case.payload, expected)


@pytest.mark.parametrize("name, target, reason", [
    pytest.param(*row, id=repr(row[0])) for row in FILE_NAMES])
def test_log_dir_names_map_to_their_target_or_their_refusal(name, target, reason):
    found = target_of(name)
    if target is not None:
        assert (found.room, found.channel) == target
    elif reason is not None:
        assert found == reason
    else:
        assert found == "not a .jsonl file"  # passed over in silence by the follower


def request_of(case: HttpCase) -> Request:
    """The request head (and body) as h11 reads it and arqond's Request takes it."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=16384)
    connection.receive_data(case.request)
    event = connection.next_event()
    assert isinstance(event, h11.Request), event
    return Request(event, b"")


@pytest.mark.parametrize("case", [case for case in http_corpus(MAX_DEPTH)
                                  if case.expect.status in (400, 505) and
                                  "malformed request:" not in (case.expect.details or "") and
                                  (case.expect.details or "").startswith(("malformed request "
                                                                          "target", "HTTP/"))],
                         ids=lambda case: case.name)
def test_requests_arqond_cannot_read_are_refused_by_request(case):
    with pytest.raises(HttpError) as refused:
        request_of(case)
    assert (refused.value.status, refused.value.details) == (case.expect.status,
                                                             case.expect.details)


@pytest.mark.parametrize("name, raw, status, details, closes",
                         [row for row in BAD_HEADS if row[3].startswith("malformed request:")],
                         ids=[row[0] for row in BAD_HEADS
                              if row[3].startswith("malformed request:")])
def test_heads_h11_refuses_carry_the_status_and_words_arqond_answers_with(name, raw, status,
                                                                          details, closes):
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=16384)
    connection.receive_data(raw)
    with pytest.raises(h11.RemoteProtocolError) as refused:
        while connection.next_event() is not h11.NEED_DATA:
            pass
    assert (refused.value.error_status_hint, f"malformed request: {refused.value}") == (
        status, details)
