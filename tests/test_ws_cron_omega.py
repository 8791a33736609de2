"""op.cron.* and op.omega.* over real WebSockets (ports of ArqonBus's socket tests, §13.1)."""

from __future__ import annotations

import pytest

from arqond.core.auth import issue_hs256

SECRET = "operator-secret"


def bearer(role: str, sub: str = "u") -> dict:
    token = issue_hs256({"sub": sub, "role": role}, SECRET)
    return {"additional_headers": {"Authorization": f"Bearer {token}"}}


async def test_cron_delivers_to_every_subscriber_including_the_scheduler(daemon, connect_peer):
    # Port of test_op_cron_schedule_delivers_message_to_target_room_channel.
    scheduler = await connect_peer(daemon.ws_url)
    other = await connect_peer(daemon.ws_url)
    response = await scheduler.command("op.cron.schedule", {
        "room": "science", "channel": "general", "payload": {"content": "tick"},
        "delay_seconds": 0.05})
    data = response["payload"]["data"]
    assert response["status"] == "success" and data["job_id"].startswith("cron_")
    assert (data["room"], data["channel"], data["delay_seconds"], data["repeat_count"]) == (
        "science", "general", 0.05, 1)
    for peer in (other, scheduler):
        fired = await peer.recv_type("message")
        assert fired["payload"] == {"content": "tick"} and fired["sender"] == "op-cron"
        assert fired["metadata"] == {"cron_job_id": data["job_id"], "iteration": 1}
        assert (fired["room"], fired["channel"]) == ("science", "general")
    listed = (await scheduler.command("op.cron.list"))["payload"]["data"]
    assert listed == {"jobs": [], "count": 0}  # a one-shot job is gone once fired


async def test_cron_repeats_then_stops_and_creates_the_channel(daemon, connect_peer):
    scheduler = await connect_peer(daemon.ws_url)
    listener = await connect_peer(daemon.ws_url)
    await listener.command("join_channel", {"room": "ops:ticks"})
    response = await scheduler.command("op.cron.schedule", {
        "room": "ops:ticks", "payload": {"n": 1}, "delay_seconds": 0.05,
        "interval_seconds": 0.1, "repeat_count": 3})
    job_id = response["payload"]["data"]["job_id"]
    iterations = [(await listener.recv_type("message"))["metadata"] for _ in range(3)]
    assert iterations == [{"cron_job_id": job_id, "iteration": n} for n in (1, 2, 3)]
    await listener.expect_silence(0.3)
    await scheduler.expect_silence(0.1)  # not subscribed to ops:ticks


async def test_cron_cancel_and_disconnect_stop_jobs(daemon, connect_peer):
    owner = await connect_peer(daemon.ws_url)
    watcher = await connect_peer(daemon.ws_url)
    job = (await owner.command("op.cron.schedule", {
        "room": "science", "channel": "general", "payload": {"x": 1},
        "delay_seconds": 0.3}))["payload"]["data"]
    listed = (await owner.command("op.cron.list"))["payload"]["data"]
    assert listed["count"] == 1 and listed["jobs"][0]["owner_client_id"] == owner.id
    assert (await watcher.command("op.cron.list"))["payload"]["data"]["count"] == 0
    cancelled = await owner.command("op.cron.cancel", {"job_id": job["job_id"]})
    assert cancelled["payload"]["data"] == {"job_id": job["job_id"], "cancelled": True}
    await owner.command("op.cron.schedule", {
        "room": "science", "channel": "general", "payload": {"x": 2}, "delay_seconds": 0.3,
        "interval_seconds": 0.05, "repeat_count": 100})
    await owner.close()
    await watcher.expect_silence(0.6)


