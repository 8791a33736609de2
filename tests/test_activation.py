"""Socket activation: listeners taken by name from systemd-socket-activate and from a Python
LISTEN_FDS harness (which, unlike the tool, can also pass FIFOs), and refusals of fds that are
not what their name says."""

from __future__ import annotations

import asyncio
import os
import socket
import stat

import orjson
import pytest
from websockets.asyncio.client import connect

from arqond.system import activation
from arqond.system.activation import ActivationError
from tests.conftest import on_free_ports, scaled


def socket_activate(daemon, listens: list[str], names: list[str] | None = None) -> int:
    """Run ``daemon`` under systemd-socket-activate (it sanitises the environment, so what the
    daemon needs is passed with -E and the venv python is called by absolute path). Returns
    once the tool listens; arqond itself starts only with the first connection.

    The tool cannot bind port 0, so "{port}" in ``listens`` is a free port, picked again if
    something took it before the tool bound it; the port is returned."""
    def start(ports: list[int]) -> int:
        specs = [spec.replace("{port}", str(ports[0])) for spec in listens]
        daemon.prefix = ["systemd-socket-activate", *(f"-l{spec}" for spec in specs),
                         *([f"--fdname={':'.join(names)}"] if names else []),
                         "-E", "PYTHONUNBUFFERED=1"]
        daemon.start(wait_ready=False)
        for spec in specs:
            daemon.wait_listening(f"Listening on {spec}")
        return ports[0]
    return on_free_ports(1, start)


async def welcome_of(url: str) -> dict:
    async with connect(url, open_timeout=scaled(15)) as ws:
        return orjson.loads(await asyncio.wait_for(ws.recv(), scaled(15)))


async def test_socket_activate_serves_a_client_queued_before_start(make_daemon, tmp_path):
    control = tmp_path / "control.sock"
    daemon = make_daemon(start=False)
    port = socket_activate(daemon, ["127.0.0.1:{port}", str(control)], ["ws", "control"])
    # The tool starts arqond only on the first connection: this client is queued by the kernel
    # before arqond exists and must still be served.
    assert not any("ready" in line for line in daemon.lines)
    first = await welcome_of(f"ws://127.0.0.1:{port}/")
    assert first["payload"]["welcome"] == "Connected to ArqonBus"
    daemon.wait_for_line("ready")
    assert daemon.listeners["ws"] == f"127.0.0.1:{port}"
    assert any("listening ws" in line and "(from systemd)" in line for line in daemon.lines)
    second = await welcome_of(f"ws://127.0.0.1:{port}/")
    assert second["payload"]["client_id"] != first["payload"]["client_id"]
    # The Unix control socket arrived and was recognised by name; no control adapter in this
    # build, so it is reported rather than silently ignored.
    unserved = daemon.wait_for_line("LISTENER=control")
    assert str(control) in unserved
    assert daemon.stop() == 0


async def test_unnamed_fds_fill_listeners_in_order(make_daemon):
    daemon = make_daemon(start=False)
    # No --fdname: the tool names the fd "unknown", which counts as unnamed: the first is ws.
    port = socket_activate(daemon, ["127.0.0.1:{port}"])
    welcome = await welcome_of(f"ws://127.0.0.1:{port}/")
    assert welcome["sender"] == "arqonbus"
    daemon.wait_for_line("ready")
    assert daemon.listeners["ws"] == f"127.0.0.1:{port}"
    assert daemon.stop() == 0


@pytest.mark.parametrize("listen, name, complaint", [
    ("unix", "ws", "fd 3 named 'ws' must be a listening TCP/IPv4 or TCP/IPv6 stream socket, "
                     "but it is a listening AF_UNIX stream socket"),
    ("tcp", "control", "fd 3 named 'control' must be a listening AF_UNIX stream "
                                    "socket, but it is a listening TCP/IPv4 stream socket"),
])
async def test_socket_of_the_wrong_family_is_refused(make_daemon, tmp_path, listen, name,
                                                     complaint):
    unix = tmp_path / "wrong.sock"
    daemon = make_daemon(start=False)
    port = socket_activate(daemon, [str(unix) if listen == "unix" else "127.0.0.1:{port}"],
                           [name])
    if listen == "unix":
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(unix))
    else:
        client = socket.create_connection(("127.0.0.1", port))
    with client:
        assert daemon.proc.wait(scaled(15)) == 1
    line = daemon.wait_for_line("socket activation")
    assert complaint in line
    assert line.startswith("<3>")
    assert not any("ready" in line for line in daemon.lines)


def launch_with_fds(daemon, fds: list[int], names: list[str]) -> None:
    """The Python harness: dup the fds to 3.. in the child and set LISTEN_PID to the pid that
    execs arqond, as systemd does (sh's $$ survives the exec)."""
    daemon.env.update(LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=":".join(names))

    def place() -> None:
        # Move every fd out of the way first, so that dup2 onto 3.. clobbers none of them.
        high = [os.dup(fd) + 100 for fd in fds]
        for src, tmp in zip(fds, high):
            os.dup2(src, tmp)
        for index, tmp in enumerate(high):
            os.dup2(tmp, 3 + index)  # dup2 clears FD_CLOEXEC on the target
    daemon.prefix = ["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"]
    daemon.popen_extra = {"preexec_fn": place, "close_fds": False}


