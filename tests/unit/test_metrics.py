"""Metric samples and the Prometheus text format (arqond/core/metrics.py)."""

from __future__ import annotations

from types import SimpleNamespace

from arqond.core import metrics
from tests.unit.harness import BusHarness


def test_rendering_groups_families_and_escapes_labels():
    text = metrics.render([
        metrics.counter("x_total", "Xs.", 3),
        metrics.gauge("y", "Y now.", 1.5),
        metrics.counter("z_total", "Zs.", 2, code="200"),
        metrics.counter("z_total", "Zs.", 1, code='4"0\\4'),
        metrics.counter("z_total", "Zs.", 0, code="a\nb"),
        metrics.gauge("flags", "A flag.", True, b="2", a="1"),
        metrics.gauge("whole", "A whole float.", 2.0),
    ])
    assert text == ("# HELP x_total Xs.\n# TYPE x_total counter\nx_total 3\n"
                    "# HELP y Y now.\n# TYPE y gauge\ny 1.5\n"
                    "# HELP z_total Zs.\n# TYPE z_total counter\n"
                    'z_total{code="200"} 2\nz_total{code="4\\"0\\\\4"} 1\n'
                    'z_total{code="a\\nb"} 0\n'
                    '# HELP flags A flag.\n# TYPE flags gauge\nflags{a="1",b="2"} 1\n'
                    "# HELP whole A whole float.\n# TYPE whole gauge\nwhole 2\n")


def test_counters_of_names_each_attribute_as_a_total():
    owner = SimpleNamespace(fired_total=4, drops=2)
    samples = metrics.counters_of(owner, "arqonbus_cron", {"fired_total": "Fired.",
                                                           "drops": "Dropped."})
    assert [(s.name, s.kind, s.value) for s in samples] == [
        ("arqonbus_cron_fired_total", "counter", 4), ("arqonbus_cron_drops_total", "counter", 2)]


def test_bus_samples_read_bus_stats():
    bus = BusHarness()
    sender = bus.connect(transport="ws")
    bus.connect(transport="control")
    sender.send({"type": "message", "payload": {"a": 1}})
    values = {(s.name, s.labels): s.value for s in metrics.bus_samples(bus.bus)}
    assert values[("arqonbus_messages_total", ())] == 1
    assert values[("arqonbus_deliveries_total", ())] == 1
    assert values[("arqonbus_connections_active", ())] == 2
    assert values[("arqonbus_transport_connections_total", (("transport", "control"),))] == 1
    assert values[("arqonbus_transport_connections_total", (("transport", "ws"),))] == 1
    assert (values[("arqonbus_rooms", ())], values[("arqonbus_channels", ())]) == (1, 7)
    assert values[("arqonbus_uptime_seconds", ())] >= 0
