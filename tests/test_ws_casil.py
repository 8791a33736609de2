"""CASIL over real WebSockets, including ports of ArqonBus's own socket tests (§13.1): a policy
from the environment, a live reload by an admin, a changed [casil] section on SIGHUP. Each
decision, scope, redaction and refusal is checked in-process in tests/unit/test_casil.py,
test_protocol.py and test_cron.py."""

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


async def test_metadata_casil_flags_are_an_object_as_arqonbus_sends_them(make_daemon,
                                                                          connect_peer):
    # ArqonBus puts its classifier's flags dict in metadata.casil: a key only when it is true.
    daemon = casil_daemon(make_daemon, metadata_to_envelope=True, max_payload_bytes=64,
                          redaction_paths=[])
    sender = await connect_peer(daemon.ws_url, **bearer("user", "a"))
    receiver = await connect_peer(daemon.ws_url, **bearer("user", "b"))
    for payload, flags, risk, reason in (
            ({"n": 1}, {}, "low", "CASIL_POLICY_ALLOWED"),
            ({"note": "my password", "blob": "x" * 64},
             {"contains_probable_secret": True, "oversize_payload": True}, "high",
             "CASIL_POLICY_OVERSIZE")):
        await sender.send({"type": "message", "room": "science", "channel": "general",
                           "payload": payload})
        routed = await receiver.recv_type("message")
        assert routed["metadata"]["casil"] == {"kind": "data", "risk_level": risk,
                                               "flags": flags, "reason_code": reason,
                                               "decision": "ALLOW"}
        ack = await sender.recv_type("message_response")
        assert "casil" not in ack["metadata"]  # the routed copy only, as ArqonBus
