"""Test harness: the real arqond as a subprocess, on free ports, in temporary directories."""

from __future__ import annotations

import array
import asyncio
import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import orjson
import pytest
from websockets.asyncio.client import connect

from arqond import __version__

ROOT = Path(__file__).resolve().parent.parent
LISTENER_RE = re.compile(r"LISTENER=(\S+) ADDRESS=(\S+)")
T = TypeVar("T")


def _timeout_factor() -> float:
    text = os.environ.get("ARQOND_TESTS_TIMEOUT_FACTOR", "1")
    try:
        factor = float(text)
    except ValueError:
        factor = 0.0
    if not factor > 0:
        raise pytest.UsageError(f"ARQOND_TESTS_TIMEOUT_FACTOR={text!r}: must be a number > 0")
    return factor


# Every wait the tests make (a log line, a frame, a silence window, a subprocess) is stretched
# by this one factor: a slow shared CI machine sets ARQOND_TESTS_TIMEOUT_FACTOR=3 once instead
# of every wait being tuned for the fastest machine. Read once; the helpers below apply it.
TIMEOUT_FACTOR = _timeout_factor()


def scaled(seconds: float) -> float:
    """``seconds`` stretched by ARQOND_TESTS_TIMEOUT_FACTOR: for every wait a test makes."""
    return seconds * TIMEOUT_FACTOR


async def settle(seconds: float) -> None:
    """A fixed pause (time passing is the point), stretched like every other wait."""
    await asyncio.sleep(scaled(seconds))


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 10.0, *,
                     done: Callable[[T], bool] = bool) -> T:
    """``await check()`` until ``done`` says its value is the one awaited (something
    true, by default), or the scaled timeout passes; the last value either way, for the
    test's assertion to show."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(timeout)
    while True:
        found = await check()
        if done(found) or loop.time() > deadline:
            return found
        await asyncio.sleep(0.1)


def pytest_collection_modifyitems(config, items):
    """pytest-timeout's per-test limit (timeout in pyproject.toml, timeout marks) scales too."""
    if TIMEOUT_FACTOR == 1:
        return
    default = float(config.getoption("timeout", None) or config.getini("timeout") or 0)
    for item in items:
        marker = item.get_closest_marker("timeout")
        limit = default if marker is None else \
            float(marker.args[0] if marker.args else marker.kwargs.get("timeout", 0))
        if limit > 0:
            item.add_marker(pytest.mark.timeout(scaled(limit)), append=False)


