"""One fan-out measurement over WebSockets: N subscribers in several load-generator processes,
one publisher (closed loop or paced), and the CPU each side spent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench import procs


@dataclass
class Fanout:
    delivered: int
    expected: int
    seconds: float
    latencies_ns: list[float] = field(default_factory=list)
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    closed: int = 0

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    def cpu_notes(self) -> dict[str, Any]:
        """Load-generator CPU share of the wall time and server CPU per delivered message."""
        return {"loadgen_cpu": round(self.client_cpu_s / self.seconds, 2) if self.seconds else None,
                "server_us_per_msg": round(self.server_cpu_s / self.delivered * 1e6, 2)
                if self.delivered else None}


def ws_fanout(url: str, server_pid: int | list[int], *, subscribers: int, total: int,
              rate: int = 0, window: int = 64, size: int = 200, processes: int = 2,
              join: str = "", warmup: int = 0, sub_urls: list[str] | None = None) -> Fanout:
    """Publish ``total`` frames on ``url`` to ``subscribers`` clients; rate 0 = as fast as
    they keep up. The first ``warmup`` frames are delivered and counted but give no latency
    sample. ``sub_urls``: the subscribers spread over these servers (the nodes of a cluster),
    one process each, instead of ``processes`` on ``url``; the CPU of every pid counts."""
    env = {"BENCH_WARMUP": str(warmup)}
    if join:
        env["BENCH_JOIN"] = join
    targets = sub_urls or [url] * processes
    shares = [subscribers // len(targets) + (1 if i < subscribers % len(targets) else 0)
              for i in range(len(targets))]
    subs = [procs.spawn_node("sub", target, share, total, env=env)
            for target, share in zip(targets, shares) if share]
    for sub in subs:
        procs.wait_ready(sub)
    pids = server_pid if isinstance(server_pid, list) else [server_pid]
    cpu_before = sum(map(procs.cpu_seconds, pids))
    publisher = procs.spawn_node("pub", url, total, rate, window, size, env=env)
    published = procs.result_of(publisher)
    results = [procs.result_of(sub) for sub in subs]
    server_cpu = sum(map(procs.cpu_seconds, pids)) - cpu_before
    delivered = sum(r["received"] for r in results)
    last = max((r["last_ns"] for r in results if r["received"]), default=published["started_ns"])
    latencies = [v for r in results for v in r["latencies_ns"]]
    return Fanout(delivered=delivered, expected=subscribers * total,
                  seconds=(last - published["started_ns"]) / 1e9, latencies_ns=latencies,
                  client_cpu_s=published["cpu_s"] + sum(r["cpu_s"] for r in results),
                  server_cpu_s=server_cpu, closed=sum(r["closed"] for r in results))
