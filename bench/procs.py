"""Processes the bench starts (arqond, the floor, brokers, load generators) and what /proc says
about them: CPU seconds and resident memory, read without psutil."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import orjson

from bench.profile import Recording
from tests.conftest import DaemonProcess

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
NODE_LOAD = BENCH / "wsload.js"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Set by ``python -m bench --profile DIR``: every arqond started is recorded with py-spy.
PROFILE_DIR: Path | None = None


def raise_fd_limit() -> int:
    """Lift the soft fd limit to the hard one; children (arqond, node) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB from /proc/PID/status."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def arqond(config: dict[str, dict[str, Any]] | None = None, *, event_loop: str = "asyncio",
           env: dict[str, str] | None = None) -> Iterator[DaemonProcess]:
    """A real arqond on port 0 in temporary dirs, quiet logging, the chosen event loop."""
    # Info, not the harness's debug: listener addresses and "ready" show, per-client lines not.
    sections: dict[str, dict[str, Any]] = {"server": {"log_level": "info",
                                                      "stats_interval": 3600.0}}
    if event_loop != "asyncio":
        sections["server"]["event_loop"] = event_loop
    for section, body in (config or {}).items():
        sections.setdefault(section, {}).update(body)
    with tempfile.TemporaryDirectory(prefix="arqond-bench-") as tmp:
        daemon = DaemonProcess(Path(tmp), sections, env=env).start()
        recording = Recording(daemon.proc.pid, PROFILE_DIR) if PROFILE_DIR else None
        try:
            yield daemon
        finally:
            if recording:
                recording.stop()
            stop(daemon.proc)


@contextmanager
def cluster(nodes: int = 3, *, event_loop: str = "asyncio"
            ) -> Iterator[tuple[list[DaemonProcess], subprocess.Popen[bytes] | None, str]]:
    """``nodes`` arqond nodes joined through one nats-server with JetStream (a temporary
    store, a free loopback port): (the nodes, the NATS process, ""), or ([], None, why not)."""
    path = shutil.which("nats-server")
    if path is None:
        yield [], None, "nats-server not installed"
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-nats-") as tmp, ExitStack() as started:
        nats = subprocess.Popen([path, "-js", "-sd", tmp, "-a", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.callback(stop, nats)
        wait_port(port)
        members = [started.enter_context(arqond(
            {"cluster": {"nats_url": [f"nats://127.0.0.1:{port}"], "node": f"node{n + 1}"}},
            event_loop=event_loop)) for n in range(nodes)]
        yield members, nats, ""


@contextmanager
def floor_server(event_loop: str = "asyncio") -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen([sys.executable, str(BENCH / "floor_server.py"),
                             "--event-loop", event_loop],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "LISTENING":
            raise RuntimeError("floor server did not start")
        yield proc, f"ws://{line[1]}/"
    finally:
        stop(proc)


@contextmanager
def broker(kind: str) -> Iterator[tuple[subprocess.Popen[bytes] | None, str]]:
    """nats-server or mosquitto on a free loopback port; yields (None, reason) if absent."""
    binary = {"nats": "nats-server", "mqtt": "mosquitto"}[kind]
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(
        f"/usr/sbin/{binary}") else None)
    if path is None:
        yield None, f"{binary} not installed"
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp:
        if kind == "nats":
            argv = [path, "-a", "127.0.0.1", "-p", str(port)]
            url = f"nats://127.0.0.1:{port}"
        else:
            conf = Path(tmp) / "mosquitto.conf"
            conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                            "max_queued_messages 100000\n")
            argv = [path, "-c", str(conf)]
            url = f"mqtt://127.0.0.1:{port}"
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            yield proc, url
        finally:
            stop(proc)


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def node_available() -> bool:
    return shutil.which("node") is not None and (BENCH / "node_modules" / "ws").is_dir()


def spawn_node(*args: Any, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(["node", str(NODE_LOAD), *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def spawn_python(module: str, *args: Any, env: dict[str, str] | None = None
                 ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, **(env or {})})


def wait_ready(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """The child's first stdout line (its "ready" notice)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"load generator exited ({proc.wait()}) before it was ready")
    return line


def result_of(proc: subprocess.Popen[str], timeout: float = 120.0) -> dict[str, Any]:
    """The child's JSON result line; it exits after printing it."""
    out, _ = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"load generator exited ({proc.returncode}) without a result")
    return orjson.loads(lines[-1])
