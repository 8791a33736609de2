"""CASIL over real WebSockets, including ports of ArqonBus's own socket tests (§13.1)."""

from __future__ import annotations

import signal

from arqond.core.auth import issue_hs256
from tests.conftest import write_config

SECRET = "casil-secret"


def bearer(role: str, sub: str = "u") -> dict:
    token = issue_hs256({"sub": sub, "role": role, "tenant_id": "tenant-a"}, SECRET)
    return {"additional_headers": {"Authorization": f"Bearer {token}"}}


def casil_daemon(make_daemon, **casil):
    return make_daemon({"auth": {"enabled": True, "jwt_secret": SECRET},
                        "casil": {"enabled": True, **casil}})


async def test_enforce_blocks_malware_message_and_receiver_gets_nothing(make_daemon, connect_peer):
    # Port of test_epoch1_gate_casil_policy_blocks_malware_message, configured through the
    # ArqonBus environment names.
    daemon = make_daemon({"auth": {"enabled": True, "jwt_secret": SECRET}}, env={
        "ARQONBUS_CASIL_ENABLED": "true", "ARQONBUS_CASIL_MODE": "enforce",
        "ARQONBUS_CASIL_BLOCK_ON_PROBABLE_SECRET": "true",
        "ARQONBUS_CASIL_REDACTION_PATTERNS": "malware"})
    sender = await connect_peer(daemon.ws_url, **bearer("user", "a"))
    receiver = await connect_peer(daemon.ws_url, **bearer("user", "b"))
    await sender.send({"type": "message", "id": "arq_1_1_abcdef", "room": "science",
                       "channel": "general", "payload": {"content": "download this malware"}})
    blocked = await sender.recv_type("error")
    assert blocked["error"] == "CASIL blocked message"
    assert blocked["error_code"] == "CASIL_POLICY_BLOCKED_SECRET"
    assert blocked["payload"] == {"reason": "CASIL_POLICY_BLOCKED_SECRET"}
    assert (blocked["request_id"], blocked["room"], blocked["channel"]) == (
        "arq_1_1_abcdef", "science", "general")
    await receiver.expect_silence(0.3)
    daemon.wait_for_line("policy refusal")
    # Nothing else is disturbed: the next clean message flows, and history lacks the blocked one.
    await sender.send({"type": "message", "payload": {"content": "hello"}})
    assert (await receiver.recv_type("message"))["payload"] == {"content": "hello"}
    await sender.recv_type("message_response")
    history = (await sender.command("history", {"room": "science:general"}))["payload"]["data"]
    assert [h["payload"] for h in history["history"]] == [{"content": "hello"}]


async def test_monitor_delivers_then_admin_reload_enforces_without_restart(make_daemon,
                                                                           connect_peer):
    # Port of test_casil_mode_can_be_reloaded_without_restart and of
    # test_op_casil_reload_and_get_updates_live_policy.
    daemon = casil_daemon(make_daemon, mode="monitor", block_on_probable_secret=True,
                          redaction_patterns=["token"])
    admin = await connect_peer(daemon.ws_url, **bearer("admin", "root"))
    sender = await connect_peer(daemon.ws_url, **bearer("user", "a"))
    receiver = await connect_peer(daemon.ws_url, **bearer("user", "b"))
    await sender.send({"type": "message", "id": "arq_1_2_abcdef", "room": "science",
                       "channel": "general", "payload": {"content": "token-value-123"}})
    ack = await sender.recv()
    assert (ack["type"], ack["id"]) == ("message_response", "arq_1_2_abcdef")
    assert (await receiver.recv_type("message"))["payload"] == {"content": "token-value-123"}
    assert (await admin.recv_type("message"))["id"] == "arq_1_2_abcdef"

    reloaded = await admin.command("op.casil.reload", {"mode": "enforce"}, id="arq_1_3_abcdef")
    assert (reloaded["request_id"], reloaded["status"]) == ("arq_1_3_abcdef", "success")
    assert reloaded["payload"]["data"]["mode"] == "enforce"
    assert (await sender.command("op.casil.get"))["payload"]["data"]["mode"] == "enforce"

    await sender.send({"type": "message", "id": "arq_1_4_abcdef", "room": "science",
                       "channel": "general", "payload": {"content": "token-value-456"}})
    blocked = await sender.recv_type("error")
    assert blocked["request_id"] == "arq_1_4_abcdef"
    assert blocked["error"] == "CASIL blocked message"
    await receiver.expect_silence(0.4)
    await admin.expect_silence(0.1)

    # SIGHUP with an unchanged [casil] section keeps what the admin set live.
    mark = len(daemon.lines)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_line("configuration reloaded", start=mark)
    assert (await sender.command("op.casil.get"))["payload"]["data"]["mode"] == "enforce"


async def test_reload_refusals_leave_the_policy_unchanged(make_daemon, connect_peer):
    daemon = casil_daemon(make_daemon, mode="monitor")
    admin = await connect_peer(daemon.ws_url, **bearer("admin", "root"))
    user = await connect_peer(daemon.ws_url, **bearer("user", "a"))
    bystander = await connect_peer(daemon.ws_url, **bearer("user", "b"))
    before = (await user.command("op.casil.get"))["payload"]["data"]
    assert before["enabled"] is True and before["redaction_paths"] == ["password", "token",
                                                                       "secret"]
    refused = await user.command("op.casil.reload", {"mode": "enforce"})
    assert (refused["status"], refused["error_code"]) == ("error", "AUTHORIZATION_ERROR")
    assert refused["payload"] == {"message": refused["error"], "data": {}}
    for args, needle in (({"mode": "audit"}, "mode: must be one of monitor, enforce"),
                         ({"mode": "enforce", "redaction_patterns": ["(x"]}, "regular expr"),
                         ({"mode": "enforce", "colour": "red"}, "colour: unknown CASIL key"),
                         ({"max_patterns": -3}, "max_patterns: must be greater than 0")):
        response = await admin.command("op.casil.reload", args)
        assert (response["status"], response["error_code"]) == ("error", "VALIDATION_ERROR")
        assert needle in response["payload"]["message"]
    assert (await admin.command("op.casil.get"))["payload"]["data"] == before
    await bystander.expect_silence(0.1)


