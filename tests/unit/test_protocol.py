"""ArqonBus frame semantics in-process (arqond/core/protocol.py): every frame type, its
targets and refusals, private, system and telemetry frames, content inspection, commands
answered later, and publish_as for surfaces without a connection."""

from __future__ import annotations

import re
from concurrent.futures import Future

import pytest

from arqond.core.casil import Casil, Policy
from arqond.core.clients import Client
from arqond.core.commands import Command, CommandError
from arqond.core.errors import ErrorCode
from tests.unit.harness import BusHarness, assert_ack, assert_error, beside_stream, local_user

NO_TARGET = ("a private message needs payload.target or to_client: a client id or a list of "
             "client ids")


@pytest.fixture
def bus():
    return BusHarness()


def still_usable(sender, bystander) -> None:
    """After a refused frame, the sender can go on and a good message flows."""
    assert sender.ok("ping")["pong"] is True
    assert_ack(sender.send({"type": "message", "payload": {"after": True}}))
    assert bystander.next("message")["payload"] == {"after": True}


# -- messages and events: the target and who gets a copy ----------------------------------------

def test_a_message_reaches_every_other_member_once_and_the_sender_only_its_ack(bus):
    a, b, c = bus.connect(), bus.connect(), bus.connect()
    frames = a.send({"type": "message", "room": "science", "channel": "general",
                     "payload": {"content": "hi"}, "sender": "forged"})
    for peer in (b, c):
        [got] = peer.take()
        assert (got["type"], got["payload"], got["sender"]) == ("message", {"content": "hi"},
                                                                a.id)
        assert (got["room"], got["channel"], got["version"]) == ("science", "general", "1.0")
    ack = assert_ack(frames, got["id"])
    assert ack["payload"] == {"content": "hi"}
    a.assert_silent()


def test_a_clients_id_and_timestamp_are_kept_and_missing_ones_filled(bus):
    a, b = bus.connect(), bus.connect()
    a.send({"type": "message", "id": "arq_1_2_abcdef", "timestamp": "2025-01-01T12:00:00Z",
            "room": "science:general", "payload": {"n": 1}})
    got = b.next("message")
    # Re-formatted as ArqonBus relays it.
    assert (got["id"], got["timestamp"]) == ("arq_1_2_abcdef", "2025-01-01T12:00:00+00:00")
    assert (got["version"], got["channel"]) == ("1.0", "general")
    a.send({"type": "event", "payload": {"n": 2}})
    got = b.next("event")
    assert (got["room"], got["channel"]) == ("science", "general")  # the current channel
    assert got["id"].startswith("arq_") and got["timestamp"]
    a.send({"payload": {"n": 3}})   # no type: a message
    assert b.next("message")["payload"] == {"n": 3}


@pytest.mark.parametrize("target", [
    {"room": "science", "channel": "explore"},
    {"room": "science:explore"},
    {"channel": "science:explore"},
    {"channel": "explore"},  # channel only: the current room
])
def test_target_forms(bus, target):
    a, b, general = bus.connect(), bus.connect(), bus.connect()
    b.ok("join_channel", {"room": "science", "channel": "explore"})
    assert_ack(a.send({"type": "message", "payload": {"x": 1}, **target}))
    got = b.next("message")
    assert (got["room"], got["channel"]) == ("science", "explore")
    general.assert_silent()


def test_a_message_without_channel_reaches_the_whole_room_once(bus):
    a, b, other = bus.connect(), bus.connect(), bus.connect()
    b.ok("join_channel", {"room": "science:explore"})
    b.ok("join_channel", {"room": "science:design"})
    other.ok("join_channel", {"room": "lab:bench"})
    other.ok("leave_channel", {"room": "science:general"})
    assert_ack(a.send({"type": "message", "room": "science", "payload": {"all": True}}))
    [got] = b.take()
    assert got["room"] == "science" and "channel" not in got
    other.assert_silent()


# Refused targets: names break the one name rule (any string ArqonBus accepts, within 1 to
# 128 characters, no control characters, no ':').
NAME_RULE = ("1 to 128 characters, no control characters, no ':' (it separates room from "
             "channel), and not '*' alone (the wildcard)")
TARGET_REFUSALS = [
    ("bad channel name", {"room": "science", "channel": "x\x07"}, ErrorCode.VALIDATION_ERROR,
     f"invalid channel name 'x\\x07': {NAME_RULE}"),
    ("bad room name", {"room": "a\x00b"}, ErrorCode.VALIDATION_ERROR,
     f"invalid room name 'a\\x00b': {NAME_RULE}"),
    ("room too long", {"room": "r" * 129}, ErrorCode.VALIDATION_ERROR,
     f"invalid room name '{'r' * 129}': {NAME_RULE}"),
]


