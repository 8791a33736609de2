"""CASIL without sockets: policy validation, scope, detectors, redaction, decisions, Bus hook."""

from __future__ import annotations

import pytest

from arqond import config as configuration
from arqond.core.bus import Bus
from arqond.core.casil import MAX_DEPTH, REDACTED, Casil, Policy, PolicyError, redact
from arqond.core.errors import ErrorCode
from tests.unit.harness import BusHarness, ListSink, assert_refused


def inspect(policy: Policy, payload, *, room="science", channel="general", kind="message"):
    bus = Bus()
    casil = Casil(bus, policy)
    env = {"id": "arq_1_1_abcdef", "type": kind, "room": room, "channel": channel,
           "payload": payload}
    return casil.inspect(env, "arq_client_x"), casil


@pytest.mark.parametrize("changes, needle", [
    ({"mode": "audit"}, "mode: must be one of monitor, enforce"),
    ({"default_decision": "maybe"}, "default_decision"),
    ({"max_patterns": 0}, "max_patterns: must be greater than 0"),
    ({"max_payload_bytes": -1}, "max_payload_bytes"),
    ({"redaction_patterns": ["(unclosed"]}, "not a valid regular expression"),
    ({"redaction_patterns": ["a", "b"], "max_patterns": 1}, "more than max_patterns (1)"),
    ({"scope_include": [""]}, "scope_include: entries must not be empty"),
    ({"enabled": "perhaps"}, "enabled: must be a boolean"),
    ({"max_inspect_bytes": "lots"}, "max_inspect_bytes: must be an integer"),
    ({"redaction_paths": {"a": 1}}, "must be a string or a list"),
    ({"colour": "red"}, "colour: unknown CASIL key"),
])
def test_bad_policy_changes_name_the_key(changes, needle):
    with pytest.raises(PolicyError) as raised:
        Policy().with_changes(changes)
    assert needle in str(raised.value)


def test_loose_values_as_arqonbus_accepts_them():
    policy = Policy().with_changes({"enabled": "on", "mode": "ENFORCE", "max_patterns": "4",
                                    "scope_include": "secure-*", "redaction_paths": ["pin", 7]})
    assert policy.enabled is True and policy.mode == "enforce" and policy.max_patterns == 4
    assert policy.scope_include == ("secure-*",) and policy.redaction_paths == ("pin", "7")
    assert list(policy.snapshot()) == [
        "enabled", "mode", "default_decision", "scope_include", "scope_exclude",
        "max_payload_bytes", "max_inspect_bytes", "max_patterns", "block_on_probable_secret",
        "redaction_paths", "redaction_patterns", "transport_redaction", "never_log_payload_for",
        "metadata_to_logs", "metadata_to_telemetry", "metadata_to_envelope"]


def test_config_section_builds_the_same_policy():
    loaded = configuration.load("/dev/null", environ={
        "ARQONBUS_CASIL_ENABLED": "true", "ARQONBUS_CASIL_SCOPE_EXCLUDE": "a:*, b",
        "ARQONBUS_CASIL_REDACTION_PATTERNS": "malware"})
    policy = configuration.casil_policy(loaded.values)
    assert policy == Policy(enabled=True, scope_exclude=("a:*", "b"),
                            redaction_patterns=("malware",))
    with pytest.raises(configuration.ConfigError, match="casil.max_patterns: must be greater"):
        configuration.load("/dev/null", environ={"ARQONBUS_CASIL_MAX_PATTERNS": "0"})


@pytest.mark.parametrize("include, exclude, room, channel, inspected", [
    ((), (), "science", "general", True),
    (("secure-*",), (), "secure-x", "g", True),
    (("secure-*",), (), "science", "general", False),
    (("secure-chat",), (), "secure-chat", "g", True),     # a room pattern covers its channels
    (("secure-chat:g",), (), "secure-chat", "h", False),
    (("*",), ("science:*",), "science", "general", False),  # exclude wins
    ((), (), None, None, False),                             # no target: out of scope
])
def test_scope(include, exclude, room, channel, inspected):
    policy = Policy(enabled=True, scope_include=include, scope_exclude=exclude)
    verdict, _ = inspect(policy, {"a": 1}, room=room, channel=channel)
    assert (verdict is not None) is inspected


