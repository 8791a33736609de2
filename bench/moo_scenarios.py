"""B3 narrative bridge, B4 FIFO inboxes, B5 Zgent socket RPC, written against DESIGN.md §3.

Each scenario first checks that the feature answers on this build (a probe line reaches its
channel, the inbox FIFO or socket appears) and reports "n/a (not on this branch)" otherwise, so
the same suite runs before and after the MOO and narrative work is merged.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from websockets.sync.client import connect

from bench import procs, rpc
from bench.lines import LineReader, write_burst, write_paced
from bench.stats import latency_row, row

ZGENT = "bench"
NOT_HERE = "n/a (not on this branch)"


def na(scenario: str, system: str, reason: str) -> dict[str, Any]:
    return row(scenario, system, "n/a", None, note=f"{NOT_HERE}: {reason}")


def _command(ws: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    ws.send(orjson.dumps({"type": "command", "command": name, "args": args}).decode())
    while True:
        frame = orjson.loads(ws.recv(timeout=5))
        if frame.get("type") in ("response", "error"):
            return frame


def channel_probe(daemon: Any, target: str, append: Any, wait: float = 2.0) -> bool:
    """Join ``target``, call ``append()`` and see whether anything arrives there."""
    room, channel = target.split(":")
    with connect(daemon.ws_url, open_timeout=5) as ws:
        ws.recv(timeout=5)  # welcome
        _command(ws, "join_channel", {"room": room, "channel": channel})
        append()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                frame = orjson.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                return False
            if frame.get("room") == room and frame.get("channel") == channel:
                return True
    return False


def register_zgent(daemon: Any, name: str = ZGENT, wait: float = 1.5) -> str | None:
    """Register a Zgent by command, else by creating its narrative log; None once its inbox
    FIFO exists, else the reason it does not."""
    with connect(daemon.ws_url, open_timeout=5) as ws:
        ws.recv(timeout=5)
        reply = _command(ws, "zgent.register", {"name": name})
    inbox = daemon.moo_dir / f"{name}-inbox"
    if reply.get("status") != "success":
        (daemon.log_dir / f"{name}-narrative.jsonl").touch()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if inbox.exists() and stat.S_ISFIFO(inbox.stat().st_mode):
            return None
        time.sleep(0.05)
    error = reply.get("error") or reply.get("payload", {}).get("message")
    return f"no {inbox.name} FIFO after zgent.register ({error}) or a new narrative log"


def ws_subscriber(daemon: Any, target: str, expect: int) -> subprocess.Popen[str]:
    sub = procs.spawn_node("sub", daemon.ws_url, 1, expect,
                           env={"BENCH_JOIN": target, "BENCH_IDLE_TIMEOUT_MS": "3000"})
    procs.wait_ready(sub)
    return sub


# -- B3 ----------------------------------------------------------------------------------------

def b3_narrative(settings: dict[str, Any]) -> list[dict[str, Any]]:
    paced, burst = settings["b3_paced_lines"], settings["b3_burst_lines"]
    return b3_arqond(paced, burst) + b3_shell_peers(paced, burst)


def b3_arqond(paced: int, burst: int) -> list[dict[str, Any]]:
    rows = []
    with procs.arqond() as daemon:
        path = daemon.log_dir / f"{ZGENT}-narrative.jsonl"
        path.touch()
        time.sleep(0.2)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            if not channel_probe(daemon, f"{ZGENT}:narrative",
                                 lambda: os.write(fd, b'{"from":"bench","probe":true}\n')):
                return [na("B3", "arqond", "no line appended to NAME-narrative.jsonl reached "
                           "NAME:narrative")]
            cpu_before = procs.cpu_seconds(daemon.proc.pid)
            sub = ws_subscriber(daemon, f"{ZGENT}:narrative", paced)
            write_paced(fd, paced, 1000)
            result = procs.result_of(sub)
            rows.append(latency_row("B3", "arqond", result["latencies_ns"], target="p99 ≤ 5",
                                    lost=paced - result["received"], note="1,000 lines/s"))
            sub = ws_subscriber(daemon, f"{ZGENT}:narrative", burst)
            began = time.monotonic_ns()
            write_burst(fd, burst, first=paced)
            result = procs.result_of(sub)
            delivered = paced + result["received"]
            rows.append(burst_row("B3", "arqond", burst, result["received"], began,
                                  result["last_ns"], target="≥ 50,000; 0 lost",
                                  server_us_per_msg=round((procs.cpu_seconds(daemon.proc.pid)
                                                           - cpu_before) / delivered * 1e6, 2)))
        finally:
            os.close(fd)
    return rows


def burst_row(scenario: str, system: str, sent: int, received: int, began_ns: int,
              last_ns: int, **extra: Any) -> dict[str, Any]:
    seconds = (last_ns - began_ns) / 1e9 if received else 0
    return row(scenario, system, "burst lines/s", received / seconds if seconds > 0 else 0.0,
               "lines/s", lost=sent - received, **extra)


SHELL_PEERS = {
    "tail -f | jq": "exec tail -n 0 -f {path} | jq -c --unbuffered .",
    "inotifywait loop": "inotifywait -q -m -e modify {path} | "
                        "while read -r _; do tail -n 1 {path}; done",
}


def b3_shell_peers(paced: int, burst: int) -> list[dict[str, Any]]:
    """The seed's own ways of following a narrative log, on the same line counts."""
    rows = []
    for label, command in SHELL_PEERS.items():
        with tempfile.TemporaryDirectory(prefix="bench-shell-") as tmp:
            path = Path(tmp) / "peer-narrative.jsonl"
            path.touch()
            shell = subprocess.Popen(["bash", "-c", command.format(path=path)],
                                     stdout=subprocess.PIPE, start_new_session=True)
            try:
                time.sleep(0.5)  # let tail/inotifywait set their watches
                assert shell.stdout is not None
                reader = LineReader(shell.stdout)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                write_paced(fd, paced, 1000)
                reader.wait_count(paced)
                paced_latencies = list(reader.latencies)
                rows.append(latency_row("B3", label, paced_latencies,
                                        lost=paced - len(paced_latencies), note="1,000 lines/s"))
                reader.latencies.clear()
                began = time.monotonic_ns()
                write_burst(fd, burst, first=paced)
                received = reader.wait_count(burst)
                rows.append(burst_row("B3", label, burst, received, began, reader.last))
                os.close(fd)
            finally:
                os.killpg(shell.pid, 15)
                shell.wait()
    return rows


