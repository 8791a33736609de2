"""Run the arqond benchmark suite: ``python -m bench [--quick] [--only B1,B2] [--runs N]``.

Prints one table and writes bench/results.json. Every scenario starts its own arqond (port 0,
temporary dirs) and its peers, runs them in turn in the same run, and stops them all.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import orjson

from bench import bus_scenarios, moo_scenarios, procs, startup, stream_scenarios
from bench.stats import merge_runs, ratios, table

SCENARIOS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "B1": bus_scenarios.b1_fanout,
    "B2": bus_scenarios.b2_latency,
    "B3": moo_scenarios.b3_narrative,
    "B4": moo_scenarios.b4_inbox,
    "B5": moo_scenarios.b5_rpc,
    "B6": bus_scenarios.b6_idle_clients,
    "B7": startup.b7_startup,
    "B8": stream_scenarios.b8_streams,
}

FULL = {
    "runs": 3, "event_loops": ["asyncio", "uvloop"], "peers": ["nats", "mosquitto"],
    "cluster": True,
    "b1_messages": 5000, "b2_seconds": 5, "b3_paced_lines": 5000, "b3_burst_lines": 100000,
    "b4_writers": 50, "b4_paced_per_writer": 100, "b4_burst_per_writer": 2000,
    "b5_round_trips": 10000, "b6_clients": 10000, "b7_starts": 10, "b7_restart_seconds": 4.0,
    "b8_acks": 3000, "b8_rate": 1000, "b8_resume": 100000, "b8_history_bytes": 1 << 30,
}
# Under a minute: one run, asyncio only, no brokers and no cluster, smaller counts.
QUICK = {
    **FULL, "runs": 1, "event_loops": ["asyncio"], "peers": [], "cluster": False,
    "b1_messages": 1000,
    "b2_seconds": 2, "b3_paced_lines": 1000, "b3_burst_lines": 20000, "b4_writers": 50,
    "b4_paced_per_writer": 20, "b4_burst_per_writer": 1000, "b5_round_trips": 2000,
    "b6_clients": 1000, "b7_starts": 3, "b7_restart_seconds": 2.0,
    "b8_acks": 1000, "b8_resume": 20000, "b8_history_bytes": 50 << 20,
}
# Repeated ``runs`` times, the median shown; B6 and B7 take their own samples within one run.
REPEATED = ("B1", "B2", "B3", "B4", "B5")


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.machine())
    memory = next(int(line.split()[1]) // 1024 for line in open("/proc/meminfo")
                  if line.startswith("MemTotal"))
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip() \
        if procs.node_available() else None
    return {"cpu": model, "cores": os.cpu_count(), "memory_mib": memory,
            "kernel": platform.release(), "python": platform.python_version(), "node": node,
            "loadavg_start": os.getloadavg()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the reduced suite (< 1 minute)")
    parser.add_argument("--only", default="", help="comma-separated scenario ids, e.g. B1,B2")
    parser.add_argument("--runs", type=int, help="repetitions of B1 to B5 (median is shown)")
    parser.add_argument("--event-loops", help='comma-separated: "asyncio", "uvloop"')
    parser.add_argument("--output", default=str(procs.BENCH / "results.json"))
    parser.add_argument("--profile", metavar="DIR", type=Path,
                        help="record every arqond with py-spy into DIR (python -m bench.profile "
                             "DIR/*.txt summarises)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.runs:
        settings["runs"] = args.runs
    if args.event_loops:
        settings["event_loops"] = args.event_loops.split(",")
    if not procs.node_available():
        print("bench: node and bench/node_modules/ws are needed (make bench-deps)",
              file=sys.stderr)
        return 2
    procs.PROFILE_DIR = args.profile
    chosen = [s.strip().upper() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    procs.raise_fd_limit()
    # SIGTERM unwinds like Ctrl-C, so every daemon, broker and floor server is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    began = time.monotonic()
    about = machine()
    rows: list[dict[str, Any]] = []
    raw: dict[str, list[list[dict[str, Any]]]] = {}
    for scenario in chosen:
        runs = settings["runs"] if scenario in REPEATED else 1
        raw[scenario] = []
        for attempt in range(runs):
            started = time.monotonic()
            rows_of_run = SCENARIOS[scenario](settings)
            raw[scenario].append(rows_of_run + ratios(rows_of_run))
            print(f"bench: {scenario} run {attempt + 1}/{runs} took "
                  f"{time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        rows.extend(merge_runs(raw[scenario]))
    about["loadavg_end"] = os.getloadavg()
    about["seconds"] = round(time.monotonic() - began, 1)
    print(table(rows))
    print(f"\n{about['cores']} cores, {about['cpu']}; load average at start "
          f"{about['loadavg_start'][0]:.2f}, at end {about['loadavg_end'][0]:.2f}; "
          f"{about['seconds']} s")
    Path(args.output).write_bytes(orjson.dumps(
        {"machine": about, "settings": settings, "rows": rows, "runs": raw},
        option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