def test_default_detectors_flag_secrets_and_key_names():
    policy = Policy(enabled=True, redaction_paths=())
    assert inspect(policy, {"text": "nothing to see"})[0].flags == {}
    for payload in ({"text": "my api_key is x"}, {"password": 1},
                    {"auth": "Bearer abcdefgh12345"}, {"k": "sk_live_abcdefgh1234"}):
        verdict, _ = inspect(policy, payload)
        assert verdict.flags == {"contains_probable_secret": True}
        assert verdict.risk_level == "high"
        assert verdict.decision == "ALLOW"  # monitor without block: reported only


def test_configured_patterns_replace_the_default_detectors():
    policy = Policy(enabled=True, mode="enforce", block_on_probable_secret=True,
                    redaction_patterns=("malware",), redaction_paths=())
    assert inspect(policy, {"content": "my password"})[0].decision == "ALLOW"
    verdict, casil = inspect(policy, {"content": "ship the malware"})
    assert (verdict.decision, verdict.reason) == ("BLOCK", "CASIL_POLICY_BLOCKED_SECRET")
    assert casil.blocked_total == 1
    refusal = dict(verdict.events)["policy_refusal"]
    assert refusal["reason"] == "CASIL_POLICY_BLOCKED_SECRET"
    # Where, by which pattern; none of the payload, redacted or not.
    assert (refusal["findings"], refusal["payload"]) == ("malware at $.content", None)


def test_monitor_keeps_the_reason_and_delivers():
    policy = Policy(enabled=True, block_on_probable_secret=True, redaction_patterns=("token",))
    verdict, _ = inspect(policy, {"content": "token-value-123"})
    assert (verdict.decision, verdict.reason) == ("ALLOW_WITH_REDACTION",
                                                  "CASIL_POLICY_BLOCKED_SECRET")
    assert not verdict.blocked and not verdict.replace_payload  # no transport_redaction


def test_oversize_blocks_in_enforce_only_and_zero_disables():
    payload = {"blob": "x" * 100}
    assert inspect(Policy(enabled=True, max_payload_bytes=50), payload)[0].decision == "ALLOW"
    verdict, _ = inspect(Policy(enabled=True, mode="enforce", max_payload_bytes=50), payload)
    assert (verdict.decision, verdict.reason, verdict.flags) == (
        "BLOCK", "CASIL_POLICY_OVERSIZE", {"oversize_payload": True})
    assert inspect(Policy(enabled=True, mode="enforce", max_payload_bytes=0),
                   payload)[0].decision == "ALLOW"


@pytest.mark.parametrize("payload, flags, risk", [
    ({"n": 1}, {}, "low"),
    ({"blob": "x" * 100}, {"oversize_payload": True}, "medium"),
    ({"note": "my password"}, {"contains_probable_secret": True}, "high"),
    ({"note": "my password", "blob": "x" * 100},
     {"contains_probable_secret": True, "oversize_payload": True}, "high"),
])
def test_flags_are_arqonbus_s_object_with_only_the_true_keys(payload, flags, risk):
    policy = Policy(enabled=True, max_payload_bytes=64, metadata_to_envelope=True,
                    redaction_paths=())
    verdict, _ = inspect(policy, payload)
    assert verdict.metadata["flags"] == flags and verdict.metadata["risk_level"] == risk
    assert dict(verdict.events)["casil_decision"]["flags"] == flags