@pytest.mark.parametrize("kind", ["message", "event"])
@pytest.mark.parametrize("target, code, text", [row[1:] for row in TARGET_REFUSALS],
                         ids=[row[0] for row in TARGET_REFUSALS])
def test_refused_targets_reach_nobody(bus, kind, target, code, text):
    sender, bystander = bus.connect(), bus.connect()
    frames = sender.send({"type": kind, "id": "arq_1_1_abcdef", "payload": {"a": 1}, **target})
    assert_error(frames, code, text, request_id="arq_1_1_abcdef")
    bystander.assert_silent()
    assert bus.bus.stats.errors_total == 1 and bus.bus.stats.messages_total == 0
    still_usable(sender, bystander)


@pytest.mark.parametrize("kind", ["message", "event"])
def test_a_channel_nobody_created_is_created_for_its_first_publisher(bus, kind):
    sender, watcher = bus.connect(), bus.connect()
    watcher.ok("join_channel", {"room": "*", "channel": "fresh"})
    assert_ack(sender.send({"type": kind, "room": "science", "channel": "fresh",
                            "payload": {"a": 1}}))
    assert watcher.next(kind)["payload"] == {"a": 1}
    channel = bus.bus.router.channel("science", "fresh")
    assert channel.created_by == sender.id and channel.owner == sender.client.principal
    assert bus.events_named("channel_created")[-1] == {
        "room": "science", "channel": "fresh", "created_by": sender.id,
        **sender.client.principal.log_fields()}


def test_a_message_to_no_room_or_a_room_that_does_not_exist_is_acked_and_goes_nowhere():
    bus = BusHarness(default_room=None, default_channel=None)
    client, bystander = bus.connect(), bus.connect()
    bystander.ok("join_channel", {"room": "*", "channel": "*"})
    for frame in ({"type": "message", "payload": {"x": 1}},
                  {"type": "message", "channel": "general", "payload": {"x": 1}},
                  {"type": "message", "room": "atlantis", "payload": {"x": 1}}):
        assert_ack(client.send(frame))
    bystander.assert_silent()
    assert client.client.subscriptions == set()
    assert bus.bus.stats.unrouted_total == 3 and bus.bus.stats.messages_total == 0


def test_an_intercepted_target_is_served_before_it_has_a_channel(bus):
    taken = []
    bus.bus.plug(intercepts={("moo", "broadcast"): lambda client, env: taken.append(
        (client.id, env["payload"]))})
    # Room moo is the MOO group's: a member publishes there.
    sender, bystander = bus.connect(principal=local_user(member=True)), bus.connect()
    bystander.ok("join_channel", {"room": "moo:*"})
    ack = assert_ack(sender.send({"type": "message", "room": "moo:broadcast",
                                  "payload": {"to": "all"}}))
    assert ack["payload"] == {"to": "all"}
    assert taken == [(sender.id, {"to": "all"})]
    bystander.assert_silent()   # what the intercept does with it is the intercept's business
    assert bus.bus.router.channel("moo", "broadcast") is None


def test_observers_see_routed_client_messages_with_their_sender(bus):
    seen = []
    bus.bus.plug(on_message=lambda env, client: seen.append((env["payload"], client)))
    sender = bus.connect()
    sender.send({"type": "message", "payload": {"n": 1}})
    assert seen == [({"n": 1}, sender.client)]


# -- private ---------------------------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    lambda b: {"type": "private", "payload": {"target": b, "text": "psst"}},
    lambda b: {"type": "private", "payload": {"target": [b], "text": "psst"}},
    lambda b: {"type": "private", "to_client": b, "payload": {"text": "psst"}},
    lambda b: {"type": "message", "room": "science", "channel": "pm", "to_client": [b],
               "payload": {"text": "psst"}},
    lambda b: {"type": "message", "room": "atlantis:pm", "to_client": [b],
               "payload": {"text": "psst"}},
], ids=["target", "target list", "to_client", "pm channel", "pm channel of any room"])
def test_a_private_message_reaches_only_its_targets(bus, frame):
    a, b, c = bus.connect(), bus.connect(), bus.connect()
    sent = frame(b.id)
    assert_ack(a.send(sent))
    got = b.next("private")
    assert got["payload"] == sent["payload"] and got["sender"] == a.id
    c.assert_silent()
    b.assert_silent()