# -- B4 ----------------------------------------------------------------------------------------

class Writers:
    """FIFO writer processes (``bench.lines``), started, then released together by ``release``
    (starting fifty interpreters takes seconds on a busy host: the reader is made ready
    after that, so its idle timeout does not run out before the first line).

    Paced writers (``rate`` lines/s each) are phased evenly, writer i starting i/writers of an
    interval after the first, so the FIFO sees one steady stream of writers x rate lines/s
    from all of them in turn rather than all of them at once every interval. Each writer stays
    alive after its last line until ``finish``: fifty interpreters tearing down at once would
    otherwise compete for the CPU with the last lines being measured.
    """

    def __init__(self, path: Path, writers: int, per_writer: int, rate: float) -> None:
        self.spawned = [procs.spawn_python("bench.lines", path, i, per_writer, rate)
                        for i in range(writers)]
        for writer in self.spawned:
            procs.wait_ready(writer)
        self.rate = rate
        self.released = 0

    def release(self) -> "Writers":
        self.released = time.monotonic_ns()
        first_write = self.released + 50_000_000  # every writer has read its line by then
        writers, rate = len(self.spawned), self.rate
        for i, writer in enumerate(self.spawned):
            assert writer.stdin is not None
            writer.stdin.write(f"{first_write + int(i * 1e9 / rate / writers)}\n" if rate
                               else "\n")
            writer.stdin.flush()
        return self

    def finish(self) -> float:
        """Let the writers exit; their CPU seconds."""
        return sum(procs.result_of(w)["cpu_s"] for w in self.spawned)


def b4_inbox(settings: dict[str, Any]) -> list[dict[str, Any]]:
    writers, paced_each, burst_each = (settings["b4_writers"], settings["b4_paced_per_writer"],
                                       settings["b4_burst_per_writer"])
    return (b4_arqond(writers, paced_each, burst_each)
            + b4_raw_fifo(writers, paced_each, burst_each))


def b4_arqond(writers: int, paced_each: int, burst_each: int) -> list[dict[str, Any]]:
    paced_total, burst_total = writers * paced_each, writers * burst_each
    rate_each = 1000 / writers
    rows = []
    with procs.arqond() as daemon:
        missing = register_zgent(daemon)
        if missing:
            return [na("B4", "arqond", missing)]
        inbox = daemon.moo_dir / f"{ZGENT}-inbox"
        cpu_before = procs.cpu_seconds(daemon.proc.pid)
        paced = Writers(inbox, writers, paced_each, rate_each)
        sub = ws_subscriber(daemon, f"{ZGENT}:inbox", paced_total)
        paced.release()
        result = procs.result_of(sub)
        load_cpu = paced.finish()
        rows.append(latency_row("B4", "arqond", result["latencies_ns"], target="p99 ≤ 2",
                                lost=paced_total - result["received"],
                                note=f"{writers} writers, 1,000 lines/s in all"))
        burst = Writers(inbox, writers, burst_each, 0)
        sub = ws_subscriber(daemon, f"{ZGENT}:inbox", burst_total)
        burst.release()
        result = procs.result_of(sub)
        load_cpu += burst.finish()
        delivered = paced_total + result["received"]
        rows.append(burst_row("B4", "arqond", burst_total, result["received"],
                              burst.released, result["last_ns"], target="≥ 50,000; 0 lost",
                              writers_cpu_s=round(load_cpu, 2),
                              server_us_per_msg=round((procs.cpu_seconds(daemon.proc.pid)
                                                       - cpu_before) / delivered * 1e6, 2)))
    return rows