def test_redaction_keeps_json_valid_and_shares_untouched_branches():
    policy = Policy(redaction_paths=("password", "user.pin"), redaction_patterns=(r"\d{4}-\d{4}",))
    untouched = {"deep": [1, 2, {"x": "y"}]}
    payload = {"Password": "hunter2", "user": {"pin": 1234, "name": "card 1111-2222 ok"},
               "pin": 9, "list": [{"password": "p"}], "keep": untouched}
    out, changed = redact(payload, policy)
    assert changed
    assert out == {"Password": REDACTED, "user": {"pin": REDACTED, "name": f"card {REDACTED} ok"},
                   "pin": 9, "list": [{"password": REDACTED}], "keep": untouched}
    assert out["keep"] is untouched and payload["Password"] == "hunter2"  # original intact
    assert redact({"a": "b"}, policy) == ({"a": "b"}, False)


def test_transport_redaction_replaces_payload_and_never_log_hides_it():
    policy = Policy(enabled=True, transport_redaction=True, metadata_to_envelope=True,
                    never_log_payload_for=("science:*",))
    verdict, _ = inspect(policy, {"token": "abc", "n": 1})
    assert verdict.decision == "ALLOW_WITH_REDACTION" and verdict.replace_payload
    assert verdict.payload == {"token": REDACTED, "n": 1}  # still an object, never a bare string
    assert verdict.metadata == {"kind": "data", "risk_level": "high",
                                "flags": {"contains_probable_secret": True},
                                "reason_code": "CASIL_POLICY_REDACTED",
                                "decision": "ALLOW_WITH_REDACTION"}
    decision = dict(verdict.events)["casil_decision"]
    assert decision["payload"] is None and decision["message_id"] == "arq_1_1_abcdef"


def test_commands_are_inspected_only_with_a_target_and_never_rewritten():
    policy = Policy(enabled=True, transport_redaction=True)
    verdict, _ = inspect(policy, {}, room=None, channel=None, kind="command")
    assert verdict is None
    bus = Bus()
    casil = Casil(bus, policy)
    env = {"id": "arq_1_2_abcdef", "type": "command", "room": "science", "args": {"token": "t"}}
    verdict = casil.inspect(env, "c")
    assert verdict.kind == "control" and verdict.decision == "ALLOW_WITH_REDACTION"
    assert not verdict.replace_payload


def test_inspection_fault_falls_back_to_default_decision():
    for default, decision in (("allow", "ALLOW"), ("block", "BLOCK")):
        verdict, casil = inspect(Policy(enabled=True, default_decision=default), {object()})
        assert (verdict.decision, verdict.reason) == (decision, "CASIL_INTERNAL_ERROR")
        assert verdict.flags == {}  # nothing was found: the reason says inspection failed
        assert casil.internal_errors_total == 1


def test_bus_hook_blocks_before_routing_and_costs_nothing_when_disabled():
    bus = Bus()
    casil = Casil(bus, Policy())
    bus.plug(commands=casil.commands(), inspector=casil)
    assert not casil.enabled  # the Bus's one check per frame
    sender_sink, receiver_sink = ListSink(), ListSink()
    sender = bus.attach(sender_sink, "test")
    bus.attach(receiver_sink, "test")
    heard = []
    bus.plug(on_event=lambda event, fields: heard.append(event))
    casil.set_policy(Policy(enabled=True, mode="enforce", block_on_probable_secret=True))
    assert casil.enabled
    bus.receive(sender, '{"type":"message","id":"arq_1_9_abcdef","payload":{"password":"x"}}')
    error = sender_sink.frames[-1]
    assert error["error"] == "CASIL blocked message" and error["request_id"] == "arq_1_9_abcdef"
    assert (error["room"], error["channel"]) == ("science", "general")  # resolved target
    assert receiver_sink.frames == [receiver_sink.frames[0]]  # the welcome only
    assert bus.router.history("science", "general") == []
    assert heard == ["casil_decision", "policy_refusal"]
    assert bus.snapshot()["messages"]["policy_blocks"] == 1