def test_a_private_message_to_oneself_is_acked_and_not_echoed(bus):
    a = bus.connect()
    assert_ack(a.send({"type": "private", "payload": {"target": a.id}}))
    a.assert_silent()


@pytest.mark.parametrize("payload, code, text", [
    ({"a": 1}, ErrorCode.VALIDATION_ERROR, NO_TARGET),
    ({"target": []}, ErrorCode.VALIDATION_ERROR, NO_TARGET),
    ({"target": [5]}, ErrorCode.VALIDATION_ERROR, NO_TARGET),
    ("text", ErrorCode.VALIDATION_ERROR, NO_TARGET),
    ({"target": "arq_client_" + "0" * 32}, ErrorCode.TARGET_NOT_FOUND,
     "no connected client with id arq_client_" + "0" * 32),
])
def test_private_refusals_deliver_to_nobody(bus, payload, code, text):
    a, b = bus.connect(), bus.connect()
    if isinstance(payload, dict) and payload.get("target") == "arq_client_" + "0" * 32:
        payload = {"target": [b.id, payload["target"]]}   # one known, one not: nobody gets it
    assert_error(a.send({"type": "private", "payload": payload}), code, text)
    b.assert_silent()
    still_usable(a, b)


# -- system and telemetry --------------------------------------------------------------------

def test_system_messages_only_from_admins_and_to_everyone_without_a_room(bus):
    admin, user, lab = bus.admin(), bus.connect(), bus.connect()
    lab.ok("leave_channel", {"room": "science:general"})
    assert_error(user.send({"type": "system", "payload": {"text": "fake"}}),
                 ErrorCode.AUTHORIZATION_ERROR,
                 "only arqond itself and admin clients may send system messages")
    lab.assert_silent()
    assert_ack(admin.send({"type": "system", "payload": {"text": "maintenance"}}))
    for peer in (user, lab):   # no room: every client, joined or not
        assert peer.next("system")["payload"] == {"text": "maintenance"}
    admin.assert_silent()


def test_a_system_message_with_a_target_goes_to_its_members(bus):
    admin, member, lab = bus.admin(), bus.connect(), bus.connect()
    lab.ok("join_channel", {"room": "lab:bench"})
    lab.ok("leave_channel", {"room": "science:general"})
    assert_ack(admin.send({"type": "system", "room": "science:general", "payload": {"x": 1}}))
    assert member.next("system")["room"] == "science"
    lab.assert_silent()
    assert [e["payload"] for e in bus.bus.router.history("science", "general")] == [{"x": 1}]


def test_telemetry_frames_default_to_integriguard_and_get_no_ack(bus):
    sender, watcher = bus.connect(), bus.connect()
    assert sender.send({"type": "telemetry", "payload": {"eventType": "x"}}) == []
    watcher.ok("join_channel", {"room": "integriguard:telemetry-stream"})
    assert sender.send({"type": "telemetry", "payload": {"eventType": "y"}}) == []
    got = watcher.next("telemetry")
    assert (got["room"], got["channel"], got["payload"]) == \
        ("integriguard", "telemetry-stream", {"eventType": "y"})
    assert sender.send({"type": "telemetry", "room": "science:general",
                        "payload": {"eventType": "z"}}) == []
    got = watcher.next("telemetry")   # a named target: its members, not integriguard's
    assert (got["room"], got["channel"]) == ("science", "general")
    watcher.assert_silent()
    # A channel nobody created: created, as for any publisher.
    assert sender.send({"type": "telemetry", "room": "atlantis:x", "payload": {}}) == []
    assert bus.bus.router.channel("atlantis", "x") is not None


@pytest.mark.parametrize("kind", ["response", "error"])
def test_response_and_error_frames_from_clients_are_ignored(bus, kind):
    a, b = bus.connect(), bus.connect()
    assert a.send({"type": kind, "payload": {"x": 1}}) == []
    b.assert_silent()


# -- commands: two frames, now or later --------------------------------------------------------

def test_both_command_shapes_get_a_response_then_the_ack(bus):
    client = bus.connect()
    response, ack = client.send({"type": "command", "id": "arq_1_1_abcdef", "command": "ping",
                                 "args": {}})
    assert (response["request_id"], response["status"], response["command"]) == \
        ("arq_1_1_abcdef", "success", "ping")
    assert (ack["id"], ack["command"], ack["payload"]) == ("arq_1_1_abcdef", "ping",
                                                           {"result": "ok"})
    response, ack = client.send({"type": "command", "id": "arq_1_2_abcdef",
                                 "payload": {"command": "ping", "parameters": {}}})
    assert response["request_id"] == "arq_1_2_abcdef" and response["status"] == "success"
    assert ack["command"] == "ping"   # the legacy shape: taken from payload.command
    response, ack = client.send({"type": "command", "command": "ping",
                                 "payload": {"command": "other"}})
    assert (response["command"], ack["command"]) == ("ping", "other")


