"""Metrics as plain samples, rendered in the Prometheus text exposition format (0.0.4).

Every part of arqond keeps its counters in plain attributes; a *metric source* is a callable
returning samples read from them. The HTTP adapter renders whatever sources it is given, so a
new part adds its metrics by appending one source. Label values must come from small fixed
sets (transport names, status codes), never from client input.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple

if TYPE_CHECKING:
    from arqond.core.bus import Bus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Sample(NamedTuple):
    name: str                 # counters end in _total
    kind: str                 # "counter" or "gauge"
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


MetricSource = Callable[[], Iterable[Sample]]


def counter(name: str, help: str, value: float, **labels: str) -> Sample:
    return Sample(name, "counter", help, value, tuple(sorted(labels.items())))


def gauge(name: str, help: str, value: float, **labels: str) -> Sample:
    return Sample(name, "gauge", help, value, tuple(sorted(labels.items())))


def counters_of(owner: object, prefix: str, table: dict[str, str]) -> list[Sample]:
    """One counter per attribute of ``owner``: ``{attribute: help}``; a name that does not end
    in _total gets it appended, as Prometheus wants of counters."""
    return [counter(f"{prefix}_{attr}" if attr.endswith("_total") else f"{prefix}_{attr}_total",
                    help, getattr(owner, attr))
            for attr, help in table.items()]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(samples: Iterable[Sample]) -> str:
    """One HELP/TYPE block per metric name, in first-seen order, its samples beneath."""
    families: dict[str, list[Sample]] = {}
    for sample in samples:
        families.setdefault(sample.name, []).append(sample)
    lines = []
    for name, members in families.items():
        first = members[0]
        lines.append(f"# HELP {name} {first.help}")
        lines.append(f"# TYPE {name} {first.kind}")
        for sample in members:
            labels = ",".join(f'{key}="{_escape(value)}"' for key, value in sample.labels)
            lines.append(f"{name}{{{labels}}} {_number(sample.value)}" if labels
                         else f"{name} {_number(sample.value)}")
    return "\n".join(lines) + "\n"


def bus_samples(bus: "Bus") -> list[Sample]:
    stats = bus.stats
    samples = [
        counter("arqonbus_connections_total", "Clients ever attached to the bus, any transport.",
                stats.connections_total),
        counter("arqonbus_messages_total", "Envelopes routed (client and server published).",
                stats.messages_total),
        counter("arqonbus_deliveries_total", "Copies of routed envelopes handed to clients.",
                stats.deliveries_total),
        counter("arqonbus_commands_total", "Commands received.", stats.commands_total),
        counter("arqonbus_errors_total", "Error frames and failed commands sent to clients.",
                stats.errors_total),
        counter("arqonbus_channels_refused_total",
                "Channels a client could not create at server.max_channels.",
                stats.channels_refused_total),
        counter("arqonbus_replies_too_large_total",
                "Replies refused as larger than half of server.client_buffer_bytes.",
                stats.replies_too_large_total),
        counter("arqonbus_output_budget_cuts_total",
                "Clients cut off, largest first, at server.output_budget_bytes.",
                stats.budget_cuts_total),
        counter("arqonbus_streams_refused_total",
                "Messages not delivered because the store could not keep them (STORE_FAILED).",
                stats.store_refused_total),
        counter("arqonbus_streams_behind_total",
                "Client publishes refused at streams.max_pending_bytes (the store behind).",
                stats.store_behind_total),
        counter("arqonbus_unrouted_total",
                "Messages acknowledged but routed nowhere: they named no room, or a room that "
                "does not exist (as ArqonBus does).", stats.unrouted_total),
        counter("arqonbus_slow_consumers_total",
                "Clients cut off because their outgoing buffer was full.",
                stats.slow_consumers_total),
        gauge("arqonbus_connections_active", "Clients attached to the bus now.",
              len(bus.clients)),
        counter("arqonbus_history_evicted_total",
                "History entries dropped at server.history_size, history_bytes or "
                "history_total_bytes.", bus.router.histories.evicted_total),
        gauge("arqonbus_history_bytes", "Bytes of frames history keeps now.",
              bus.router.histories.bytes),
        gauge("arqonbus_rooms", "Rooms that exist now.", len(bus.router.rooms)),
        gauge("arqonbus_channels", "Channels that exist now.", bus.router.channel_count()),
        gauge("arqonbus_uptime_seconds", "Seconds since the bus started.",
              round(time.time() - bus.started, 3)),
    ]
    samples.extend(
        counter("arqonbus_transport_connections_total", "Clients ever attached, by transport.",
                count, transport=transport)
        for transport, count in sorted(stats.by_transport.items()))
    return samples
