"""Nagle is off on every accepted TCP connection (WebSocket, telemetry, HTTP), whether arqond
bound the listener or systemd handed it over: with Nagle on, a lone frame waits for the peer's
delayed ACK, milliseconds per message at a steady trickle.

The daemon's own socket is inspected: pidfd_getfd(2) copies it into the test, where
getsockopt reads its options.
"""

from __future__ import annotations

import ctypes
import os
import socket
import time

import pytest

from tests.conftest import scaled
from tests.test_activation import socket_activate

SYS_PIDFD_GETFD = 438  # x86_64 and aarch64 share it
_syscall = ctypes.CDLL(None, use_errno=True).syscall


def daemon_side_of(pid: int, client: socket.socket, timeout: float = 5.0) -> socket.socket:
    """The daemon's accepted socket whose peer is ``client``."""
    wanted = client.getsockname()
    pidfd = os.pidfd_open(pid)
    deadline = time.monotonic() + scaled(timeout)
    try:
        while True:
            for name in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                        continue
                except FileNotFoundError:
                    continue
                fd = _syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
                if fd < 0:
                    continue
                copy = socket.socket(fileno=fd)
                try:
                    if copy.family == socket.AF_INET and copy.getpeername() == wanted:
                        return copy
                except OSError:
                    pass   # listening or unconnected
                copy.close()
            if time.monotonic() > deadline:
                raise AssertionError(f"no socket in arqond {pid} has the peer {wanted}")
            time.sleep(0.02)
    finally:
        os.close(pidfd)


def nodelay_of(pid: int, address: tuple[str, int], timeout: float = 3.0) -> int:
    """TCP_NODELAY of the daemon's side of a fresh connection, once set: the event loop
    accepts a connection and builds its transport (which sets the option) in two steps."""
    with socket.create_connection(address, timeout=scaled(5)) as client:
        with daemon_side_of(pid, client) as accepted:
            deadline = time.monotonic() + scaled(timeout)
            while True:
                value = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                if value or time.monotonic() > deadline:
                    return value
                time.sleep(0.01)


def test_listeners_arqond_binds_turn_nagle_off(daemon):
    for name in ("ws", "telemetry", "http"):
        host, _, port = daemon.listeners[name].rpartition(":")
        assert nodelay_of(daemon.proc.pid, (host, int(port))) == 1, name


@pytest.mark.skipif(not os.path.exists("/usr/bin/systemd-socket-activate"),
                    reason="systemd-socket-activate is not installed")
def test_listener_from_systemd_turns_nagle_off(make_daemon):
    daemon = make_daemon(start=False)
    port = socket_activate(daemon, ["127.0.0.1:{port}"], ["ws"])
    # The tool execs arqond on the first connection; this one is served once it is up.
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)):
        daemon.wait_for_line("ready")
    assert nodelay_of(daemon.proc.pid, ("127.0.0.1", port)) == 1
    assert daemon.stop() == 0