START_TIMEOUT = 15.0    # seconds for arqond to log that it is ready (scaled, as every wait)
# The whole ready line: "ready" alone is also in "Address already in use".
READY_LINE = f"arqond {__version__} ready"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # inline table, e.g. one [zgents.NAME] under [zgents]
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, body in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in body.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def free_ports(count: int) -> list[int]:
    """Local ports nothing listens on right now, for a daemon whose config must name them."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def fixed_ports() -> dict[str, dict[str, int]]:
    """Config sections with real port numbers (not 0), so that a client can read them."""
    ws, telemetry, http = free_ports(3)
    return {"server": {"port": ws, "telemetry_port": telemetry, "http_port": http}}


def isolated_sections(tmp: Path) -> dict[str, dict[str, Any]]:
    """Config sections that keep a test's arqond off every system path and fixed port: free
    ports, and the MOO, log and state dirs and the control socket under ``tmp``."""
    for name in ("moo", "log", "state"):
        (tmp / name).mkdir(exist_ok=True)
    return {
        "server": {"port": 0, "telemetry_port": 0, "http_port": 0, "log_level": "debug",
                   "state_dir": str(tmp / "state"), "control_socket": str(tmp / "control.sock"),
                   "bus_socket": str(tmp / "bus.sock"),
                   # The legacy initial room, which most tests were written with; the tests of
                   # the default (no auto-join, as ArqonBus's clients expect) turn it off.
                   "default_channel": "science:general"},
        "moo": {"dir": str(tmp / "moo"), "log_dir": str(tmp / "log")},
    }


class DaemonProcess:
    """One running arqond; its stderr is collected line by line for assertions."""

    def __init__(self, tmp: Path, config: dict[str, dict[str, Any]] | None = None,
                 args: list[str] | None = None, env: dict[str, str] | None = None,
                 wrapper: list[str] | None = None) -> None:
        self.tmp = tmp
        self.moo_dir = tmp / "moo"
        self.log_dir = tmp / "log"
        self.state_dir = tmp / "state"
        sections = isolated_sections(tmp)
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
        self._stderr_read = False   # to its end: no line of the running process is still to come
        # How to launch: a wrapper in front of the command (systemd-socket-activate, setpriv,
        # sh to set LISTEN_PID) and extra Popen arguments (pass_fds, preexec_fn).
        self.prefix: list[str] = wrapper or []
        self.popen_extra: dict[str, Any] = {}

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "arqond", "--config", str(self.config_path), *self.args]

    def start(self, wait_ready: bool = True) -> "DaemonProcess":
        self.lines.clear()
        self.listeners.clear()
        self._stderr_read = False
        self.proc = subprocess.Popen(
            [*self.prefix, *self.command],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=self.env, cwd=ROOT, **self.popen_extra)
        threading.Thread(target=self._read_stderr, args=(self.proc,), daemon=True).start()
        if wait_ready:
            self.wait_listening(READY_LINE, START_TIMEOUT)
        return self

    def wait_listening(self, needle: str, timeout: float = 10.0) -> str:
        """wait_for_line, for the line that says the process listens: PortTaken (see
        on_free_ports) when it exited instead because a port it was given is in use."""
        try:
            return self.wait_for_line(needle, timeout)
        except AssertionError as failed:
            if any("Address already in use" in line for line in self.lines):
                raise PortTaken(str(failed)) from None
            raise

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
            if proc is self.proc:
                self._stderr_read = True
            self._changed.notify_all()

    def wait_for_line(self, needle: str, timeout: float = 10.0, start: int = 0) -> str:
        """The first line from ``start`` on with ``needle``, waiting ``timeout`` (scaled)."""
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if needle in line:
                        return line
                if self._stderr_read and self.proc is not None and \
                        self.proc.poll() is not None:
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

    @property
    def telemetry_url(self) -> str:
        return f"ws://{self.listeners['telemetry']}/"

    @property
    def http_url(self) -> str:
        return f"http://{self.listeners['http']}"

    @property
    def http_address(self) -> tuple[str, int]:
        host, _, port = self.listeners["http"].rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def control_path(self) -> str:
        return self.listeners["control"]

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as after a crash or the OOM killer."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"arqond did not exit within {scaled(timeout)} s of SIGTERM")


@pytest.fixture
def make_daemon(tmp_path):
    started: list[DaemonProcess] = []

    def factory(config: dict[str, dict[str, Any]] | None = None, *, args: list[str] | None = None,
                env: dict[str, str] | None = None, start: bool = True,
                name: str = "d", wrapper: list[str] | None = None) -> DaemonProcess:
        tmp = tmp_path / f"{name}{len(started)}"
        tmp.mkdir()
        daemon = DaemonProcess(tmp, config, args, env, wrapper)
        started.append(daemon)
        return daemon.start() if start else daemon

    yield factory
    for daemon in started:
        daemon.kill_if_running()


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory):
    """One arqond per configuration for the rows of a module's tables that each leave it as
    they found it (requests it must refuse, read-only queries of the adapters' own rules):
    one start per module instead of one per row. Rules of the core are tables in tests/unit
    instead; a test that changes what the daemon holds takes ``daemon`` or ``make_daemon``."""
    started: dict[bytes, DaemonProcess] = {}

    def get(config: dict[str, dict[str, Any]] | None = None) -> DaemonProcess:
        key = orjson.dumps(config or {}, option=orjson.OPT_SORT_KEYS)
        if key not in started:
            started[key] = DaemonProcess(tmp_path_factory.mktemp("shared"), config).start()
        return started[key]

    yield get
    for daemon in started.values():
        daemon.kill_if_running()


class Notification:
    """One datagram on the notify socket: its fields, the sender's pid, the fds it carried."""

    def __init__(self, data: bytes, pid: int, fds: list[int]) -> None:
        self.fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
        self.pid = pid
        self.fds = fds

    def __repr__(self) -> str:
        return f"Notification({self.fields}, pid={self.pid}, fds={self.fds})"


class NotifySocket:
    """A NOTIFY_SOCKET owned by the test, as systemd sets it up: SOCK_DGRAM, SO_PASSCRED."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.received: list[Notification] = []

    def receive(self, timeout: float = 10.0) -> Notification:
        return self._receive(scaled(timeout))

    def _receive(self, timeout: float) -> Notification:
        self.sock.settimeout(timeout)
        fd_space = socket.CMSG_SPACE(16 * array.array("i").itemsize)
        cred_space = socket.CMSG_SPACE(struct.calcsize("3i"))
        data, ancillary, _, _ = self.sock.recvmsg(4096, fd_space + cred_space)
        pid, fds = 0, []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[:struct.calcsize("3i")])[0]
            elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
        note = Notification(data, pid, fds)
        self.received.append(note)
        return note

    def until(self, key: str, timeout: float = 10.0) -> Notification:
        """Receive until a message with field ``key`` arrives; return that message."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            note = self._receive(max(deadline - time.monotonic(), 0.01))
            if key in note.fields:
                return note

    def close(self) -> None:
        for note in self.received:
            for fd in note.fds:
                with contextlib.suppress(OSError):  # the test may have closed it already
                    os.close(fd)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    listener = NotifySocket(tmp_path / "notify.sock")
    yield listener
    listener.close()
# -- MOO helpers: Zgent sockets and the arqon subcommands of arqond/cli/moo.py ---------------

def arqon_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "arqond.cli", *args]


