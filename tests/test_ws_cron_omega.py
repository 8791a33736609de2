"""op.cron.* and op.omega.* over real WebSockets (ports of ArqonBus's socket tests, §13.1):
jobs fired and repeated by the event loop's timers, jobs stopped by a real disconnect, a lab
event seen by an observer. Every argument, refusal and bound of both lanes is checked
in-process in tests/unit/test_cron.py and tests/unit/test_omega.py."""

from __future__ import annotations

import pytest

from arqond.core.auth import issue_hs256
from tests.conftest import scaled

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
        assert fired["metadata"] == {"cron_job_id": data["job_id"], "iteration": 1, "seq": 1,
                                     "epoch": fired["metadata"]["epoch"]}
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
    epoch = iterations[0]["epoch"]   # one channel, one stream: seqs 1, 2, 3
    assert iterations == [{"cron_job_id": job_id, "iteration": n, "seq": n, "epoch": epoch}
                          for n in (1, 2, 3)]
    await listener.expect_silence(0.3)
    await scheduler.expect_silence(0.1)  # not subscribed to ops:ticks


async def test_cron_cancel_and_disconnect_stop_jobs(daemon, connect_peer):
    owner = await connect_peer(daemon.ws_url)
    watcher = await connect_peer(daemon.ws_url)
    job = (await owner.command("op.cron.schedule", {
        "room": "science", "channel": "general", "payload": {"x": 1},
        "delay_seconds": scaled(1)}))["payload"]["data"]
    listed = (await owner.command("op.cron.list"))["payload"]["data"]
    assert listed["count"] == 1 and listed["jobs"][0]["owner_client_id"] == owner.id
    assert (await watcher.command("op.cron.list"))["payload"]["data"]["count"] == 0
    cancelled = await owner.command("op.cron.cancel", {"job_id": job["job_id"]})
    assert cancelled["payload"]["data"] == {"job_id": job["job_id"], "cancelled": True}
    await owner.command("op.cron.schedule", {
        "room": "science", "channel": "general", "payload": {"x": 2},
        "delay_seconds": scaled(1), "interval_seconds": 0.05, "repeat_count": 100})
    await owner.close()
    await watcher.expect_silence(1.3)   # past the delay: the disconnect took the job along


@pytest.fixture
def omega_daemon(make_daemon):
    def start(**omega):
        return make_daemon({"auth": {"enabled": True, "jwt_secret": SECRET},
                            "omega": {"enabled": True, **omega}})
    return start


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
