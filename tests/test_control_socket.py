"""The control socket against the real daemon: protocol, bad input, bounds, peer credentials."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT, metrics_of, scaled

NOBODY = 65534  # uid nobody, gid nogroup on Debian
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


async def test_socket_file_mode_stale_file_and_removal(make_daemon, tmp_path):
    daemon = make_daemon(start=False)
    path = daemon.tmp / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # left behind, as by a crashed arqond
    stale.close()
    daemon.start()
    assert daemon.control_path == str(path)
    info = os.stat(path)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
    reader, writer = await asyncio.open_unix_connection(str(path))
    assert orjson.loads(await reader.readline())["payload"]["welcome"] == "Connected to ArqonBus"
    assert daemon.stop() == 0
    assert await reader.readline() == b""  # closed by the stop
    writer.close()
    assert not path.exists()


def test_refuses_to_replace_a_file_that_is_not_a_socket(make_daemon):
    daemon = make_daemon(start=False)
    path = daemon.tmp / "control.sock"
    path.write_text("precious")
    daemon.start(wait_ready=False)
    assert daemon.proc.wait(10) == 1
    daemon.wait_for_line(f"{path} exists and is not a socket; refusing to replace it")
    assert path.read_text() == "precious"


async def test_same_protocol_as_the_websocket(daemon, connect_peer):
    ws = await connect_peer(daemon.ws_url)
    ctl = await connect_peer(daemon.control_path)
    assert ctl.welcome["type"] == "message" and ctl.welcome["sender"] == "arqonbus"
    assert ctl.id.startswith("arq_client_")
    await ctl.send({"type": "message", "room": "science:general", "payload": {"n": 1},
                    "sender": "forged"})
    got = await ws.recv_type("message")
    assert got["sender"] == ctl.id and got["payload"] == {"n": 1}
    ack = await ctl.recv_type("message_response")
    assert ack["id"] == got["id"]
    await ws.send({"type": "message", "payload": {"n": 2}})
    assert (await ctl.recv_type("message"))["payload"] == {"n": 2}
    await ws.recv_type("message_response")
    status = await ctl.command("status")
    client = status["payload"]["data"]["client"]
    assert (client["transport"], client["admin"]) == ("control", True)  # the tests run as root
    assert client["subscriptions"] == ["science:general"]


# What a line may be is the envelope's rule (tests/unit/test_envelope.py and
# test_protocol.py); here one daemon shows each refusal as a control client sees it.
GARBAGE_LINES = [
    (b"garbage", "INVALID_JSON"),
    (b"\xff\xfe{", "INVALID_JSON"),
    (b"[1, 2]", "VALIDATION_ERROR"),
    (b'{"type": "bogus", "payload": {}}', "VALIDATION_ERROR"),
    (b'{"type": "message", "payload": {}, "extra": 1}', "VALIDATION_ERROR"),
    (b'{"type": "message", "room": "no\\u0000such", "payload": {"n": 1}}', "VALIDATION_ERROR"),
]


async def test_garbage_lines_get_an_error_and_disturb_nobody(daemon, connect_peer):
    ws = await connect_peer(daemon.ws_url)
    ctl = await connect_peer(daemon.control_path)
    for n, (line, code) in enumerate(GARBAGE_LINES):
        ctl.writer.write(b"\n  \n" + line + b"\r\n")  # blank lines are skipped, not errors
        error = await ctl.recv_type("error")
        assert error["error_code"] == code and error["error"], line
        assert (await ctl.command("ping"))["payload"]["message"] == "pong"  # still usable
        # The next good message is the first thing the WebSocket client gets: the refused
        # line reached nobody.
        await ctl.send({"type": "message", "payload": {"after": n}})
        assert (await ws.recv_type("message"))["payload"] == {"after": n}
        await ctl.recv_type("message_response")
    await ctl.expect_silence(0.2)
    await ws.expect_silence(0.2)


async def test_over_long_line_gets_an_error_then_the_close(make_daemon, connect_peer):
    daemon = make_daemon({"server": {"max_message_size": 1024}})
    ws = await connect_peer(daemon.ws_url)
    ctl = await connect_peer(daemon.control_path)
    fits = orjson.dumps({"type": "message", "payload": {"x": "a" * 900}})
    ctl.writer.write(fits + b"\n" + b'{"type": "message", "payload": "' + b"b" * 2000)
    assert (await ws.recv_type("message"))["payload"] == {"x": "a" * 900}
    await ctl.recv_type("message_response")
    error = await ctl.recv_type("error")
    assert error["error_code"] == "LINE_TOO_LONG"
    assert error["error"] == ("line longer than 1024 bytes (server.max_message_size); "
                              "closing the connection")
    assert await ctl.at_eof()
    await ws.expect_silence(0.2)
    again = await connect_peer(daemon.control_path)  # the socket itself is unharmed
    assert (await again.command("ping"))["status"] == "success"
    assert metrics_of(daemon)["arqonbus_control_oversize_total"] == 1


async def test_last_line_without_newline_is_answered_before_the_close(daemon):
    result = subprocess.run(["socat", "-", f"UNIX-CONNECT:{daemon.control_path}"],
                            input=b'{"type":"command","command":"ping"}', capture_output=True,
                            timeout=scaled(30))
    frames = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [f["type"] for f in frames] == ["message", "response", "command_response"]
    assert frames[1]["payload"]["message"] == "pong"


async def test_a_reader_that_never_reads_is_cut_off_alone(make_daemon, connect_peer):
    daemon = make_daemon({"server": {"client_buffer_bytes": 65536}})
    sender = await connect_peer(daemon.ws_url)
    reader = await connect_peer(daemon.ws_url)
    # joined to science:general, and never reads past its welcome frame
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(daemon.control_path)
    stuck.settimeout(scaled(5))
    stuck_id = orjson.loads(stuck.recv(4096).split(b"\n")[0])["payload"]["client_id"]
    start = len(daemon.lines)
    chunk = "x" * 16384
    sent = 0
    while not any("client slow" in line and stuck_id in line for line in daemon.lines[start:]):
        await sender.send({"type": "message", "payload": {"n": sent, "chunk": chunk}})
        await sender.recv_type("message_response")
        assert (await reader.recv_type("message"))["payload"]["n"] == sent
        sent += 1
        assert sent < 2000, "the stuck control client was never cut off"
    line = daemon.wait_for_line(f"CLIENT_ID={stuck_id}", start=start)
    assert "TRANSPORT=control" in line
    stuck.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        while await asyncio.wait_for(loop.sock_recv(stuck, 1 << 20), scaled(5)) != b"":
            pass  # what the kernel held before the cut, then the end
    except ConnectionResetError:
        pass  # the dropped connection may also show as a reset
    stuck.close()
    await sender.send({"type": "message", "payload": {"n": "after"}})
    assert (await reader.recv_type("message"))["payload"]["n"] == "after"


@pytest.fixture
def shared_dir():
    """A directory uid nobody can traverse (pytest's own temp dirs are root-only)."""
    if os.geteuid() != 0:
        pytest.skip("connecting as another uid needs root")
    path = Path(tempfile.mkdtemp(prefix="arqond-ctl-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def nobody_run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent"}
    return subprocess.run(AS_NOBODY + args, capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=scaled(60), **kwargs)


def start_shared(make_daemon, shared_dir: Path, admin_group: str):
    path = shared_dir / "control.sock"
    daemon = make_daemon({"server": {"control_socket": str(path), "admin_group": admin_group}})
    os.chown(path, -1, NOBODY)  # the group nobody's process runs with; the mode stays 0660
    return daemon, str(path)


async def test_other_uid_is_an_ordinary_client(make_daemon, shared_dir, connect_peer):
    daemon, path = start_shared(make_daemon, shared_dir, "arqond-no-such-group")
    ws = await connect_peer(daemon.ws_url)
    cli = [sys.executable, "-m", "arqond.cli"]
    refused = nobody_run(cli + ["cmd", "create_channel", "room=lab:bench",
                                "--control-socket", path])
    assert refused.returncode == 1
    assert refused.stderr == ("arqon: create_channel: create_channel is for admin clients only "
                              "(AUTHORIZATION_ERROR)\n")
    assert refused.stdout == ""
    system = nobody_run(["socat", "-", f"UNIX-CONNECT:{path}"],
                        input='{"type":"system","room":"science:general","payload":{"x":1}}\n')
    frames = [orjson.loads(line) for line in system.stdout.splitlines()]
    assert [f["type"] for f in frames] == ["message", "error"]
    assert frames[1]["error_code"] == "AUTHORIZATION_ERROR"
    await ws.expect_silence(0.3)  # the refused frame reached nobody
    status = nobody_run(cli + ["cmd", "status", "--control-socket", path])
    client = orjson.loads(status.stdout)["client"]
    assert (client["transport"], client["admin"]) == ("control", False)
    assert f"uid={NOBODY}" in daemon.wait_for_line(f"client_id={client['client_id']}")
    sent = nobody_run(cli + ["send", "science:general", '{"hello": "from nobody"}',
                             "--control-socket", path])
    assert sent.returncode == 0, sent.stderr
    got = await ws.recv_type("message")
    assert got["payload"] == {"hello": "from nobody"}
    ack = orjson.loads(sent.stdout)
    assert ack["type"] == "message_response" and ack["id"] == got["id"]


async def test_member_of_the_admin_group_is_admin(make_daemon, shared_dir, connect_peer):
    # nobody's primary group is nogroup: the kernel-reported uid makes it an admin.
    daemon, path = start_shared(make_daemon, shared_dir, "nogroup")
    ws = await connect_peer(daemon.ws_url)
    created = nobody_run([sys.executable, "-m", "arqond.cli", "cmd", "create_channel",
                          "room=lab:bench", "--control-socket", path])
    assert created.returncode == 0, created.stderr
    assert orjson.loads(created.stdout)["room"] == "lab"
    system = nobody_run(["socat", "-", f"UNIX-CONNECT:{path}"],
                        input='{"type":"system","room":"science:general","payload":{"x":1}}\n')
    assert [orjson.loads(line)["type"] for line in system.stdout.splitlines()] == [
        "message", "message_response"]
    got = await ws.recv_type("system")
    assert got["payload"] == {"x": 1}


async def test_connection_limit_refuses_with_one_error_line(make_daemon, connect_peer):
    daemon = make_daemon({"server": {"max_connections": 2}})
    ws = await connect_peer(daemon.ws_url)
    ctl = await connect_peer(daemon.control_path)
    reader, writer = await asyncio.open_unix_connection(daemon.control_path)
    refused = orjson.loads(await reader.readline())
    assert (refused["type"], refused["error_code"]) == ("error", "CONNECTION_REFUSED")
    assert refused["error"] == "connection limit reached"
    assert await reader.read() == b""
    writer.close()
    daemon.wait_for_line("control connection refused: server.max_connections reached")
    await ctl.send({"type": "message", "payload": {"still": "here"}})
    assert (await ws.recv_type("message"))["payload"] == {"still": "here"}


async def test_admin_group_change_applies_on_reload(make_daemon, shared_dir):
    daemon, path = start_shared(make_daemon, shared_dir, "arqond-no-such-group")
    create = [sys.executable, "-m", "arqond.cli", "cmd", "--control-socket", path,
              "create_channel"]
    assert nobody_run(create + ["room=lab:one"]).returncode == 1
    text = daemon.config_path.read_text()
    daemon.config_path.write_text(text.replace('"arqond-no-such-group"', '"nogroup"'))
    start = len(daemon.lines)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_line("configuration reloaded", start=start)
    created = nobody_run(create + ["room=lab:two"])
    assert created.returncode == 0, created.stderr


async def test_a_control_socket_in_use_is_not_stolen(make_daemon):
    first = make_daemon()
    second = make_daemon({"server": {"control_socket": first.control_path}}, start=False)
    second.start(wait_ready=False)
    assert second.proc.wait(10) == 1
    second.wait_for_line("is in use by another process")
    assert first.proc.poll() is None
