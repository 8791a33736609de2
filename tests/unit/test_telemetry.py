"""I/O-free telemetry (arqond/core/telemetry.py): validation, frames, coalescing; and the
health answer built from the daemon state."""

from __future__ import annotations

import orjson
import pytest

from arqond.core import telemetry
from arqond.core.clients import Client
from arqond.transports.http import health
from tests.unit.harness import ListSink


def agent(kind: str = "ai-agent") -> Client:
    client = Client(ListSink(), "ws")
    client.type = kind
    return client


def test_valid_event_keeps_type_payload_and_source():
    event = telemetry.validate_event(
        telemetry.parse_inbound('{"eventType": "cpu", "payload": {"load": 0.5}}', 64),
        "arq_client_x")
    assert (event.event_type, event.payload, event.source) == ("cpu", {"load": 0.5},
                                                               "arq_client_x")
    frame = orjson.loads(telemetry.event_frame(event))
    assert frame["event_type"] == frame["eventType"] == "cpu"
    assert frame["payload"] == {"load": 0.5} and frame["source"] == "arq_client_x"
    env = telemetry.bus_envelope(event)
    assert (env["type"], env["room"], env["channel"]) == ("telemetry", "integriguard",
                                                          "telemetry-stream")
    assert env["payload"] == {"eventType": "cpu", "client_id": "arq_client_x",
                              "payload": {"load": 0.5}}


@pytest.mark.parametrize("frame, accepted", [
    ('{"type": "subscribe", "events": ["cpu", "disk"]}', True),
    ('{"type": "unsubscribe", "events": []}', True),
    ('{"type": "subscribe"}', True),                            # no list: all, as ArqonBus
    ('{"type": "subscribe", "events": ["cpu"], "client": "d"}', True),  # ignored, as ping's
    ('{"type": "ping"}', False),
    ('{"eventType": "cpu", "payload": {}}', False),
])
def test_arqonbus_subscriptions_are_recognised(frame, accepted):
    assert telemetry.is_subscription(telemetry.parse_inbound(frame, 64)) is accepted


@pytest.mark.parametrize("frame, complaint", [
    ('{"type": "subscribe", "events": "cpu"}',
     "subscribe: events must be an array of event type names (strings), not a string"),
    ('{"type": "unsubscribe", "events": ["cpu", 7]}',
     "unsubscribe: events must be an array of event type names (strings), not an array "
     "holding a number"),
    ('{"type": "subscribe", "events": null}',
     "subscribe: events must be an array of event type names (strings), not null"),
])
def test_a_subscription_that_names_no_events_says_so(frame, complaint):
    with pytest.raises(telemetry.TelemetryError) as caught:
        telemetry.is_subscription(telemetry.parse_inbound(frame, 64))
    assert caught.value.errors == [complaint]


@pytest.mark.parametrize("frame, complaint", [
    ('{"payload": {}}', "eventType is required"),
    ('{"eventType": "", "payload": {}}', "eventType must not be empty"),
    ('{"eventType": "  ", "payload": {}}', "eventType must not be empty"),
    ('{"eventType": 7, "payload": {}}', "eventType must be a string, not a number"),
    ('{"eventType": "' + "x" * 129 + '", "payload": {}}', "at most 128 characters"),
    ('{"eventType": "cpu"}', "payload is required"),
    ('{"eventType": "cpu", "payload": [1]}', "payload must be a JSON object, not an array"),
    ('{"eventType": "cpu", "payload": {}, "extra": 1}', "unknown key(s) 'extra'"),
    ('{"eventType": "cpu", "payload": {}, "timestamp": 5}', "timestamp must be a string"),
    ('[1, 2]', "must be a JSON object, not an array"),
    ('{"eventType": ', "not valid JSON"),
    ('{"eventType": "big", "payload": {"x": "' + "y" * 65536 + '"}}', "limited to 65536 bytes"),
    ('{"eventType": ["x"], "payload": {}}', "eventType must be a string, not an array"),
    ('{"eventType": "cpu", "payload": "high"}', "payload must be a JSON object, not a string"),
    ('{"eventType": "cpu", "payload": {}, "room": "x"}', "unknown key(s) 'room'"),
    ("not json", "not valid JSON"),
    ("42", "must be a JSON object, not a number"),
])
def test_invalid_events_say_what_is_wrong(frame, complaint):
    with pytest.raises(telemetry.TelemetryError) as caught:
        telemetry.validate_event(telemetry.parse_inbound(frame, 64), "arq_client_x")
    assert complaint in str(caught.value)
    error = orjson.loads(telemetry.error_frame(caught.value.errors))
    assert error["type"] == "error" and error["error_code"] == "VALIDATION_ERROR"
    assert complaint in error["error"]


