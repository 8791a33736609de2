"""Test harness: the real arqond as a subprocess, on free ports, in temporary directories."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
LISTENER_RE = re.compile(r"LISTENER=(\S+) ADDRESS=(\S+)")
START_TIMEOUT = 15.0


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, body in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in body.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class DaemonProcess:
    """One running arqond; its stderr is collected line by line for assertions."""

    def __init__(self, tmp: Path, config: dict[str, dict[str, Any]] | None = None,
                 args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.moo_dir = tmp / "moo"
        self.log_dir = tmp / "log"
        self.state_dir = tmp / "state"
        for path in (self.moo_dir, self.log_dir, self.state_dir):
            path.mkdir(exist_ok=True)
        sections: dict[str, dict[str, Any]] = {
            "server": {"port": 0, "state_dir": str(self.state_dir), "log_level": "debug"},
            "moo": {"dir": str(self.moo_dir), "log_dir": str(self.log_dir)},
        }
        for section, body in (config or {}).items():
            sections.setdefault(section, {}).update(body)
        self.config_path = write_config(tmp / "arqond.toml", sections)
        self.args = args or []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ARQONBUS_")}
        self.env.update(env or {})
        self.lines: list[str] = []
        self.listeners: dict[str, str] = {}
        self.proc: subprocess.Popen[str] | None = None
        self._changed = threading.Condition()

    def start(self, wait_ready: bool = True, wrapper: list[str] | None = None,
              pass_fds: tuple[int, ...] = ()) -> "DaemonProcess":
        """Start arqond; ``wrapper`` is a command that execs it (to pass a listening socket as
        systemd does), ``pass_fds`` the descriptors the wrapper needs."""
        self.lines.clear()
        self.listeners.clear()
        self.proc = subprocess.Popen(
            [*(wrapper or []), sys.executable, "-m", "arqond", "--config", str(self.config_path),
             *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=self.env, cwd=ROOT, pass_fds=pass_fds)
        threading.Thread(target=self._read_stderr, args=(self.proc,), daemon=True).start()
        if wait_ready:
            self.wait_for_line("ready", START_TIMEOUT)
        return self

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip("\n")
            match = LISTENER_RE.search(line)
            with self._changed:
                if match:
                    self.listeners[match.group(1)] = match.group(2)
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, needle: str, timeout: float = 10.0, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if needle in line:
                        return line
                if self.proc is not None and self.proc.poll() is not None and \
                        not any(needle in line for line in self.lines[start:]):
                    raise AssertionError(f"arqond exited ({self.proc.returncode}) before "
                                         f"logging {needle!r}:\n" + "\n".join(self.lines))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no log line with {needle!r} within {timeout}s:\n"
                                         + "\n".join(self.lines))
                self._changed.wait(min(remaining, 0.2))

    @property
    def ws_url(self) -> str:
        return f"ws://{self.listeners['ws']}/"

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("arqond did not exit within 10 s of SIGTERM")


@pytest.fixture
def make_daemon(tmp_path):
    started: list[DaemonProcess] = []

    def factory(config: dict[str, dict[str, Any]] | None = None, *, args: list[str] | None = None,
                env: dict[str, str] | None = None, start: bool = True,
                name: str = "d") -> DaemonProcess:
        tmp = tmp_path / f"{name}{len(started)}"
        tmp.mkdir()
        daemon = DaemonProcess(tmp, config, args, env)
        started.append(daemon)
        return daemon.start() if start else daemon

    yield factory
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()


class Peer:
    """A raw WebSocket client that reads JSON frames with a deadline."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.welcome: dict[str, Any] = {}

    @property
    def id(self) -> str:
        return self.welcome["payload"]["client_id"]

    async def send(self, frame: Any) -> None:
        await self.connection.send(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        return orjson.loads(await asyncio.wait_for(self.connection.recv(), timeout))

    async def recv_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame, which must be of type ``kind``."""
        frame = await self.recv(timeout)
        assert frame["type"] == kind, frame
        return frame

    async def expect_silence(self, seconds: float = 0.3) -> None:
        try:
            frame = await asyncio.wait_for(self.connection.recv(), seconds)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"expected no frame, got {frame}")

    async def command(self, name: str, args: dict[str, Any] | None = None,
                      **extra: Any) -> dict[str, Any]:
        """Send a command; return its response after checking the command_response ack."""
        frame = {"type": "command", "command": name, "args": args or {}, **extra}
        await self.send(frame)
        response = await self.recv_type("response")
        ack = await self.recv_type("command_response")
        assert ack["id"] == response["request_id"], (response, ack)
        assert ack["payload"] == {"result": "ok"}
        return response

    async def close(self) -> None:
        await self.connection.close()


@pytest.fixture
async def connect_peer():
    opened: list[Peer] = []

    async def factory(url: str, **kwargs: Any) -> Peer:
        connection = await connect(url, open_timeout=5, **kwargs)
        peer = Peer(connection)
        peer.welcome = await peer.recv()
        opened.append(peer)
        return peer

    yield factory
    for peer in opened:
        await peer.connection.close()
