"""Who is behind each connection, against the real daemon: the local bus socket and loopback
TCP peers identified by the kernel, clients run as another uid, quotas at their bound."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import unix_connect

from tests.conftest import ROOT, metrics_of

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="runs clients as another uid")

# A WebSocket client run as another user: connects (URL or Unix socket path), sends each
# command of argv[2] in turn and prints every response's data (or error) as one JSON line.
CLIENT = r"""
import asyncio, json, sys
from websockets.asyncio.client import connect, unix_connect

async def main(where, commands):
    opened = unix_connect(where, "ws://localhost/") if where.startswith("/") else connect(where)
    async with opened as ws:
        welcome = json.loads(await ws.recv())
        print(json.dumps({"welcome": welcome["payload"]}), flush=True)
        for name, args in json.loads(commands):
            await ws.send(json.dumps({"type": "command", "command": name, "args": args}))
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] in ("response", "error"):
                    break
            print(json.dumps({k: frame.get(k) for k in ("status", "error", "error_code")}
                             | {"data": (frame.get("payload") or {}).get("data")}), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def as_nobody(where: str, *commands: tuple[str, dict]) -> list[dict]:
    result = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", CLIENT, where, orjson.dumps(list(commands)).decode()],
        capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def shared_dir():
    """A directory another uid can reach (pytest's tmp dirs are private to root)."""
    path = tempfile.mkdtemp(prefix="arqond-bus-")
    os.chmod(path, 0o755)
    yield Path(path)
    subprocess.run(["rm", "-rf", path], check=True)


def identity(reply: dict) -> dict:
    client = reply["data"]["client"]
    return {key: client[key] for key in ("principal", "admin")}


async def test_the_bus_socket_speaks_the_protocol_and_the_kernel_says_who(make_daemon,
                                                                          shared_dir):
    path = shared_dir / "bus.sock"
    daemon = make_daemon({"server": {"bus_socket": str(path)}})
    assert daemon.listeners["bus"] == str(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    async with unix_connect(str(path), "ws://localhost/") as root:
        welcome = orjson.loads(await root.recv())
        assert welcome["payload"]["welcome"] == "Connected to ArqonBus"
        await root.send('{"type":"command","command":"status"}')
        client = orjson.loads(await root.recv())["payload"]["data"]["client"]
        assert (client["principal"], client["admin"], client["transport"]) == ("root", True,
                                                                              "ws")
    welcome, status = as_nobody(str(path), ("status", {}))
    assert welcome["welcome"]["welcome"] == "Connected to ArqonBus"
    assert identity(status) == {"principal": "nobody", "admin": False}


async def test_a_bus_socket_peer_needs_no_token_when_auth_is_on(make_daemon, shared_dir):
    path = shared_dir / "bus.sock"
    make_daemon({"server": {"bus_socket": str(path)},
                 "auth": {"enabled": True, "jwt_secret": "s3cret"}})
    _, status = as_nobody(str(path), ("status", {}))
    assert identity(status) == {"principal": "nobody", "admin": False}


@pytest.mark.parametrize("loopback_identity, principal", [(True, "nobody"),
                                                          (False, "ip:127.0.0.1")])
def test_a_loopback_tcp_peer_is_the_user_the_kernel_knows_and_never_an_admin(
        make_daemon, loopback_identity, principal):
    daemon = make_daemon({"auth": {"loopback_identity": loopback_identity}})
    _, status = as_nobody(daemon.ws_url, ("status", {}))
    assert identity(status) == {"principal": principal, "admin": False}


def test_connections_past_a_principals_quota_are_refused_naming_it(make_daemon, shared_dir):
    path = shared_dir / "bus.sock"
    daemon = make_daemon({"server": {"bus_socket": str(path)}, "quotas": {"connections": 1}})
    holder = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", "import asyncio, sys\n"
         "from websockets.asyncio.client import connect\n"
         "async def main():\n"
         f"    async with connect('{daemon.ws_url}') as ws:\n"
         "        await ws.recv(); print('in', flush=True); sys.stdin.read()\n"
         "asyncio.run(main())"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline() == "in\n"
        result = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, "-c", "import asyncio\n"
             "from websockets.asyncio.client import unix_connect\n"
             "from websockets.exceptions import ConnectionClosed\n"
             "async def main():\n"
             f"    async with unix_connect('{path}', 'ws://localhost/') as ws:\n"
             "        try:\n"
             "            await ws.recv()\n"
             "        except ConnectionClosed as closed:\n"
             "            print(closed.rcvd.code, closed.rcvd.reason)\n"
             "asyncio.run(main())"],
            capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert result.stdout.strip() == \
            "1008 quota quotas.connections (1) reached for nobody: 1 in use"
        line = daemon.wait_for_line("quotas.connections (1) reached")
        assert "PRINCIPAL=uid:65534" in line
        assert metrics_of(daemon)['arqonbus_quota_refusals_total{quota="connections"}'] == 1
    finally:
        holder.stdin.close()
        holder.wait(10)


async def test_channels_a_client_creates_are_bounded_in_all_and_per_principal(
        make_daemon, connect_peer):
    daemon = make_daemon({"server": {"max_channels": 9}, "quotas": {"channels": 1}})
    # science's 7 hard-coded channels exist; nobody may create one, then its quota is spent.
    first, second = as_nobody(daemon.ws_url, ("join_channel", {"room": "lab:a"}),
                              ("join_channel", {"room": "lab:b"}))[1:]
    assert first["status"] == "success"
    assert (second["error_code"], second["error"]) == (
        "LIMIT_EXCEEDED", "quota quotas.channels (1) reached for nobody: 1 in use")
    daemon.wait_for_line("quotas.channels (1) reached")
    # Root over TCP (a local user, charged like any): the 9th channel fits, then none.
    root = await connect_peer(daemon.ws_url)
    assert (await root.command("join_channel", {"room": "lab:c"}))["status"] == "success"
    refused = await root.command("join_channel", {"room": "lab:d"})
    assert (refused["error_code"], refused["error"]) == (
        "LIMIT_EXCEEDED", "server.max_channels (9) channels exist already; no more can be "
        "created")
    assert metrics_of(daemon)["arqonbus_channels_refused_total"] == 1
    daemon.wait_for_line("server.max_channels (9) reached")
    # Joining what exists is never refused.
    assert (await root.command("join_channel", {"room": "lab:a"}))["status"] == "success"