def b4_raw_fifo(writers: int, paced_each: int, burst_each: int) -> list[dict[str, Any]]:
    """The physical floor: the same writers into a bare FIFO that this process reads."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-fifo-") as tmp:
        path = Path(tmp) / "raw-inbox"
        os.mkfifo(path)
        # Read-write open: the FIFO always has a reader and a writer, as arqond keeps it.
        stream = os.fdopen(os.open(path, os.O_RDWR), "rb", buffering=65536)
        reader = LineReader(stream)
        total = writers * paced_each
        paced = Writers(path, writers, paced_each, 1000 / writers).release()
        reader.wait_count(total)
        paced.finish()
        rows.append(latency_row("B4", "raw FIFO", list(reader.latencies),
                                lost=total - len(reader.latencies)))
        reader.latencies.clear()
        total = writers * burst_each
        burst = Writers(path, writers, burst_each, 0).release()
        received = reader.wait_count(total)
        burst.finish()
        rows.append(burst_row("B4", "raw FIFO", total, received, burst.released, reader.last))
    return rows


# -- B5 ----------------------------------------------------------------------------------------

def handler(mode: str, target: str) -> tuple[subprocess.Popen[str], str | None]:
    proc = procs.spawn_python("bench.rpc", mode, target)
    first = procs.wait_ready(proc).strip()
    return proc, None if first == "ready" else first


def b5_rpc(settings: dict[str, Any]) -> list[dict[str, Any]]:
    count = settings["b5_round_trips"]
    rows = []
    with procs.arqond() as daemon:
        missing = register_zgent(daemon)
        sock = daemon.moo_dir / f"{ZGENT}.sock"
        if missing is None and not sock.exists():
            missing = f"no {sock.name} socket for a registered Zgent"
        if missing:
            rows.append(na("B5", "arqond", missing))
        else:
            proc, refused = handler("zgent", str(sock))
            try:
                if refused:
                    rows.append(na("B5", "arqond", f"arqon.serve refused: {refused}"))
                else:
                    cpu_before = procs.cpu_seconds(daemon.proc.pid)
                    latencies = rpc.unix_round_trips(str(sock), count)
                    cpu = procs.cpu_seconds(daemon.proc.pid) - cpu_before
                    rows.append(latency_row("B5", "arqond", latencies, target="p50 ≤ 0.2, p99 ≤ 1",
                                            server_us_per_msg=round(cpu / count * 1e6, 2)))
            finally:
                procs.stop(proc)
    with tempfile.TemporaryDirectory(prefix="bench-sock-") as tmp:
        path = str(Path(tmp) / "raw.sock")
        proc, _ = handler("echo", path)
        try:
            rows.append(latency_row("B5", "raw socket", rpc.unix_round_trips(path, count)))
        finally:
            procs.stop(proc)
    if settings["cluster"]:
        rows.append(cluster_rpc(count))
    rows.extend(nats_rpc(count))
    return rows


def cluster_rpc(count: int) -> dict[str, Any]:
    """The same round trips across nodes: the Zgent and its handler on node 2, the requests on
    node 1's socket for it, which passes them on through NATS request/reply."""
    label = "arqond 3 nodes"
    with procs.cluster(3) as (nodes, nats, why_not):
        if nats is None:
            return na("B5", label, why_not)
        serving, asking = nodes[1], nodes[0]
        missing = register_zgent(serving)
        if missing:
            return na("B5", label, missing)
        proc, refused = handler("zgent", str(serving.moo_dir / f"{ZGENT}.sock"))
        try:
            if refused:
                return na("B5", label, f"arqon.serve refused: {refused}")
            sock = asking.moo_dir / f"{ZGENT}.sock"
            deadline = time.monotonic() + 15
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.1)     # the cluster's registry reaches node 1
            pids = [node.proc.pid for node in nodes] + [nats.pid]
            cpu_before = sum(map(procs.cpu_seconds, pids))
            latencies = rpc.unix_round_trips(str(sock), count)
            cpu = sum(map(procs.cpu_seconds, pids)) - cpu_before
        finally:
            procs.stop(proc)
    return latency_row("B5", label, latencies, server_us_per_msg=round(cpu / count * 1e6, 2),
                       note="asked on node 1, served on node 2, through NATS")


def nats_rpc(count: int) -> list[dict[str, Any]]:
    import asyncio

    with procs.broker("nats") as (server, url):
        if server is None:
            return [row("B5", "nats", "n/a", None, note=url)]
        proc, _ = handler("nats", url)
        try:
            latencies = asyncio.run(rpc.nats_round_trips(url, count))
        finally:
            procs.stop(proc)
    return [latency_row("B5", "nats", latencies, note="nats-py request/reply")]