async def test_without_auth_nobody_is_admin(make_daemon, connect_peer):
    daemon = make_daemon({"casil": {"enabled": True}})
    peer = await connect_peer(daemon.ws_url)
    response = await peer.command("op.casil.reload", {"mode": "enforce"})
    assert response["error_code"] == "AUTHORIZATION_ERROR"
    assert (await peer.command("op.casil.get"))["payload"]["data"]["mode"] == "monitor"


async def test_transport_redaction_reaches_receivers_ack_and_history(make_daemon, connect_peer):
    daemon = make_daemon({"casil": {"enabled": True, "transport_redaction": True,
                                    "metadata_to_envelope": True,
                                    "redaction_paths": ["password", "user.pin"],
                                    "redaction_patterns": [r"\d{4}-\d{4}-\d{4}-\d{4}"]}})
    sender = await connect_peer(daemon.ws_url)
    receiver = await connect_peer(daemon.ws_url)
    payload = {"password": "hunter2", "user": {"pin": 1234, "name": "ann"},
               "note": "card 1111-2222-3333-4444 \"quoted\""}
    redacted = {"password": "***REDACTED***", "user": {"pin": "***REDACTED***", "name": "ann"},
                "note": "card ***REDACTED*** \"quoted\""}
    await sender.send({"type": "message", "payload": payload, "metadata": {"sequence": 1}})
    routed = await receiver.recv_type("message")
    assert routed["payload"] == redacted
    assert routed["metadata"]["sequence"] == 1
    assert routed["metadata"]["casil"] == {
        "kind": "data", "risk_level": "high", "flags": ["contains_probable_secret", "redacted"],
        "reason_code": "CASIL_POLICY_REDACTED", "decision": "ALLOW_WITH_REDACTION"}
    ack = await sender.recv_type("message_response")
    assert ack["payload"] == redacted and "casil" not in ack["metadata"]
    history = (await sender.command("history", {"room": "science:general"}))["payload"]["data"]
    assert history["history"][0]["payload"] == redacted


async def test_scope_leaves_other_channels_alone(make_daemon, connect_peer):
    daemon = make_daemon({"casil": {"enabled": True, "mode": "enforce",
                                    "block_on_probable_secret": True,
                                    "scope_include": ["secure-*"]}})
    sender = await connect_peer(daemon.ws_url)
    receiver = await connect_peer(daemon.ws_url)
    await sender.send({"type": "message", "payload": {"password": "x"}})
    assert (await receiver.recv_type("message"))["payload"] == {"password": "x"}
    await sender.recv_type("message_response")
    await receiver.command("join_channel", {"room": "secure-lab", "channel": "g"})
    await sender.send({"type": "message", "room": "secure-lab:g", "payload": {"password": "x"}})
    assert (await sender.recv_type("error"))["error_code"] == "CASIL_POLICY_BLOCKED_SECRET"
    await receiver.expect_silence(0.3)


async def test_sighup_applies_a_changed_casil_section(make_daemon, connect_peer):
    daemon = make_daemon()
    sender = await connect_peer(daemon.ws_url)
    receiver = await connect_peer(daemon.ws_url)
    config = {"server": {"port": 0, "state_dir": str(daemon.state_dir)},
              "moo": {"dir": str(daemon.moo_dir), "log_dir": str(daemon.log_dir)},
              "casil": {"enabled": True, "mode": "enforce", "max_payload_bytes": 64}}
    write_config(daemon.config_path, config)
    mark = len(daemon.lines)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_line("CASIL policy replaced", start=mark)
    await sender.send({"type": "message", "payload": {"blob": "x" * 100}})
    assert (await sender.recv_type("error"))["error_code"] == "CASIL_POLICY_OVERSIZE"
    await receiver.expect_silence(0.3)
    # A broken section is refused as a whole: the running policy stays.
    config["casil"]["redaction_patterns"] = ["(x"]
    write_config(daemon.config_path, config)
    mark = len(daemon.lines)
    daemon.signal(signal.SIGHUP)
    line = daemon.wait_for_line("reload refused", start=mark)
    assert "casil.redaction_patterns" in line
    assert (await sender.command("op.casil.get"))["payload"]["data"]["max_payload_bytes"] == 64


async def test_cron_payloads_are_screened_when_scheduled(make_daemon, connect_peer):
    daemon = make_daemon({"casil": {"enabled": True, "mode": "enforce",
                                    "block_on_probable_secret": True,
                                    "redaction_patterns": ["malware"]}})
    owner = await connect_peer(daemon.ws_url)
    watcher = await connect_peer(daemon.ws_url)
    refused = await owner.command("op.cron.schedule", {
        "room": "science", "channel": "general", "payload": {"content": "malware"},
        "delay_seconds": 0.05})
    assert (refused["status"], refused["error_code"]) == ("error", "CASIL_POLICY_BLOCKED_SECRET")
    assert refused["payload"] == {"message": "CASIL blocked message",
                                  "data": {"reason": "CASIL_POLICY_BLOCKED_SECRET"}}
    assert (await owner.command("op.cron.list"))["payload"]["data"]["count"] == 0
    await watcher.expect_silence(0.3)