def test_op_casil_get_shows_the_live_policy_and_reload_is_for_admins():
    bus = BusHarness()
    casil = bus.plug(Casil(bus.bus, Policy()))
    user, admin = bus.connect(), bus.admin()
    got = user.command("op.casil.get")
    assert got["payload"] == {"message": "CASIL policy snapshot", "data": Policy().snapshot()}
    assert_refused(user.command("op.casil.reload", {"enabled": True}),
                   ErrorCode.AUTHORIZATION_ERROR, "op.casil.reload is for admin clients only")
    assert casil.enabled is False
    assert_refused(admin.command("op.casil.reload", {"colour": "red"}), ErrorCode.VALIDATION_ERROR,
                   "Validation error: colour: unknown CASIL key(s); known: " + ", ".join(
                       Policy().snapshot()))
    reloaded = admin.command("op.casil.reload", {"enabled": True, "mode": " Enforce "})
    assert reloaded["payload"]["message"] == "CASIL policy reloaded"
    assert reloaded["payload"]["data"] == {**Policy().snapshot(), "enabled": True,
                                           "mode": "enforce"}
    assert casil.enabled is True and casil.policy.mode == "enforce"
    assert bus.events_named("casil_reloaded") == [{"client_id": admin.id,
                                                   "keys": "enabled,mode"}]


@pytest.mark.parametrize("changes, expected", [
    ({"enabled": False}, {"enabled": False}),
    ({"mode": 5}, "mode: must be a string, not 5"),
    ({"scope_include": [1, 2.5]}, {"scope_include": ("1", "2.5")}),
    ({"scope_include": [True]}, "scope_include: must be a string or a list of strings, not [True]"),
])
def test_loose_values_of_every_kind(changes, expected):
    if isinstance(expected, str):
        with pytest.raises(PolicyError) as raised:
            Policy().with_changes(changes)
        assert str(raised.value) == expected
    else:
        policy = Policy().with_changes(changes)
        assert {key: getattr(policy, key) for key in expected} == expected


def test_a_payload_deeper_than_the_walk_is_redacted_whole_below_it():
    deep: object = "leaf"
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    redacted, changed = redact(deep, Policy())
    assert changed
    for _ in range(MAX_DEPTH + 1):
        redacted = redacted[0]
    assert redacted == REDACTED


def test_decisions_without_telemetry_or_logs_emit_no_events():
    policy = Policy(enabled=True, mode="enforce", block_on_probable_secret=True,
                    metadata_to_telemetry=False, metadata_to_logs=False)
    verdict, _ = inspect(policy, {"password": "x"})
    assert verdict.blocked and verdict.events == []


@pytest.mark.parametrize("admin", [True, False], ids=["admin", "no admin"])
def test_reload_refusals_leave_the_policy_unchanged(admin):
    bus = BusHarness()
    casil = bus.plug(Casil(bus.bus, Policy(enabled=True)))
    client, bystander = bus.connect(admin=admin), bus.connect()
    before = client.ok("op.casil.get")
    assert before["enabled"] is True and before["redaction_paths"] == ["password", "token",
                                                                       "secret"]
    if not admin:   # without a token's admin role (or with auth off), nobody reloads
        data = assert_refused(client.command("op.casil.reload", {"mode": "enforce"}),
                              ErrorCode.AUTHORIZATION_ERROR,
                              "op.casil.reload is for admin clients only")
        assert data == {}
    for args, needle in (({"mode": "audit"}, "mode: must be one of monitor, enforce"),
                         ({"mode": "enforce", "redaction_patterns": ["(x"]}, "regular expr"),
                         ({"mode": "enforce", "colour": "red"}, "colour: unknown CASIL key"),
                         ({"max_patterns": -3}, "max_patterns: must be greater than 0")):
        response = client.command("op.casil.reload", args)
        if admin:
            assert (response["status"], response["error_code"]) == ("error", "VALIDATION_ERROR")
            assert needle in response["payload"]["message"]
        else:
            assert response["error_code"] == "AUTHORIZATION_ERROR"
    assert client.ok("op.casil.get") == before and casil.policy.mode == "monitor"
    bystander.assert_silent()