@pytest.mark.parametrize("args, needle", [
    ({"channel": "general", "payload": {}}, "requires non-empty room and channel"),
    ({"room": "science", "payload": {}}, "requires non-empty room and channel"),
    ({"room": "science", "channel": "general"}, "requires argument 'payload'"),
    ({"room": "science", "channel": "general", "payload": "tick"}, "'payload' must be dict"),
    ({"room": "science", "channel": "general", "payload": {}, "delay_seconds": 0},
     "delay_seconds must be from"),
    ({"room": "science", "channel": "general", "payload": {}, "repeat_count": 2},
     "interval_seconds is required"),
    ({"room": "science", "channel": "general", "payload": {}, "repeat_count": 0},
     "repeat_count must be from 1"),
    ({"room": "bad\x07room", "channel": "general", "payload": {}}, "invalid room name"),
])
async def test_cron_schedule_bad_input(daemon, connect_peer, args, needle):
    peer = await connect_peer(daemon.ws_url)
    watcher = await connect_peer(daemon.ws_url)
    response = await peer.command("op.cron.schedule", args)
    assert (response["status"], response["error_code"]) == ("error", "VALIDATION_ERROR")
    assert needle in response["payload"]["message"]
    assert (await peer.command("op.cron.list"))["payload"]["data"]["count"] == 0
    await watcher.expect_silence(0.2)


async def test_cron_cancel_unknown_or_foreign_job(daemon, connect_peer):
    owner = await connect_peer(daemon.ws_url)
    stranger = await connect_peer(daemon.ws_url)
    missing = await stranger.command("op.cron.cancel", {"job_id": "cron_000000000000"})
    assert missing["error_code"] == "NOT_FOUND"
    assert missing["payload"]["data"] == {"job_id": "cron_000000000000"}
    assert (await stranger.command("op.cron.cancel"))["error_code"] == "VALIDATION_ERROR"
    job = (await owner.command("op.cron.schedule", {
        "room": "science", "channel": "general", "payload": {"still": "fires"},
        "delay_seconds": 0.1}))["payload"]["data"]
    refused = await stranger.command("op.cron.cancel", {"job_id": job["job_id"]})
    assert refused["error_code"] == "AUTHORIZATION_ERROR"
    assert (await stranger.recv_type("message"))["payload"] == {"still": "fires"}


@pytest.fixture
def omega_daemon(make_daemon):
    def start(**omega):
        return make_daemon({"auth": {"enabled": True, "jwt_secret": SECRET},
                            "omega": {"enabled": True, **omega}})
    return start


async def test_omega_disabled_answers_feature_disabled(make_daemon, connect_peer):
    daemon = make_daemon({"auth": {"enabled": True, "jwt_secret": SECRET}})
    admin = await connect_peer(daemon.ws_url, **bearer("admin"))
    user = await connect_peer(daemon.ws_url, **bearer("user"))
    response = await admin.command("op.omega.register_substrate",
                                   {"name": "alpha", "kind": "relational"})
    assert (response["status"], response["error_code"]) == ("error", "FEATURE_DISABLED")
    # The enabled check comes first, so a non-admin hears FEATURE_DISABLED too.
    assert (await user.command("op.omega.emit_event", {}))["error_code"] == "FEATURE_DISABLED"
    status = (await user.command("op.omega.status"))["payload"]["data"]
    assert status["enabled"] is False and status["runtime"] == "memory"
    assert (status["lab_room"], status["lab_channel"]) == ("omega-lab", "signals")


async def test_omega_emit_reaches_lab_observer(omega_daemon, connect_peer):
    # Port of test_tier_omega_enabled_can_emit_isolated_lab_event.
    daemon = omega_daemon()
    admin = await connect_peer(daemon.ws_url, **bearer("admin"))
    observer = await connect_peer(daemon.ws_url, **bearer("user"))
    await observer.command("join_channel", {"room": "omega-lab", "channel": "signals"})
    registered = await admin.command("op.omega.register_substrate",
                                     {"name": "alpha", "kind": "relational"})
    substrate_id = registered["payload"]["data"]["substrate_id"]
    assert substrate_id.startswith("omega_")
    emitted = await admin.command("op.omega.emit_event", {
        "substrate_id": substrate_id, "signal": "pulse", "payload": {"value": 42}})
    assert emitted["status"] == "success" and emitted["payload"]["data"]["signal"] == "pulse"
    lab_event = await observer.recv_type("telemetry")
    assert lab_event["sender"] == "op-omega"
    omega_event = lab_event["payload"]["omega_event"]
    assert (omega_event["signal"], omega_event["substrate_id"]) == ("pulse", substrate_id)
    assert omega_event["payload"] == {"value": 42} and omega_event["emitted_by"] == admin.id
    assert omega_event["event_id"].startswith("omega_evt_")


