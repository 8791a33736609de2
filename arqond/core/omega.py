"""op.omega.*: the Tier-Omega lab lane, in memory only and off unless [omega] enabled is set.

Substrates are named lab objects; events emitted for them are kept in a bounded ring (the oldest
goes first) and published as ``telemetry`` frames to the lab channel. ArqonBus can also run
substrates in Firecracker microVMs; arqond has no VM runtime, so every VM request is answered
with FEATURE_DISABLED. As in ArqonBus, the "enabled" check comes before the admin check, and
``op.omega.status`` answers even when the lane is off.

Results carry ArqonBus's keys (its op.omega handlers in websocket_bus.py), so its clients read
them unchanged; its runtime snapshot is given with arqond's values: no binary, no VM, not ready.
"""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING, Any

from arqond.core.commands import Command, CommandContext, CommandError
from arqond.core.envelope import now_iso
from arqond.core.errors import ErrorCode

if TYPE_CHECKING:
    from arqond.core.bus import Bus

OMEGA_SENDER = "op-omega"
VM_KINDS = frozenset({"firecracker", "microvm", "vm"})
MAX_NAME_LENGTH = 128
LIST_LIMIT_MAX = 100000     # a larger limit than the ring holds just returns the whole ring
# ArqonBus's Firecracker runtime snapshot, as arqond has it: nothing to run VMs with.
FIRECRACKER = {"runtime": "memory", "firecracker_bin": None, "bin_available": False,
               "kernel_image": None, "kernel_exists": False, "rootfs_image": None,
               "rootfs_exists": False, "workspace_dir": None, "vm_count": 0, "max_vms": 0,
               "ready": False}
# What op.omega.list_substrates shows of each.
SUBSTRATE_KEYS = ("substrate_id", "name", "kind", "owner_client_id", "metadata", "created_at")


