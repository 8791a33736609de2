"""op.omega.* in-process (arqond/core/omega.py): the lane switched off and on, who may do
what (the enabled check first, as ArqonBus), substrates and their bound, the events ring,
and the VM requests that arqond always refuses."""

from __future__ import annotations

from dataclasses import replace

import pytest

from arqond import config as configuration
from arqond.core.errors import ErrorCode
from arqond.core.omega import Omega
from tests.unit.harness import BusHarness, assert_refused

DISABLED = ("Tier-Omega experimental lane is disabled ([omega] enabled = false, "
            "ARQONBUS_OMEGA_ENABLED)")
NO_VM = "no VM runtime: arqond runs Tier-Omega substrates in memory only"
NO_FIRECRACKER = "Firecracker substrates are not available: arqond runs Tier-Omega in memory only"
# ArqonBus's Firecracker snapshot keys, with what arqond has: no binary, no VM, not ready.
NO_RUNTIME = {"runtime": "memory", "firecracker_bin": None, "bin_available": False,
              "kernel_image": None, "kernel_exists": False, "rootfs_image": None,
              "rootfs_exists": False, "workspace_dir": None, "vm_count": 0, "max_vms": 0,
              "ready": False}
EVERY_COMMAND = ["register_substrate", "list_substrates", "unregister_substrate", "emit_event",
                 "list_events", "clear_events", "vm.probe", "vm.list", "vm.launch", "vm.stop"]


def lane(**settings) -> BusHarness:
    harness = BusHarness()
    section = replace(configuration.defaults().omega, **settings)
    harness.omega = harness.plug(Omega(harness.bus, section))
    return harness


@pytest.fixture
def bus():
    return lane(enabled=True)


def substrate(admin, name: str = "alpha", kind: str = "relational") -> str:
    return admin.ok("op.omega.register_substrate", {"name": name, "kind": kind})["substrate_id"]


@pytest.mark.parametrize("name", EVERY_COMMAND)
@pytest.mark.parametrize("admin", [True, False], ids=["admin", "user"])
def test_a_disabled_lane_answers_feature_disabled_to_everyone_first(name, admin):
    client = lane().connect(admin=admin)
    assert_refused(client.command(f"op.omega.{name}", {}), ErrorCode.FEATURE_DISABLED, DISABLED)


def test_status_answers_even_when_the_lane_is_off():
    response = lane().connect().command("op.omega.status")
    assert response["payload"]["message"] == "Tier-Omega lane status"
    assert response["payload"]["data"] == {
        "enabled": False, "lab_room": "omega-lab", "lab_channel": "signals", "max_events": 1000,
        "max_substrates": 128, "substrate_count": 0, "event_count": 0, "runtime": "memory",
        "firecracker": NO_RUNTIME}


def test_an_emitted_event_reaches_the_lab_channel_as_telemetry(bus):
    admin, observer = bus.admin(), bus.connect()
    observer.ok("join_channel", {"room": "omega-lab", "channel": "signals"})
    registered = admin.command("op.omega.register_substrate", {
        "name": " alpha ", "kind": "relational", "metadata": {"note": 1}})
    assert registered["payload"]["message"] == "Tier-Omega substrate registered"
    data = registered["payload"]["data"]
    assert data["substrate_id"].startswith("omega_") and data["created_at"]
    assert (data["name"], data["kind"]) == ("alpha", "relational")   # trimmed
    event = admin.ok("op.omega.emit_event", {"substrate_id": data["substrate_id"],
                                             "signal": "pulse", "payload": {"value": 42}})
    assert event["event_id"].startswith("omega_evt_") and event["emitted_by"] == admin.id
    lab = observer.next("telemetry")
    assert (lab["sender"], lab["room"], lab["channel"]) == ("op-omega", "omega-lab", "signals")
    assert lab["payload"] == {"omega_event": event}
    listed = observer.ok("op.omega.list_substrates")
    assert listed == {"count": 1, "substrates": [{
        "substrate_id": data["substrate_id"], "name": "alpha", "kind": "relational",
        "owner_client_id": admin.id, "metadata": {"note": 1},
        "created_at": data["created_at"]}]}


@pytest.mark.parametrize("name, args", [
    ("register_substrate", {"name": "a", "kind": "k"}),
    ("unregister_substrate", {"substrate_id": "omega_x"}),
    ("emit_event", {"substrate_id": "omega_x", "signal": "s"}),
    ("clear_events", {}),
    ("vm.launch", {}),
    ("vm.stop", {}),
])
def test_changes_are_for_admins_only(bus, name, args):
    user = bus.connect()
    assert_refused(user.command(f"op.omega.{name}", args), ErrorCode.AUTHORIZATION_ERROR,
                   f"op.omega.{name} is for admin clients only")
    assert bus.omega.substrates == {} and len(bus.omega.events) == 0


@pytest.mark.parametrize("args, code, text", [
    ({"kind": "k"}, ErrorCode.VALIDATION_ERROR,
     "op.omega.register_substrate requires argument 'name'"),
    ({"name": "  ", "kind": "k"}, ErrorCode.VALIDATION_ERROR,
     "Validation error: name must be 1 to 128 characters"),
    ({"name": "n" * 129, "kind": "k"}, ErrorCode.VALIDATION_ERROR,
     "Validation error: name must be 1 to 128 characters"),
    ({"name": "a", "kind": "Firecracker"}, ErrorCode.FEATURE_DISABLED, NO_FIRECRACKER),
    ({"name": "a", "kind": "microvm"}, ErrorCode.FEATURE_DISABLED, NO_FIRECRACKER),
    ({"name": "a", "kind": "vm"}, ErrorCode.FEATURE_DISABLED, NO_FIRECRACKER),
    ({"name": "a", "kind": "k", "metadata": {"runtime": "FireCracker"}},
     ErrorCode.FEATURE_DISABLED, NO_FIRECRACKER),
    ({"name": "a", "kind": "k", "metadata": []}, ErrorCode.VALIDATION_ERROR,
     "argument 'metadata' must be dict, not an array"),
])
def test_register_refusals(bus, args, code, text):
    admin = bus.admin()
    assert_refused(admin.command("op.omega.register_substrate", args), code, text)
    assert bus.omega.substrates == {}