def run_arqon(daemon: DaemonProcess, *args: str, timeout: float = 30,
              **kwargs: Any) -> subprocess.CompletedProcess:
    env = {**daemon.env, "ARQONBUS_CONFIG": str(daemon.config_path)}
    if "ws" in daemon.listeners:
        env["ARQONBUS_WS_URL"] = daemon.ws_url
    return subprocess.run(arqon_command(*args), capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=scaled(timeout), **kwargs)


def sh(script: str, timeout: float = 30, **kwargs: Any) -> subprocess.CompletedProcess:
    """A shell snippet as a user would type it (the seed's echo/socat/jq examples)."""
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          timeout=scaled(timeout), **kwargs)


def as_user(uid: int, gid: int) -> list[str]:
    """The command prefix that runs what follows as ``uid`` in group ``gid`` alone."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]


NOBODY = 65534
AS_NOBODY = as_user(NOBODY, NOBODY)   # nobody, in nogroup: the MOO group where tests say so


def run_as_nobody(daemon, moo_dir: str, *args: str, group: int = 65534,
                  env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess:
    """arqon as uid 65534, its MOO dir from the environment (the test's config is private),
    with ``env`` on top."""
    if shutil.which("setpriv") is None or os.getuid() != 0:
        pytest.skip("needs root and setpriv to run arqon as another uid")
    env = {**daemon.env, "ARQONBUS_CONFIG": os.devnull, "ARQONBUS_MOO_DIR": moo_dir,
           "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([*as_user(NOBODY, group), *arqon_command(*args)],
                          capture_output=True, text=True, env=env, cwd="/",
                          timeout=scaled(30), **kwargs)


def cli_env(daemon, **extra: str) -> dict[str, str]:
    return {**daemon.env, "ARQONBUS_CONFIG": str(daemon.config_path), **extra}


class Serve:
    """`arqon serve` as a subprocess (behind ``prefix``, such as AS_NOBODY), its stderr
    collected line by line."""

    def __init__(self, daemon, *args: str, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None) -> None:
        self.process = subprocess.Popen([*(prefix or []), *arqon_command("serve", *args)],
                                        cwd=ROOT, env=env or cli_env(daemon),
                                        stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.closed = False
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def wait_for(self, needle: str, count: int = 1, timeout: float = 20) -> list[str]:
        """The lines with ``needle`` once there are ``count`` of them."""
        deadline = time.monotonic() + scaled(timeout)
        with self.changed:
            while len(found := [line for line in self.lines if needle in line]) < count:
                assert not self.closed and time.monotonic() < deadline, (
                    f"no {needle!r} x{count} from arqon serve: {self.lines}")
                self.changed.wait(0.2)
        return found

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(scaled(20))


@pytest.fixture
def serving():
    started: list[Serve] = []

    def start(daemon, *args: str, **kwargs: Any) -> Serve:
        serve = Serve(daemon, *args, **kwargs)
        started.append(serve)
        serve.wait_for("arqon: serving ")
        return serve

    yield start
    for serve in started:
        serve.stop()


class TmuxServer:
    """A tmux server of a test's own, never a user's: its socket under ``tmpdir``
    (TMUX_TMPDIR, so that a plain ``tmux``, as a handler runs it, finds it), run as ``uid``
    (root, or another user through setpriv). ``env`` is the environment to give whatever
    should use this server."""

    def __init__(self, tmpdir: str, uid: int, base_env: dict[str, str]) -> None:
        self.tmpdir = tmpdir
        self.uid = uid
        self.prefix = [] if uid == os.getuid() else as_user(uid, uid)
        self.env = self.env_for(base_env)
        self.socket = os.path.join(tmpdir, f"tmux-{uid}", "default")

    def env_for(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` pointed at this server: TMUX (set when the tests run inside tmux) gone,
        TMUX_TMPDIR here, and a shell that user has (nobody's login shell is nologin)."""
        return {**{key: value for key, value in env.items() if key != "TMUX"},
                "TMUX_TMPDIR": self.tmpdir, "SHELL": "/bin/sh", "HOME": self.tmpdir}

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.prefix, "tmux", "-f", "/dev/null", *args],
                              capture_output=True, text=True, env=self.env, cwd=self.tmpdir,
                              timeout=scaled(10))
        assert done.returncode == 0 or not check, f"tmux {args}: {done.stderr}"
        return done

    def shows(self, target: str, text: str, timeout: float = 10, joined: bool = False) -> str:
        """What pane ``target`` shows once ``text`` is in it (the test's own look); with
        ``joined``, lines the pane's width wrapped are joined again (capture-pane -J)."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            shown = self("capture-pane", "-p", *(["-J"] if joined else []), "-t", target).stdout
            if text in shown:
                return shown
            assert time.monotonic() < deadline, f"{target} never showed {text!r}:\n{shown}"
            time.sleep(0.1)

    def kill(self) -> None:
        subprocess.run([*self.prefix, "tmux", "-S", self.socket, "kill-server"],
                       capture_output=True, timeout=scaled(10))


@pytest.fixture
def tmux_server():
    """``tmux_server(uid=os.getuid())``: a TmuxServer, killed by its own socket at the end."""
    made: list[tuple[TmuxServer, str]] = []

    def make(uid: int | None = None) -> TmuxServer:
        uid = os.getuid() if uid is None else uid
        tmpdir = tempfile.mkdtemp(prefix="arqond-tmux-")
        os.chown(tmpdir, uid, -1)
        server = TmuxServer(tmpdir, uid, {key: value for key, value in os.environ.items()
                                          if not key.startswith("ARQONBUS_")})
        made.append((server, tmpdir))
        return server

    yield make
    for server, tmpdir in made:
        server.kill()
        shutil.rmtree(tmpdir, ignore_errors=True)


class ZgentSocket:
    """A JSON-lines client of MOO_DIR/NAME.sock."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: Path | str) -> "ZgentSocket":
        reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 22)
        return cls(reader, writer)

    async def send(self, obj: Any) -> None:
        data = obj if isinstance(obj, bytes) else orjson.dumps(obj) + b"\n"
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), scaled(timeout))
        assert line, "socket closed"
        return orjson.loads(line)

    async def call(self, method: str, params: Any = None, request_id: Any = 1,
                   timeout: float = 5.0) -> dict[str, Any]:
        request = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            request["params"] = params
        await self.send(request)
        return await self.recv(timeout)

    async def expect_silence(self, seconds: float = 0.3) -> None:
        try:
            line = await asyncio.wait_for(self.reader.readline(), scaled(seconds))
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"expected nothing, got {line!r}")

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