class Omega:
    def __init__(self, bus: "Bus", settings: Any) -> None:
        """``settings``: the [omega] section of the configuration (enabled, lab_room, ...)."""
        self.bus = bus
        self.settings = settings
        self.substrates: dict[str, dict[str, Any]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=settings.max_events)
        self.events_dropped_total = 0

    def commands(self) -> dict[str, Command]:
        table = {
            "status": (self._status, "Tier-Omega lane status"),
            "register_substrate": (self._register, "register a lab substrate (admin)"),
            "list_substrates": (self._list_substrates, "list lab substrates"),
            "unregister_substrate": (self._unregister, "remove a substrate and its events (admin)"),
            "emit_event": (self._emit, "publish a substrate event to the lab channel (admin)"),
            "list_events": (self._list_events, "recent lab events, oldest first"),
            "clear_events": (self._clear_events, "drop lab events (admin)"),
            "vm.probe": (self._vm_probe, "VM runtime probe (none in arqond)"),
            "vm.list": (self._vm_list, "running VMs (none in arqond)"),
            "vm.launch": (self._vm_unavailable, "not available: no VM runtime"),
            "vm.stop": (self._vm_unavailable, "not available: no VM runtime"),
        }
        return {f"op.omega.{name}": Command(handler, False, summary)
                for name, (handler, summary) in table.items()}

    def _require(self, ctx: CommandContext, *, admin: bool = False) -> None:
        if not self.settings.enabled:
            raise CommandError(ErrorCode.FEATURE_DISABLED, "Tier-Omega experimental lane is "
                               "disabled ([omega] enabled = false, ARQONBUS_OMEGA_ENABLED)")
        if admin:
            ctx.require_admin()

    def _status(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        s = self.settings
        return "Tier-Omega lane status", {
            "enabled": s.enabled, "lab_room": s.lab_room, "lab_channel": s.lab_channel,
            "max_events": s.max_events, "max_substrates": s.max_substrates,
            "substrate_count": len(self.substrates), "event_count": len(self.events),
            "runtime": "memory", "firecracker": dict(FIRECRACKER)}

    def _register(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        self._require(ctx, admin=True)
        name = _text(ctx, "name")
        kind = _text(ctx, "kind")
        metadata = ctx.arg("metadata", dict, {})
        if kind.lower() in VM_KINDS or str(metadata.get("runtime", "")).lower() == "firecracker":
            raise CommandError(ErrorCode.FEATURE_DISABLED,
                               "Firecracker substrates are not available: "
                               "arqond runs Tier-Omega in memory only")
        if len(self.substrates) >= self.settings.max_substrates:
            raise CommandError(ErrorCode.VALIDATION_ERROR,
                               "Validation error: substrate limit reached "
                               f"({self.settings.max_substrates})")
        substrate = {"substrate_id": "omega_" + os.urandom(6).hex(), "name": name, "kind": kind,
                     "metadata": metadata, "created_at": now_iso(),
                     "owner_client_id": ctx.client.id}
        self.substrates[substrate["substrate_id"]] = substrate
        return "Tier-Omega substrate registered", {
            k: substrate[k] for k in ("substrate_id", "name", "kind", "created_at")}

    def _list_substrates(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        self._require(ctx)
        substrates = [{key: substrate[key] for key in SUBSTRATE_KEYS}
                      for substrate in self.substrates.values()]
        return "Tier-Omega substrates listed", {"substrates": substrates,
                                                "count": len(substrates)}

    def _unregister(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        self._require(ctx, admin=True)
        substrate_id = ctx.arg("substrate_id", str, required=True)
        substrate = self.substrates.pop(substrate_id, None)
        if substrate is None:
            raise CommandError(ErrorCode.NOT_FOUND,
                               f"Tier-Omega substrate {substrate_id!r} not found",
                               {"substrate_id": substrate_id})
        removed = self._remove_events(substrate_id, None)
        return "Tier-Omega substrate removed", {
            "removed": True, "substrate_id": substrate_id, "name": substrate["name"],
            "kind": substrate["kind"], "removed_events": removed}

    def _emit(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        self._require(ctx, admin=True)
        substrate_id = ctx.arg("substrate_id", str, required=True)
        if substrate_id not in self.substrates:
            # ArqonBus's answer: a bad argument, where unregister says NOT_FOUND.
            raise CommandError(ErrorCode.VALIDATION_ERROR,
                               f"Validation error: Unknown substrate_id: {substrate_id}")
        signal = _text(ctx, "signal")
        event = {"event_id": "omega_evt_" + os.urandom(6).hex(), "substrate_id": substrate_id,
                 "signal": signal, "payload": ctx.arg("payload", dict, {}),
                 "emitted_by": ctx.client.id, "timestamp": now_iso()}
        if len(self.events) == self.events.maxlen:
            self.events_dropped_total += 1
        self.events.append(event)
        s = self.settings
        self.bus.publish({"type": "telemetry", "sender": OMEGA_SENDER, "room": s.lab_room,
                          "channel": s.lab_channel, "payload": {"omega_event": event}})
        return "Tier-Omega event emitted", event

    def _list_events(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        self._require(ctx)
        limit = ctx.limit(50, LIST_LIMIT_MAX)
        substrate_id = ctx.arg("substrate_id", str)
        signal = ctx.arg("signal", str)
        events = [e for e in self.events if _selected(e, substrate_id, signal)][-limit:]
        return "Tier-Omega events listed", {"events": events, "count": len(events),
                                            "limit": limit, "substrate_id": substrate_id,
                                            "signal": signal}

    def _clear_events(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        self._require(ctx, admin=True)
        substrate_id = ctx.arg("substrate_id", str)
        signal = ctx.arg("signal", str)
        removed = self._remove_events(substrate_id, signal)
        return "Tier-Omega events cleared", {"removed_count": removed,
                                             "remaining_count": len(self.events),
                                             "substrate_id": substrate_id, "signal": signal}

    def _remove_events(self, substrate_id: str | None, signal: str | None) -> int:
        kept = [e for e in self.events if not _selected(e, substrate_id, signal)]
        removed = len(self.events) - len(kept)
        self.events.clear()
        self.events.extend(kept)
        return removed

    def _vm_probe(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        self._require(ctx)
        return "Tier-Omega Firecracker runtime probe", dict(FIRECRACKER)

    def _vm_list(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        self._require(ctx)
        return "Tier-Omega Firecracker VMs listed", {"vms": [], "count": 0}

    def _vm_unavailable(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        self._require(ctx, admin=True)
        raise CommandError(ErrorCode.FEATURE_DISABLED, "no VM runtime: arqond runs Tier-Omega "
                           "substrates in memory only")


def _selected(event: dict[str, Any], substrate_id: str | None, signal: str | None) -> bool:
    return (substrate_id is None or event["substrate_id"] == substrate_id) and \
        (signal is None or event["signal"] == signal)


def _text(ctx: CommandContext, key: str) -> str:
    value = ctx.arg(key, str, required=True).strip()
    if not 0 < len(value) <= MAX_NAME_LENGTH:
        raise CommandError(ErrorCode.VALIDATION_ERROR, f"Validation error: {key} must be 1 to "
                           f"{MAX_NAME_LENGTH} characters")
    return value
