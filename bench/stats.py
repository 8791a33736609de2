"""Summaries: percentiles of one run, medians over repeated runs, and the printed table."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any, Iterable

NUMERIC = ("value", "p50", "p99", "max", "lost", "server_us_per_msg", "loadgen_cpu")


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of unsorted values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


def latency_row(scenario: str, system: str, latencies_ns: Iterable[float], **extra: Any
                ) -> dict[str, Any]:
    values = [v / 1e6 for v in latencies_ns]
    return {"id": scenario, "system": system, "what": "latency", "unit": "ms",
            "p50": percentile(values, 0.50), "p99": percentile(values, 0.99),
            "max": max(values) if values else float("nan"), "samples": len(values), **extra}


def row(scenario: str, system: str, what: str, value: Any, unit: str = "", **extra: Any
        ) -> dict[str, Any]:
    return {"id": scenario, "system": system, "what": what, "value": value, "unit": unit, **extra}


def merge_runs(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (id, system, what): the median of each figure over the runs it appears in."""
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for rows in runs:
        for one in rows:
            grouped[(one["id"], one["system"], one["what"])].append(one)
    merged = []
    for same in grouped.values():
        out = dict(same[-1])
        out["runs"] = len(same)
        for key in NUMERIC:
            numbers = [r[key] for r in same if isinstance(r.get(key), (int, float))
                       and not isinstance(r.get(key), bool)]
            if numbers:
                out[key] = statistics.median(numbers)
        merged.append(out)
    return merged


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    return str(value)


def _cpu(one: dict[str, Any]) -> str:
    """Server CPU per delivered message and the load generator's share of the cores."""
    parts = []
    if one.get("server_us_per_msg") is not None:
        parts.append(f"server {one['server_us_per_msg']:.1f} µs/msg")
    if one.get("loadgen_cpu") is not None:
        parts.append(f"loadgen {one['loadgen_cpu']:.2f} cores")
    return ", ".join(parts)


def table(rows: list[dict[str, Any]]) -> str:
    headers = ("id", "system", "what", "value", "p50", "p99", "max", "unit", "lost", "target",
               "cpu", "note")
    cells = [[_fmt(r.get(h)) if h != "cpu" else _cpu(r) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(cell, widths)) for cell in cells]
    return "\n".join(lines)
