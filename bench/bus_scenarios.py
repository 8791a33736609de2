"""B1 fan-out throughput, B2 latency at a fixed rate, B6 10,000 idle clients and one broadcast:
arqond against the floor server (and brokers, in peers.py), each pair from the same run."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

import orjson

from bench import peers, procs
from bench.fanout import ws_fanout
from bench.stats import latency_row, row

SUBSCRIBERS = 100
CLUSTER_NODES = 3
CLUSTER_LABEL = "arqond 3 nodes"
CLUSTER_NOTE = ("publisher on node 1, subscribers over 3 nodes joined by one nats-server -js; "
                "server CPU: the 3 nodes and NATS")


# arqond with its streams in memory only (no store): what durable streams cost, side by side.
MEMORY_ONLY = "memory-only arqond"


def ws_systems(settings: dict[str, Any]):
    """(label, event loop, kind) for arqond (durable streams, the default), arqond with streams
    in memory only, and the floor, per event loop."""
    for loop in settings["event_loops"]:
        suffix = "" if loop == "asyncio" else f"+{loop}"
        yield f"arqond{suffix}", loop, "arqond"
        if loop == "asyncio":
            yield MEMORY_ONLY, loop, "memory"
        yield f"floor{suffix}", loop, "floor"


@contextmanager
def started(kind: str, loop: str, config: dict[str, dict[str, Any]] | None = None
            ) -> Iterator[tuple[int, str]]:
    """(server pid, ws url) of a running arqond (with ``config``) or floor server."""
    if kind in ("arqond", "memory"):
        if kind == "memory":
            config = {**(config or {}), "streams": {"durability": "memory"}}
        with procs.arqond(config, event_loop=loop) as daemon:
            yield daemon.proc.pid, daemon.ws_url
    else:
        with procs.floor_server(loop) as (proc, url):
            yield proc.pid, url


def b1_fanout(settings: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    total = settings["b1_messages"]
    for label, loop, kind in ws_systems(settings):
        with started(kind, loop) as (pid, url):
            result = ws_fanout(url, pid, subscribers=SUBSCRIBERS, total=total)
        rows.append(row("B1", label, "delivered msgs/s", result.rate, "msg/s",
                        lost=result.expected - result.delivered, **result.cpu_notes()))
    if settings["cluster"]:
        rows.append(cluster_fanout("B1", total, 0, 0))
    return rows + peers.fanout_peers(settings, SUBSCRIBERS, total)


def cluster_fanout(scenario: str, total: int, rate: int, warmup: int) -> dict[str, Any]:
    """The same fan-out across 3 nodes of a cluster: the publisher on node 1, the subscribers
    spread over the 3 nodes; the server CPU is the nodes' and nats-server's together."""
    with procs.cluster(CLUSTER_NODES) as (nodes, nats, why_not):
        if nats is None:
            return row(scenario, CLUSTER_LABEL, "n/a", None, note=why_not)
        pids = [node.proc.pid for node in nodes] + [nats.pid]
        result = ws_fanout(nodes[0].ws_url, pids, subscribers=SUBSCRIBERS, total=total,
                           rate=rate, warmup=warmup, sub_urls=[node.ws_url for node in nodes])
    notes = {"lost": result.expected - result.delivered, **result.cpu_notes(),
             "note": CLUSTER_NOTE}
    if scenario == "B1":
        return row("B1", CLUSTER_LABEL, "delivered msgs/s", result.rate, "msg/s", **notes)
    return latency_row(scenario, CLUSTER_LABEL, result.latencies_ns, **notes)


def b2_latency(settings: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    # The first second at 1,000 msg/s warms every side up and gives no latency sample.
    warmup = 1000
    total = settings["b2_seconds"] * 1000 + warmup
    for label, loop, kind in ws_systems(settings):
        with started(kind, loop) as (pid, url):
            result = ws_fanout(url, pid, subscribers=SUBSCRIBERS, total=total, rate=1000,
                               warmup=warmup)
        rows.append(latency_row("B2", label, result.latencies_ns,
                                target="p50 ≤ 1, p99 ≤ 5" if kind != "floor" else None,
                                lost=result.expected - result.delivered, **result.cpu_notes()))
    if settings["cluster"]:
        rows.append(cluster_fanout("B2", total, 1000, warmup))
    rows.extend(peers.latency_peers(settings, SUBSCRIBERS, total, warmup))
    return rows


def b6_idle_clients(settings: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    count = settings["b6_clients"]
    for label, loop, kind in ws_systems(settings):
        if loop != "asyncio" or kind == "memory":
            continue
        # Every client is the same local user here: its connection quota (256 by default)
        # is raised to hold them all, as a deployment with such a user would.
        with started(kind, loop, {"quotas": {"connections": count + 1}}) as (pid, url):
            rss_idle = procs.rss_mb(pid)[0]
            clients = procs.spawn_node("idle", url, count)
            ready = orjson.loads(procs.wait_ready(clients, timeout=300))
            rss_connected = procs.rss_mb(pid)[0]
            assert clients.stdin is not None
            cpu_before = procs.cpu_seconds(pid)
            began = time.monotonic()
            clients.stdin.write("go\n")
            clients.stdin.flush()
            result = procs.result_of(clients, timeout=120)
            elapsed = time.monotonic() - began
            rss_after, rss_peak = procs.rss_mb(pid)
            cpu = procs.cpu_seconds(pid) - cpu_before
        rows.append(row("B6", label, "RSS with clients", rss_connected, "MiB",
                        max=rss_peak, target="≤ 300" if kind == "arqond" else None,
                        note=f"{rss_idle:.0f} MiB before; {ready['ready']} connected, "
                             f"{ready['failed']} failed, {ready['closed']} closed by it"))
        rows.append(row("B6", label, "received broadcast", result["received"], "clients",
                        expected=result["connected"] - 1, failed=result["failed"],
                        seconds=round(elapsed, 3), server_cpu_s=round(cpu, 3),
                        target=f"= {result['connected'] - 1}" if kind == "arqond" else None))
    return rows
