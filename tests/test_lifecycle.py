"""Life cycle under a service manager: the notify protocol in order, the fd store, SIGHUP with
good and bad configurations, SIGTERM/SIGINT, stop callbacks, and the classic pidfile mode."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from arqond import app
from arqond import config as configuration
from arqond.system.fdstore import FdStore
from arqond.system.notify import Notifier, monotonic_usec

from .conftest import ROOT, PortTaken, isolated_sections, on_free_ports, scaled, write_config

STOP_CONTRACT = 5.0  # seconds from SIGTERM to exit that arqond promises


def collect_until_exit(notify_socket, daemon) -> list:
    """Every notification left, until the daemon has exited and the socket is drained."""
    daemon.proc.wait(15)
    while True:
        try:
            notify_socket.receive(0.2)
        except TimeoutError:
            return notify_socket.received


async def test_notify_sequence_ready_status_watchdog_reloading_stopping(
        make_daemon, notify_socket, connect_peer):
    daemon = make_daemon(env={"NOTIFY_SOCKET": notify_socket.path,
                              "WATCHDOG_USEC": "200000"})
    ready = notify_socket.until("READY")
    assert ready.pid == daemon.proc.pid
    serving = ", ".join(f"{name} {address}" for name, address in daemon.listeners.items())
    assert ready.fields["STATUS"] == f"0 client(s), 0 message(s); serving {serving}"
    assert notify_socket.received == [ready]  # READY=1 is the first thing systemd hears
    notify_socket.until("WATCHDOG")
    notify_socket.until("WATCHDOG")  # kept coming, from the event loop
    peer = await connect_peer(daemon.ws_url)
    status = notify_socket.until("STATUS")
    assert status.fields["STATUS"].startswith("1 client(s)")
    before = monotonic_usec()
    daemon.signal(signal.SIGHUP)
    reloading = notify_socket.until("RELOADING")
    assert before <= int(reloading.fields["MONOTONIC_USEC"]) <= monotonic_usec()
    after_reload = notify_socket.until("READY")
    assert after_reload.fields["STATUS"].startswith("1 client(s)")
    await peer.close()
    daemon.signal(signal.SIGTERM)
    received = collect_until_exit(notify_socket, daemon)
    assert daemon.proc.returncode == 0
    kinds = [next(key for key in ("READY", "RELOADING", "STOPPING", "WATCHDOG", "STATUS")
                  if key in note.fields) for note in received]
    assert kinds[-1] == "STOPPING" and kinds.count("STOPPING") == 1
    # READY, then (WATCHDOG|STATUS)*, RELOADING, READY, (WATCHDOG|STATUS)*, STOPPING.
    assert [k for k in kinds if k in ("READY", "RELOADING", "STOPPING")] == \
        ["READY", "RELOADING", "READY", "STOPPING"]
    assert all(note.pid == daemon.proc.pid for note in received)


def test_no_watchdog_pings_unless_asked(make_daemon, notify_socket):
    daemon = make_daemon(env={"NOTIFY_SOCKET": notify_socket.path})
    notify_socket.until("READY")
    daemon.signal(signal.SIGINT)
    received = collect_until_exit(notify_socket, daemon)
    assert daemon.proc.returncode == 0
    assert [note for note in received if "WATCHDOG" in note.fields] == []
    assert "STOPPING" in received[-1].fields


def test_fd_store_passes_the_fd_itself(tmp_path, notify_socket):
    """FDSTORE=1 through sendmsg/SCM_RIGHTS: the manager gets a working fd of the same FIFO."""
    env = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "1000000", "KEEP": "1"}
    notifier = Notifier(env)
    assert env == {"KEEP": "1"}   # read once, then unset for processes arqond starts
    assert notifier.watchdog_interval == 0.5
    store = FdStore({"bob-inbox": 99}, notifier)
    fifo = tmp_path / "alice-inbox"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    store.store("alice-inbox", reader, poll=False)
    os.close(reader)   # from here on only the manager's copy keeps the pipe open
    note = notify_socket.receive(5)
    assert note.fields == {"FDSTORE": "1", "FDNAME": "alice-inbox", "FDPOLL": "0"}
    assert note.pid == os.getpid() and len(note.fds) == 1
    kept = note.fds[0]
    assert os.fstat(kept).st_ino == os.stat(fifo).st_ino
    with open(fifo, "w") as writer:   # would block forever if no reader were left
        writer.write('{"to":"alice"}\n')
    assert os.read(kept, 100) == b'{"to":"alice"}\n'
    with pytest.raises(ValueError, match="printable ASCII"):
        store.store("bad:name", 0)
    store.remove("alice-inbox")
    assert notify_socket.receive(5).fields == {"FDSTOREREMOVE": "1", "FDNAME": "alice-inbox"}
    assert store.inherited("bob-inbox") == 99 and store.inherited("bob-inbox") is None
    assert store.stored == set() and store.store_failed_total == 0


def test_fd_store_without_a_manager_is_a_no_op(tmp_path):
    store = FdStore({}, Notifier({}))
    read, write = os.pipe()
    try:
        store.store("alice-inbox", read, poll=False)
        store.remove("alice-inbox")
        assert store.stored == set()
    finally:
        os.close(read)
        os.close(write)


async def refused_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=scaled(5)):
            pass
    return refused.value.response.status_code


async def test_sighup_applies_a_good_config_and_keeps_the_old_on_a_bad_one(
        make_daemon, connect_peer):
    daemon = make_daemon()
    first = await connect_peer(daemon.ws_url)
    text = daemon.config_path.read_text()
    daemon.config_path.write_text(text.replace("[server]", "[server]\nmax_connections = 1"))
    mark = len(daemon.lines)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_line("configuration reloaded", start=mark)
    assert await refused_status(daemon.ws_url) == 503   # the new limit applies at once
    for bad, complaint in (("max_connections = \"lots\"", "server.max_connections"),
                           ("max_connections = [", "not valid TOML")):
        daemon.config_path.write_text(text.replace("[server]", f"[server]\n{bad}"))
        mark = len(daemon.lines)
        daemon.signal(signal.SIGHUP)
        line = daemon.wait_for_line("reload refused", start=mark)
        assert line.startswith("<3>") and complaint in line
        assert "keeping the running configuration" in line
        # The old configuration (limit 1) still holds, and the client already here still works.
        assert await refused_status(daemon.ws_url) == 503
        assert (await first.command("ping"))["payload"]["message"] == "pong"
    assert daemon.proc.poll() is None
    daemon.config_path.write_text(text)
    mark = len(daemon.lines)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_line("configuration reloaded", start=mark)
    second = await connect_peer(daemon.ws_url)
    assert second.id != first.id


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_stop_signal_closes_clients_with_1001_and_exits_0(make_daemon, connect_peer,
                                                                 signum):
    daemon = make_daemon()
    sockets = [daemon.listeners["control"], daemon.listeners["bus"]]
    peers = [await connect_peer(daemon.ws_url) for _ in range(3)]
    # One more client that never answers the close frame: arqond must not wait on it for long.
    host, port = daemon.listeners["ws"].rsplit(":", 1)
    silent = socket.create_connection((host, int(port)))
    silent.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Sec-WebSocket-Version: 13\r\n\r\n")
    daemon.wait_for_line("client connected", start=0)
    started = time.monotonic()
    daemon.signal(signum)
    for peer in peers:
        await asyncio.wait_for(peer.connection.wait_closed(), scaled(STOP_CONTRACT))
        assert peer.connection.close_code == 1001
    code = await asyncio.to_thread(daemon.proc.wait, scaled(2 * STOP_CONTRACT))
    elapsed = time.monotonic() - started
    silent.close()
    print(f"exit {elapsed:.2f} s after {signal.Signals(signum).name}")
    assert code == 0
    assert elapsed < STOP_CONTRACT
    daemon.wait_for_line("arqond stopping")
    # The socket files it bound itself are gone with it.
    assert [path for path in sockets if os.path.lexists(path)] == []


async def test_stop_callbacks_run_and_a_stuck_one_is_cut_short(tmp_path, monkeypatch):
    """In-process: flush hooks joined to Daemon.stop_callbacks run on stop; one that hangs is
    cut off at the stop budget and the rest of the shutdown still happens."""
    monkeypatch.setattr(app, "STOP_BUDGET", 0.5)
    config = configuration.load(str(write_config(tmp_path / "a.toml",
                                                 isolated_sections(tmp_path))))
    daemon = app.Daemon(config, {})
    flushed: list[str] = []

    async def stuck() -> None:
        await asyncio.sleep(3600)

    async def flush() -> None:
        flushed.append("checkpoints")

    daemon.stop_callbacks += [flush, stuck]
    running = asyncio.create_task(daemon.run())
    while "ws" not in daemon.addresses:
        await asyncio.sleep(0.01)
    async with connect(f"ws://{daemon.addresses['ws']}/") as client:
        await client.recv()
        daemon.stopping.set()
        assert await asyncio.wait_for(running, scaled(5)) == 0
        await client.wait_closed()
        assert client.close_code == 1001
    assert flushed == ["checkpoints"]


def run_arqond(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARQONBUS_", "NOTIFY_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "arqond", *args], capture_output=True,
                          text=True, timeout=scaled(30), cwd=cwd, env=env)


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def read_pid(pidfile: Path, other_than: int = 0) -> int:
    """The pid in ``pidfile`` once the daemon has written it (the file exists a moment before
    its content does)."""
    found: list[int] = []

    def written() -> bool:
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        found[:] = [int(text)] if text.isdigit() and int(text) != other_than else []
        return bool(found)
    wait_for(written)
    return found[0]


def listener_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:``port``, if any."""
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    found = re.search(r"pid=(\d+),", out)
    return int(found.group(1)) if found else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_daemon_mode_pidfile(tmp_path):
    pidfile = tmp_path / "run" / "arqond.pid"
    pidfile.parent.mkdir()
    settings = isolated_sections(tmp_path)
    config = tmp_path / "arqond.toml"

    def start_detached(ports: list[int]) -> tuple[int, int]:
        """The detached daemon logs to syslog, not to us: it is given its port up front."""
        settings["server"].update(port=ports[0], log_level="info")
        write_config(config, settings)
        # A relative --config: the detached daemon runs in / and must still find it on SIGHUP.
        started = run_arqond("--config", "arqond.toml", "--daemon", "--pidfile", str(pidfile),
                             cwd=tmp_path)
        # The command returns once the daemon serves, or with the reason it could not.
        if started.returncode == 1 and f":{ports[0]}: Address already in use" in started.stderr:
            raise PortTaken(ports[0])
        assert started.returncode == 0, started.stderr
        return ports[0], read_pid(pidfile)

    port, pid = on_free_ports(1, start_detached)
    try:
        assert pid != os.getpid() and alive(pid) and listener_pid(port) == pid
        async with connect(f"ws://127.0.0.1:{port}/", open_timeout=scaled(10)) as client:
            assert "welcome" in (await client.recv())
            settings["server"]["max_connections"] = 1
            write_config(config, settings)
            os.kill(pid, signal.SIGHUP)
            deadline = time.monotonic() + scaled(10)
            while True:   # the daemon logs to syslog, so watch the effect instead
                try:
                    async with connect(f"ws://127.0.0.1:{port}/", open_timeout=scaled(5)):
                        pass
                except InvalidStatus as refused:
                    assert refused.response.status_code == 503
                    break
                assert time.monotonic() < deadline, "SIGHUP did not apply the new config"
                await asyncio.sleep(0.05)
        config = str(config)
        # A second start while the first lives is refused, and the first is left alone.
        second = run_arqond("--config", config, "--port", "0", "--daemon",
                            "--pidfile", str(pidfile))
        assert second.returncode == 1
        assert f"already running as pid {pid} (pidfile {pidfile})" in second.stderr
        assert int(pidfile.read_text()) == pid and alive(pid)
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid))
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert not pidfile.exists()   # removed on exit


def test_pidfile_of_a_dead_process_is_replaced_and_garbage_refused(tmp_path):
    pidfile = tmp_path / "arqond.pid"
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    config = str(write_config(tmp_path / "arqond.toml", isolated_sections(tmp_path)))
    assert run_arqond("--config", config, "--daemon", "--pidfile", str(pidfile)).returncode == 0
    pid = read_pid(pidfile, other_than=dead.pid)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid))
    assert not pidfile.exists()
    pidfile.write_text("not a pid\n")
    refused = run_arqond("--config", config, "--daemon", "--pidfile", str(pidfile))
    assert refused.returncode == 1
    assert "does not hold a process id" in refused.stderr
    assert pidfile.read_text() == "not a pid\n"


def test_check_config_still_validates(tmp_path):
    good = write_config(tmp_path / "good.toml", {"server": {"port": 0}})
    bad = write_config(tmp_path / "bad.toml", {"server": {"port": 70000}})
    assert run_arqond("--config", str(good), "--check-config").returncode == 0
    result = run_arqond("--config", str(bad), "--check-config")
    assert result.returncode == 1 and "server.port" in result.stderr