def test_every_problem_is_listed_at_once():
    with pytest.raises(telemetry.TelemetryError) as caught:
        telemetry.validate_event({"eventType": 1, "payload": "x"}, "s")
    assert len(caught.value.errors) == 2


def test_connected_frame_matches_arqonbus():
    frame = orjson.loads(telemetry.connected_frame("127.0.0.1", 9101))
    assert frame["event_type"] == "telemetry_connected"
    assert frame["message"] == "Connected to ArqonBus telemetry"
    assert frame["server_config"] == {"host": "127.0.0.1", "port": 9101, "filtered_events": []}
    assert orjson.loads(telemetry.pong_frame())["type"] == "pong"


def test_coalescer_reports_first_message_then_one_event_per_tick():
    coalescer = telemetry.ActivityCoalescer()
    chatty, quiet = agent(), agent("bot")
    first = coalescer.observe({"id": "m1", "room": "r", "channel": "c"}, chatty)
    assert first["messages"] == 1 and first["client_id"] == chatty.id
    for n in range(2, 11):
        assert coalescer.observe({"id": f"m{n}", "room": "r", "channel": "c"}, chatty) is None
    assert coalescer.observe({"id": "q1", "room": "r", "channel": "d"}, quiet)["messages"] == 1
    reports = coalescer.tick()
    assert [(r["client_id"], r["messages"], r["last_message_id"]) for r in reports] == \
        [(chatty.id, 9, "m10")]
    assert (coalescer.events_total, coalescer.coalesced_total) == (3, 9)
    # Still inside the chatty agent's window: counted, reported at the next tick.
    assert coalescer.observe({"id": "m11", "room": "r", "channel": "c"}, chatty) is None
    assert [r["messages"] for r in coalescer.tick()] == [1]
    assert coalescer.tick() == []          # an idle interval closes every window
    assert coalescer.windows == {}
    assert coalescer.observe({"id": "m12", "room": "r", "channel": "c"}, chatty)["messages"] == 1


@pytest.mark.parametrize("kind", ["human", "dashboard", "system"])
def test_coalescer_ignores_non_agents_and_server_messages(kind):
    coalescer = telemetry.ActivityCoalescer()
    assert coalescer.observe({"id": "m"}, agent(kind)) is None
    assert coalescer.observe({"id": "m"}, None) is None
    assert coalescer.windows == {} and coalescer.events_total == 0


def test_activity_envelope_targets_dashboard_events():
    report = telemetry.ActivityCoalescer().observe({"id": "m", "room": "r", "channel": "c"},
                                                   agent())
    env = telemetry.activity_envelope(report)
    assert (env["room"], env["channel"], env["type"]) == ("integriguard", "dashboard-events",
                                                          "telemetry")
    assert env["payload"]["eventType"] == "agent_activity"


@pytest.mark.parametrize("state, code, status", [
    ("starting", 503, "starting"), ("ready", 200, "healthy"), ("stopping", 503, "stopping")])
def test_health_is_200_only_when_ready(state, code, status):
    http_status, body = health(state)
    assert http_status == code
    assert body["status"] == status and body["service"] == "arqonbus"


def test_arqonds_own_events_become_telemetry_from_arqonbus():
    fields = {"client_id": "arq_client_x"}
    event = telemetry.server_event("client_connected", fields)
    assert (event.event_type, event.payload, event.source) == ("client_connected", fields,
                                                               "arqonbus")
    assert event.payload is not fields and event.timestamp
