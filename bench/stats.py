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


# Figures compared between arqond and every peer of the same scenario, inside each run.
RATIO_FIGURES = {
    "B1": (("delivered msgs/s", "value"),),
    "B2": (("latency", "p50"), ("latency", "p99")),
    "B3": (("latency", "p99"), ("burst lines/s", "value")),
    "B4": (("latency", "p99"), ("burst lines/s", "value")),
    "B5": (("latency", "p50"), ("latency", "p99")),
    "B6": (("RSS with clients", "value"),),
}
RATIO_TARGETS = {("B1", "floor", "value"): "≥ 0.70",
                 # Durable streams (the default) against streams in memory only (issue 15).
                 ("B1", "memory-only arqond", "value"): "≥ 0.80"}


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """arqond's figure over each peer's, pairing arqond+uvloop with floor+uvloop and plain
    arqond with every peer that names no event loop."""
    out = []
    for what, key in RATIO_FIGURES.get(rows[0]["id"] if rows else "", ()):
        same = [r for r in rows if r["what"] == what and isinstance(r.get(key), (int, float))]
        for mine in (r for r in same if r["system"].startswith("arqond")):
            loop = mine["system"][len("arqond"):]
            for other in same:
                peer = other["system"]
                if peer.startswith("arqond") or ("+" in peer) != bool(loop) or \
                        (loop and not peer.endswith(loop)) or not other[key]:
                    continue
                base = peer[:-len(loop)] if loop else peer
                out.append(row(mine["id"], f"{mine['system']} / {peer}", f"{what} ratio" if key == "value" else f"{what} {key} ratio",
                               mine[key] / other[key], "x",
                               target=RATIO_TARGETS.get((mine["id"], base, key))))
    return out


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