@pytest.fixture
async def zgent_socket():
    opened: list[ZgentSocket] = []

    async def factory(path: Path | str) -> ZgentSocket:
        sock = await ZgentSocket.open(path)
        opened.append(sock)
        return sock

    yield factory
    for sock in opened:
        await sock.close()


class Peer:
    """A raw WebSocket client that reads JSON frames with a deadline."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.welcome: dict[str, Any] = {}

    @property
    def id(self) -> str:
        return self.welcome["payload"]["client_id"]

    async def send(self, frame: Any) -> None:
        await self.send_text(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def send_text(self, text: str) -> None:
        await self.connection.send(text)

    async def recv_text(self) -> str | bytes:
        return await self.connection.recv()

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        return orjson.loads(await asyncio.wait_for(self.recv_text(), scaled(timeout)))

    async def recv_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame, which must be of type ``kind``."""
        frame = await self.recv(timeout)
        assert frame["type"] == kind, frame
        return frame

    async def recv_event(self, event_type: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next telemetry-port frame, which must have ``event_type``."""
        frame = await self.recv(timeout)
        assert frame.get("event_type") == event_type, frame
        return frame

    async def expect_silence(self, seconds: float = 0.3) -> None:
        try:
            frame = await asyncio.wait_for(self.recv_text(), scaled(seconds))
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


class ControlPeer(Peer):
    """A client of the control socket: the same frames, one JSON object per line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(None)
        self.reader = reader
        self.writer = writer

    async def send_text(self, text: str) -> None:
        self.writer.write(text.encode() + b"\n")
        await self.writer.drain()

    async def recv_text(self) -> bytes:
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("control socket closed by arqond")
        return line

    async def at_eof(self, timeout: float = 5.0) -> bool:
        """True once arqond has closed the connection and every line was read."""
        return await asyncio.wait_for(self.reader.read(1), scaled(timeout)) == b""

    async def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def connect_peer():
    opened: list[Peer] = []

    async def factory(url: str, **kwargs: Any) -> Peer:
        """A ws:// URL, or the path of a control socket."""
        peer: Peer
        if url.startswith("/"):
            peer = ControlPeer(*await asyncio.open_unix_connection(url, limit=1 << 24))
        else:
            # A closing handshake no one answers (arqond killed, or cut us off) ends soon.
            kwargs.setdefault("close_timeout", scaled(1))
            peer = Peer(await connect(url, open_timeout=scaled(5), **kwargs))
        peer.welcome = await peer.recv()
        opened.append(peer)
        return peer

    yield factory
    for peer in opened:
        await peer.close()


class HttpReply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        assert self.headers.get("content-type") == "application/json", self.headers
        return orjson.loads(self.body)


def http_call(daemon: DaemonProcess, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> HttpReply:
    """One request on a fresh connection to the daemon's HTTP listener."""
    host, port = daemon.http_address
    connection = http.client.HTTPConnection(host, port, timeout=scaled(10))
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return HttpReply(response.status, {k.lower(): v for k, v in response.getheaders()},
                         response.read())
    finally:
        connection.close()


def http_raw(daemon: DaemonProcess, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the HTTP listener and read until the server closes."""
    with socket.create_connection(daemon.http_address, timeout=scaled(timeout)) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def parse_http_reply(raw: bytes) -> HttpReply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpReply(status, headers, body)


# -- TCP ports: read back from the daemon, or picked for what cannot bind port 0 ---------------
# arqond binds port 0 and logs LISTENER=... ADDRESS=...: tests read the port from there
# (DaemonProcess.listeners). Only what must be told its port before it starts picks one here.


class PortTaken(AssertionError):
    """A start found a port it was given bound by someone else (EADDRINUSE); a failure of
    the test, unless on_free_ports picks another port and starts again."""


def on_free_ports(count: int, start: Callable[[list[int]], T], attempts: int = 5) -> T:
    """``start(ports)`` on ``count`` distinct free loopback ports, for what cannot bind port 0
    and report the port (systemd-socket-activate refuses "127.0.0.1:0"; a detached daemon logs
    to syslog; a container's socket units). A port is free only until someone binds it, so
    when ``start`` raises PortTaken, it is called again on fresh ports."""
    for _ in range(attempts - 1):
        try:
            return start(_free_ports(count))
        except PortTaken:
            pass
    return start(_free_ports(count))


def _free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:   # all bound at once: the kernel hands out distinct ports
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@pytest.fixture
def refused_port():
    """A loopback port where every connect is refused, for as long as the test runs: bound,
    never listening, so nothing else can take it meanwhile."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.fixture
def shared_moo_dir():
    """A MOO dir another uid can reach (pytest's tmp dirs are private to root)."""
    path = tempfile.mkdtemp(prefix="arqond-moo-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- /metrics, parsed -------------------------------------------------------------------

SAMPLE_RE = re.compile(r'^([a-z_]+)(\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})? (-?[0-9.e+]+)$')


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text to {"name" or "name{labels}": value}, checking the format as it goes."""
    values: dict[str, float] = {}
    types: dict[str, str] = {}
    helped = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge"), line
            assert name.endswith("_total") == (kind == "counter"), line
            types[name] = kind
        else:
            match = SAMPLE_RE.match(line)
            assert match, f"not a Prometheus sample line: {line!r}"
            name = match.group(1)
            assert name in types and name in helped, f"{name} has no TYPE/HELP"
            values[name + (match.group(2) or "")] = float(match.group(3))
    return values


def metrics_of(daemon) -> dict[str, float]:
    reply = http_call(daemon, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse_metrics(reply.body.decode())