async def test_listen_fds_harness_with_a_fifo_for_the_fd_store(make_daemon, tmp_path,
                                                                connect_peer, notify_socket):
    ws = socket.socket()
    ws.bind(("127.0.0.1", 0))
    ws.listen(16)
    control = socket.socket(socket.AF_UNIX)
    control.bind(str(tmp_path / "control.sock"))
    control.listen(16)
    fifo = tmp_path / "alice-inbox"
    os.mkfifo(fifo)
    fifo_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # what systemd does for ListenFIFO=
    daemon = make_daemon(start=False, env={"NOTIFY_SOCKET": notify_socket.path})
    launch_with_fds(daemon, [ws.fileno(), control.fileno(), fifo_fd],
                    ["ws", "control", "alice-inbox"])
    daemon.start()
    for fd in (ws, control):
        fd.close()
    os.close(fifo_fd)
    address = daemon.listeners["ws"]
    assert address == "127.0.0.1:{}".format(int(address.rsplit(":", 1)[1]))
    peer = await connect_peer(daemon.ws_url)
    assert (await peer.command("ping"))["payload"]["message"] == "pong"
    # The FIFO is an fd-store entry, not a listener: nothing in this build claims it, so arqond
    # says so and asks systemd to drop it (FDSTOREREMOVE) before READY=1.
    daemon.wait_for_line("fd store entry 'alice-inbox' was not claimed")
    removal = notify_socket.until("FDSTOREREMOVE")
    assert removal.fields == {"FDSTOREREMOVE": "1", "FDNAME": "alice-inbox"}
    assert "READY" in notify_socket.until("READY").fields
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    bus_path = daemon.listeners["bus"]
    assert stat.S_ISSOCK(os.lstat(bus_path).st_mode)
    assert daemon.stop() == 0
    # The socket systemd passed outlives arqond (systemd owns it); the one arqond bound itself
    # is removed at stop.
    assert stat.S_ISSOCK(os.lstat(tmp_path / "control.sock").st_mode)
    assert not os.path.lexists(bus_path)


def take_in_child(tmp_path, names: str) -> str:
    """Run activation.take() in a forked child whose fds 3, 4, 5 are a listening TCP socket,
    a pipe and a listening Unix socket, with LISTEN_FDNAMES=``names``; return its report."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            tcp = socket.socket()
            tcp.bind(("127.0.0.1", 0))
            tcp.listen(1)
            pipe_r, _ = os.pipe()
            unix = socket.socket(socket.AF_UNIX)
            unix.bind(str(tmp_path / "c.sock"))
            unix.listen(1)
            for target, fd in zip((3, 4, 5), (tcp.fileno(), pipe_r, unix.fileno())):
                os.dup2(fd, target + 50)
            for target in (3, 4, 5):
                os.dup2(target + 50, target)
            env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "3",
                   "LISTEN_FDNAMES": names, "OTHER": "kept"}
            result = activation.take(env)
            report = (f"{sorted(result.listeners)} {result.stored} {result.duplicates} "
                      f"{sorted(env)} {result.listeners['ws'].family.name} "
                      f"{os.get_inheritable(3)}")
        except BaseException as exc:  # noqa: BLE001 (the parent shows it)
            report = f"error {exc}"
        os.write(write, report.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    report = os.read(read, 4096).decode()
    os.close(read)
    return report


def test_take_sorts_listeners_and_stored_fds(tmp_path):
    # A unit-named fd counts as unnamed (it becomes ws); the pipe is a stored fd.
    assert take_in_child(tmp_path, "arqond.socket:zed-inbox:control") == \
        "['control', 'ws'] {'zed-inbox': 4} [] ['OTHER'] AF_INET False"


def test_take_keeps_the_first_of_two_stored_fds_with_one_name(tmp_path):
    # fd 5 is a listening Unix socket stored under the same name as the pipe at fd 4.
    assert take_in_child(tmp_path, "ws:zed-inbox:zed-inbox") == \
        "['ws'] {'zed-inbox': 4} ['zed-inbox'] ['OTHER'] AF_INET False"


def test_take_refuses_one_name_for_two_listeners(tmp_path):
    assert take_in_child(tmp_path, "ws:zed-inbox:ws") == (
        "error socket activation: more than one fd named 'ws' (fd 5); give each "
        "ListenStream= its own .socket unit")


def test_take_ignores_fds_meant_for_another_process():
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "ws:http"}
    result = activation.take(env)
    assert (result.active, result.listeners, result.stored, env) == (False, {}, {}, {})


@pytest.mark.parametrize("env, complaint", [
    ({"LISTEN_FDS": "two"}, "are not numbers"),
    ({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "ws"}, "LISTEN_FDS=2 but LISTEN_FDNAMES has 1"),
])
def test_take_refuses_inconsistent_variables(env, complaint):
    env = {"LISTEN_PID": str(os.getpid()), **env}
    with pytest.raises(ActivationError, match=complaint):
        activation.take(env)


def test_adopt_refuses_a_socket_that_is_not_listening():
    left, right = socket.socketpair()
    with left, right:
        with pytest.raises(ActivationError, match="but it is a non-listening AF_UNIX stream"):
            activation.adopt_listener("control", left.fileno())
    read, write = os.pipe()
    try:
        with pytest.raises(ActivationError, match="but it is a FIFO"):
            activation.adopt_listener("ws", read)
    finally:
        os.close(read)
        os.close(write)