def later(bus: BusHarness) -> Future:
    """A command whose answer comes later: the Future it returned."""
    pending: Future = Future()
    bus.bus.plug(commands={"later": Command(lambda ctx: pending, False, "")})
    return pending


@pytest.mark.parametrize("outcome, status, code, text", [
    (lambda f: f.set_result(("done", {"k": 1})), "success", None, None),
    (lambda f: f.set_exception(CommandError(ErrorCode.NOT_FOUND, "no such thing")), "error",
     ErrorCode.NOT_FOUND, "no such thing"),
    (lambda f: f.set_exception(RuntimeError("boom")), "error", ErrorCode.EXECUTION_ERROR,
     "Execution error: boom"),
    (lambda f: f.cancel(), "error", ErrorCode.EXECUTION_ERROR, "cancelled"),
], ids=["result", "command error", "other exception", "cancelled"])
def test_a_command_answered_later_gets_both_frames_then(bus, outcome, status, code, text):
    pending = later(bus)
    client = bus.connect()
    assert client.send({"type": "command", "id": "arq_1_1_abcdef", "command": "later"}) == []
    outcome(pending)
    response, ack = client.take()
    assert (response["status"], response["request_id"], ack["id"]) == \
        (status, "arq_1_1_abcdef", "arq_1_1_abcdef")
    if code is None:
        assert response["payload"] == {"message": "done", "data": {"k": 1}}
    else:
        assert (response["error_code"], response["error"]) == (code, text)
        assert bus.bus.stats.errors_total == 1


def test_a_late_answer_to_a_client_that_left_is_dropped(bus):
    pending = later(bus)
    client = bus.connect()
    client.send({"type": "command", "command": "later"})
    bus.bus.detach(client.client)
    pending.set_result(("done", {}))
    client.assert_silent()


# -- inspection (CASIL) ------------------------------------------------------------------------

def casil(bus: BusHarness, **policy) -> Casil:
    return bus.plug(Casil(bus.bus, Policy(enabled=True, **policy)))


def test_a_blocked_message_is_refused_at_its_resolved_target_and_reaches_nobody(bus):
    casil(bus, mode="enforce", block_on_probable_secret=True)
    sender, receiver = bus.connect(), bus.connect()
    [error] = sender.send({"type": "message", "id": "arq_1_9_abcdef",
                           "payload": {"password": "x"}})
    assert error == {**error, "type": "error", "error": "CASIL blocked message",
                     "error_code": "CASIL_POLICY_BLOCKED_SECRET", "request_id": "arq_1_9_abcdef",
                     "payload": {"reason": "CASIL_POLICY_BLOCKED_SECRET"},
                     "room": "science", "channel": "general"}
    receiver.assert_silent()
    assert bus.bus.router.history("science", "general") == []
    assert [event for event, _ in bus.events][-2:] == ["casil_decision", "policy_refusal"]
    assert (bus.bus.stats.policy_blocks_total, bus.bus.stats.errors_total) == (1, 1)


def test_a_blocked_command_is_refused_before_it_runs(bus):
    casil(bus, mode="enforce", block_on_probable_secret=True)
    client = bus.admin()
    [error] = client.send({"type": "command", "command": "create_channel",
                           "room": "science", "args": {"room": "ops:x", "token": "t"}})
    assert error["error_code"] == "CASIL_POLICY_BLOCKED_SECRET"
    assert bus.bus.router.channel("ops", "x") is None


def test_redaction_reaches_receivers_the_ack_and_history_and_metadata_says_why(bus):
    casil(bus, transport_redaction=True, metadata_to_envelope=True,
          redaction_paths=("password", "user.pin"),
          redaction_patterns=(r"\d{4}-\d{4}-\d{4}-\d{4}",))
    sender, receiver = bus.connect(), bus.connect()
    payload = {"password": "hunter2", "user": {"pin": 1234, "name": "ann"},
               "note": "card 1111-2222-3333-4444 \"quoted\""}
    redacted = {"password": "***REDACTED***", "user": {"pin": "***REDACTED***", "name": "ann"},
                "note": "card ***REDACTED*** \"quoted\""}
    ack = assert_ack(sender.send({"type": "message", "payload": payload,
                                  "metadata": {"sequence": 1}}))
    routed = receiver.next("message")
    assert routed["payload"] == ack["payload"] == redacted
    assert routed["metadata"]["sequence"] == 1
    assert routed["metadata"]["casil"] == {
        "kind": "data", "risk_level": "high", "flags": {"contains_probable_secret": True},
        "reason_code": "CASIL_POLICY_REDACTED", "decision": "ALLOW_WITH_REDACTION"}
    assert "casil" not in ack["metadata"]
    history = sender.ok("history", {"room": "science:general"})
    assert history["history"][0]["payload"] == redacted


