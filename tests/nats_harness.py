"""A real nats-server for the cluster's tests: JetStream on (-js), a temporary store, a free
loopback port, stopped by its pid. Several arqond nodes join it as a cluster."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PortTaken, _free_ports, on_free_ports, scaled

READY_LINE = "Server is ready"


class NatsServer:
    """One nats-server process; ``start`` again (same port, same store) after ``stop`` or
    ``kill`` brings back the same server with its JetStream streams."""

    def __init__(self, tmp: Path) -> None:
        self.store = tmp / "jetstream"
        self.store.mkdir(parents=True, exist_ok=True)
        self.port: int | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._changed = threading.Condition()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> "NatsServer":
        if self.port is None:
            return on_free_ports(1, lambda ports: self._start(ports[0]))
        return self._start(self.port)

    def _start(self, port: int) -> "NatsServer":
        self.port = port
        self.lines = []
        self.proc = subprocess.Popen(
            ["nats-server", "-js", "-sd", str(self.store), "-a", "127.0.0.1", "-p", str(port),
             "-n", "arqond-test"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + scaled(10)
        with self._changed:
            while not any(READY_LINE in line for line in self.lines):
                if self.proc.poll() is not None:
                    if any("address already in use" in line for line in self.lines):
                        raise PortTaken("\n".join(self.lines))
                    raise AssertionError("nats-server exited:\n" + "\n".join(self.lines))
                assert time.monotonic() < deadline, "nats-server not ready:\n" + \
                    "\n".join(self.lines)
                self._changed.wait(0.2)
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def stop(self) -> None:
        """SIGTERM, as systemctl stop does, and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(scaled(10))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def nats_server(tmp_path):
    """A running nats-server with JetStream; skipped where the package is missing."""
    if shutil.which("nats-server") is None:
        pytest.skip("nats-server is not installed (make system-deps installs it)")
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.kill()


@pytest.fixture
def nats_unstarted(tmp_path):
    """A nats-server on a port picked now, not started yet: a cluster whose NATS is away."""
    if shutil.which("nats-server") is None:
        pytest.skip("nats-server is not installed (make system-deps installs it)")
    server = NatsServer(tmp_path / "nats")
    server.port = _free_ports(1)[0]
    yield server
    server.kill()


def cluster_config(server: NatsServer, node: str, **cluster: Any) -> dict[str, dict[str, Any]]:
    """The sections of a node joining ``server`` as ``node``."""
    return {"cluster": {"nats_url": [server.url], "node": node, **cluster}}