async def test_omega_limits_clear_and_unregister(omega_daemon, connect_peer):
    # Port of test_tier_omega_admin_can_unregister_and_clear_events, plus the events ring.
    daemon = omega_daemon(max_substrates=1, max_events=2)
    admin = await connect_peer(daemon.ws_url, **bearer("admin"))
    substrate_id = (await admin.command("op.omega.register_substrate", {
        "name": "alpha", "kind": "relational"}))["payload"]["data"]["substrate_id"]
    second = await admin.command("op.omega.register_substrate",
                                 {"name": "beta", "kind": "symbolic"})
    assert second["error_code"] == "VALIDATION_ERROR"
    assert "substrate limit reached" in second["payload"]["message"]
    for n in range(3):
        await admin.command("op.omega.emit_event", {"substrate_id": substrate_id,
                                                    "signal": f"pulse-{n}"})
    events = (await admin.command("op.omega.list_events", {"limit": 10}))["payload"]["data"]
    assert [e["signal"] for e in events["events"]] == ["pulse-1", "pulse-2"]
    cleared = await admin.command("op.omega.clear_events", {"substrate_id": substrate_id,
                                                            "signal": "pulse-1"})
    assert cleared["payload"]["data"] == {"removed_count": 1, "remaining_count": 1,
                                          "substrate_id": substrate_id, "signal": "pulse-1"}
    removed = await admin.command("op.omega.unregister_substrate",
                                  {"substrate_id": substrate_id})
    assert removed["payload"]["data"] == {"substrate_id": substrate_id, "removed": True,
                                          "removed_events": 1}
    status = (await admin.command("op.omega.status"))["payload"]["data"]
    assert (status["substrate_count"], status["event_count"]) == (0, 0)


async def test_omega_bad_input(omega_daemon, connect_peer):
    daemon = omega_daemon()
    admin = await connect_peer(daemon.ws_url, **bearer("admin"))
    user = await connect_peer(daemon.ws_url, **bearer("user"))
    observer = await connect_peer(daemon.ws_url, **bearer("user"))
    await observer.command("join_channel", {"room": "omega-lab", "channel": "signals"})
    cases = [
        (user, "op.omega.register_substrate", {"name": "a", "kind": "k"}, "AUTHORIZATION_ERROR"),
        (admin, "op.omega.register_substrate", {"kind": "k"}, "VALIDATION_ERROR"),
        (admin, "op.omega.register_substrate", {"name": "a", "kind": "firecracker"},
         "FEATURE_DISABLED"),
        (admin, "op.omega.register_substrate",
         {"name": "a", "kind": "k", "metadata": {"runtime": "firecracker"}}, "FEATURE_DISABLED"),
        (admin, "op.omega.emit_event", {"substrate_id": "omega_missing", "signal": "s"},
         "NOT_FOUND"),
        (user, "op.omega.clear_events", {}, "AUTHORIZATION_ERROR"),
        (admin, "op.omega.unregister_substrate", {"substrate_id": "omega_missing"},
         "NOT_FOUND"),
        (admin, "op.omega.vm.launch", {"substrate_id": "x"}, "FEATURE_DISABLED"),
        (admin, "op.omega.list_events", {"limit": 0}, "VALIDATION_ERROR"),
    ]
    for peer, name, args, code in cases:
        response = await peer.command(name, args)
        assert (name, response["error_code"]) == (name, code)
    listed = (await user.command("op.omega.list_substrates"))["payload"]["data"]
    assert listed == {"substrates": [], "count": 0}
    assert (await user.command("op.omega.vm.list"))["payload"]["data"] == {"vms": [], "count": 0}
    await observer.expect_silence(0.2)