def test_names_at_their_bound_and_the_substrate_limit():
    bus = lane(enabled=True, max_substrates=2)
    admin = bus.admin()
    substrate(admin, name="n" * 128)
    substrate(admin, kind="k" * 128)
    assert_refused(admin.command("op.omega.register_substrate", {"name": "c", "kind": "k"}),
                   ErrorCode.VALIDATION_ERROR, "Validation error: substrate limit reached (2)")


def test_the_events_ring_keeps_the_newest_and_counts_what_it_dropped():
    bus = lane(enabled=True, max_events=2)
    admin = bus.admin()
    alpha = substrate(admin)
    for n in range(3):
        admin.ok("op.omega.emit_event", {"substrate_id": alpha, "signal": f"pulse-{n}"})
    listed = admin.command("op.omega.list_events", {"limit": 10})
    assert listed["payload"]["message"] == "Tier-Omega events listed"
    assert [e["signal"] for e in listed["payload"]["data"]["events"]] == ["pulse-1", "pulse-2"]
    assert bus.omega.events_dropped_total == 1


def test_events_are_listed_and_cleared_by_substrate_and_signal(bus):
    admin, user = bus.admin(), bus.connect()
    alpha, beta = substrate(admin), substrate(admin, name="beta")
    for source, signal in ((alpha, "a"), (beta, "a"), (alpha, "b"), (alpha, "a")):
        admin.ok("op.omega.emit_event", {"substrate_id": source, "signal": signal})
    signals = lambda data: [(e["substrate_id"], e["signal"]) for e in data["events"]]  # noqa: E731
    assert signals(user.ok("op.omega.list_events", {"substrate_id": alpha})) == \
        [(alpha, "a"), (alpha, "b"), (alpha, "a")]
    recent = user.ok("op.omega.list_events", {"signal": "a", "limit": 2})
    assert signals(recent) == [(beta, "a"), (alpha, "a")]
    assert (recent["count"], recent["limit"], recent["substrate_id"], recent["signal"]) == \
        (2, 2, None, "a")
    assert user.ok("op.omega.list_events")["count"] == 4
    cleared = admin.command("op.omega.clear_events", {"substrate_id": alpha, "signal": "a"})
    assert cleared["payload"] == {"message": "Tier-Omega events cleared", "data": {
        "removed_count": 2, "remaining_count": 2, "substrate_id": alpha, "signal": "a"}}
    removed = admin.command("op.omega.unregister_substrate", {"substrate_id": alpha})
    assert removed["payload"] == {"message": "Tier-Omega substrate removed", "data": {
        "removed": True, "substrate_id": alpha, "name": "alpha", "kind": "relational",
        "removed_events": 1}}
    assert admin.ok("op.omega.clear_events")["removed_count"] == 1
    status = admin.ok("op.omega.status")
    assert (status["substrate_count"], status["event_count"]) == (1, 0)


@pytest.mark.parametrize("name, args, code, text", [
    ("emit_event", {"substrate_id": "omega_missing", "signal": "s"},
     ErrorCode.VALIDATION_ERROR, "Validation error: Unknown substrate_id: omega_missing"),
    ("unregister_substrate", {"substrate_id": "omega_missing"}, ErrorCode.NOT_FOUND,
     "Tier-Omega substrate 'omega_missing' not found"),
    ("emit_event", {"signal": "s"}, ErrorCode.VALIDATION_ERROR,
     "op.omega.emit_event requires argument 'substrate_id'"),
    ("list_events", {"limit": 0}, ErrorCode.VALIDATION_ERROR,
     "limit must be between 1 and 100000"),
    ("list_events", {"limit": 100001}, ErrorCode.VALIDATION_ERROR,
     "limit must be between 1 and 100000"),
    ("vm.launch", {"substrate_id": "x"}, ErrorCode.FEATURE_DISABLED, NO_VM),
    ("vm.stop", {}, ErrorCode.FEATURE_DISABLED, NO_VM),
])
def test_refusals_of_an_enabled_lane(bus, name, args, code, text):
    admin, observer = bus.admin(), bus.connect()
    observer.ok("join_channel", {"room": "omega-lab:signals"})
    data = assert_refused(admin.command(f"op.omega.{name}", args), code, text)
    if code == ErrorCode.NOT_FOUND:
        assert data == {"substrate_id": "omega_missing"}
    observer.assert_silent()


def test_the_vm_probe_and_list_say_there_is_no_vm_runtime(bus):
    user = bus.connect()
    probe = user.command("op.omega.vm.probe")["payload"]
    assert probe == {"message": "Tier-Omega Firecracker runtime probe", "data": NO_RUNTIME}
    assert user.command("op.omega.vm.list")["payload"] == {
        "message": "Tier-Omega Firecracker VMs listed", "data": {"vms": [], "count": 0}}
    assert user.ok("op.omega.list_substrates") == {"substrates": [], "count": 0}