def test_an_allowed_frame_is_routed_as_it_came(bus):
    inspector = casil(bus)
    sender, receiver = bus.connect(), bus.connect()
    assert_ack(sender.send({"type": "message", "payload": {"n": 1}, "metadata": {"m": 1}}))
    got = receiver.next("message")
    assert (got["payload"], beside_stream(got["metadata"])) == ({"n": 1}, {"m": 1})
    assert inspector.inspected_total == 1
    assert bus.events_named("casil_decision")[0]["decision"] == "ALLOW"


def test_out_of_scope_or_disabled_inspection_leaves_frames_alone(bus):
    inspector = casil(bus, mode="enforce", block_on_probable_secret=True,
                      scope_include=("secure-*",))
    sender, receiver = bus.connect(), bus.connect()
    assert_ack(sender.send({"type": "message", "payload": {"password": "x"}}))
    assert receiver.next("message")["payload"] == {"password": "x"}
    receiver.ok("join_channel", {"room": "secure-lab", "channel": "g"})
    [error] = sender.send({"type": "message", "room": "secure-lab:g",
                           "payload": {"password": "x"}})
    assert error["error_code"] == "CASIL_POLICY_BLOCKED_SECRET"   # in scope: blocked
    receiver.assert_silent()
    inspector.set_policy(Policy(enabled=False, mode="enforce", block_on_probable_secret=True))
    assert_ack(sender.send({"type": "message", "payload": {"password": "y"}}))
    assert bus.bus.screen({"id": "x", "type": "message", "room": "science",
                           "channel": "general", "payload": {}}, sender.id) is None
    assert inspector.inspected_total == 1   # the secure-lab one alone


# -- frames that are not frames -------------------------------------------------------------

def test_an_unparseable_frame_is_answered_with_the_envelope_error(bus):
    client = bus.connect()
    assert_error(client.send('{"id":"arq_1_9_abcdef","type":"message","payload":{},"bogus":1}'),
                 ErrorCode.VALIDATION_ERROR, "unknown top-level key(s): 'bogus'",
                 request_id="arq_1_9_abcdef")
    assert_error(client.send(b"\x00"), ErrorCode.INVALID_JSON,
                 re.compile(r"frame is not valid JSON: .*"), request_id=None)


def test_reject_answers_what_a_transport_could_not_hand_over(bus):
    client = bus.connect()
    bus.bus.reject(client.client, ErrorCode.UNSUPPORTED_FRAME, "binary frames are not accepted")
    assert_error(client.take(), ErrorCode.UNSUPPORTED_FRAME, "binary frames are not accepted")


# -- publish_as: a sender that is not a connection --------------------------------------------

def test_publish_as_routes_under_the_same_rules_and_hands_over_the_reply(bus):
    listener = bus.connect()
    poster = Client(None, "http")
    replies: list[dict] = []
    bus.bus.publish_as(poster, {"type": "message", "room": "science:general",
                                "payload": {"from": "http"}}, replies.append)
    [ack] = replies
    assert ack["type"] == "message_response" and ack["payload"] == {"from": "http"}
    got = listener.next("message")
    assert (got["id"], got["sender"]) == (ack["id"], poster.id)
    assert ack["metadata"] == {"seq": got["metadata"]["seq"], "epoch": got["metadata"]["epoch"],
                               "stored": False}     # no store here: memory only
    bus.bus.publish_as(poster, {"type": "event", "room": "science:bad\x07",
                                "payload": {"x": 1}}, replies.append)
    refused = replies[-1]
    assert (refused["type"], refused["error_code"]) == ("error", ErrorCode.VALIDATION_ERROR)
    assert refused["error"].startswith("invalid channel name 'bad\\x07': 1 to 128")
    assert bus.bus.stats.connections_total == 1   # the listener; the poster never was one
    listener.assert_silent()


def test_publish_as_takes_only_messages_and_events(bus):
    with pytest.raises(ValueError, match="publish_as routes messages and events, not 'command'"):
        bus.bus.publish_as(Client(None, "http"), {"type": "command", "command": "ping"},
                           print)
