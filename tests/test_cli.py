"""The arqon command against the real daemon: every subcommand, its output and its errors."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
from typing import Any

import orjson
import pytest

from arqond.core.auth import issue_hs256
from tests.conftest import ROOT

FRAME_LINE_RE = re.compile(r"^(\S+) type=(\S*) sender=(\S*) room=(\S*) channel=(\S*) "
                           r"payload=(.*)$")


ARQON = [sys.executable, "-m", "arqond.cli"]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without ARQONBUS_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARQONBUS_")}
    env.update(extra or {})
    return env


def arqon(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*ARQON, *args], input=stdin, capture_output=True, text=True,
                          env=cli_env(env), cwd=ROOT, timeout=timeout)


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]


@pytest.fixture
def ws_env(daemon) -> dict[str, str]:
    return {"ARQONBUS_WS_URL": daemon.ws_url}


@pytest.fixture
def control_env(daemon) -> dict[str, str]:
    return {"ARQONBUS_CONTROL_SOCKET": daemon.control_path}


# -- version and status ---------------------------------------------------------------------

def http_url(daemon) -> str:
    if "http" not in daemon.listeners:
        pytest.skip("this build has no HTTP listener yet")
    return f"http://{daemon.listeners['http']}"


@pytest.mark.parametrize("name, keys", [("version", {"service", "version", "protocol"}),
                                        ("status", {"connections", "rooms", "channels"})])
def test_version_and_status_print_sorted_indented_json(daemon, name, keys):
    result = arqon(name, "--http-url", http_url(daemon))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert keys <= data.keys()
    assert result.stdout == json.dumps(data, indent=2, sort_keys=True) + "\n"
    via_env = arqon(name, env={"ARQONBUS_HTTP_URL": http_url(daemon) + "/"})
    assert json.loads(via_env.stdout).keys() == data.keys()


def test_status_of_an_unreachable_url():
    port = closed_port()
    result = arqon("status", "--http-url", f"http://127.0.0.1:{port}")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (f"arqon: Failed to reach http://127.0.0.1:{port}/status: "
                             "[Errno 111] Connection refused\n")


def test_version_of_a_url_that_answers_an_http_error(daemon):
    # The WebSocket port refuses plain HTTP with 426: a real HTTP error from the daemon.
    url = f"http://{daemon.listeners['ws']}"
    result = arqon("version", "--http-url", url)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"arqon: HTTP 426 calling {url}/version: Failed to open a "
                                    "WebSocket connection")


def test_status_of_a_url_that_answers_no_json(daemon):
    # /metrics is Prometheus text; the query string keeps the appended /status out of the path.
    url = f"{http_url(daemon)}/metrics?x="
    result = arqon("status", "--http-url", url)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"arqon: Invalid JSON from {url}/status: ")


# -- tail -----------------------------------------------------------------------------------

def test_tail_raw_with_send_prints_welcome_response_ack(daemon):
    result = arqon("tail", "--ws-url", daemon.ws_url, "--limit", "3", "--raw", "--send",
                   '{"type": "command", "command": "op.store.list", "args": {}}')
    assert result.returncode == 0, result.stderr
    assert '"welcome": "Connected to ArqonBus"' in result.stdout.splitlines()[0]
    frames = lines(result.stdout)
    assert [f["type"] for f in frames] == ["message", "response", "command_response"]
    assert frames[1]["payload"]["message"] == "Store keys listed"
    assert result.stdout.splitlines()[1] == json.dumps(frames[1], sort_keys=True)


def test_tail_default_format(daemon, ws_env):
    result = arqon("tail", "--limit", "2", "--send", '{"type": "command", "command": "ping"}',
                   env=ws_env)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    match = FRAME_LINE_RE.match(first)
    assert match and match.group(2, 3, 4, 5) == ("message", "arqonbus", "", "")
    assert json.loads(match.group(6))["welcome"] == "Connected to ArqonBus"
    match = FRAME_LINE_RE.match(second)
    assert match and match.group(2) == "response"
    assert match.group(6) == json.dumps(json.loads(match.group(6)), sort_keys=True)


async def test_tail_follow_room_channel_prints_only_that_channel(daemon, connect_peer):
    peer = await connect_peer(daemon.ws_url)
    await peer.command("join_channel", {"room": "lab:bench"})
    proc = subprocess.Popen([*ARQON, "tail", "--follow", "--raw", "--room", "lab", "--channel",
                             "bench"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env({"ARQONBUS_WS_URL": daemon.ws_url}), cwd=ROOT)
    try:
        welcome = orjson.loads(proc.stdout.readline())  # printed once the join is done
        assert welcome["payload"]["welcome"] == "Connected to ArqonBus"
        await peer.send({"type": "message", "room": "science:general", "payload": {"n": 0}})
        await peer.send({"type": "message", "room": "lab:bench", "payload": {"n": 1}})
        await peer.send({"type": "message", "room": "lab:bench", "payload": {"n": 2}})
        for n in (1, 2):
            frame = orjson.loads(proc.stdout.readline())
            assert (frame["room"], frame["channel"], frame["payload"]) == ("lab", "bench",
                                                                           {"n": n})
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert proc.stdout.read() == "" and proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_tail_through_the_control_socket_when_no_url_is_given(daemon, control_env):
    result = arqon("tail", "--limit", "2", "--raw", "--send",
                   '{"type": "command", "command": "status"}', env=control_env)
    assert result.returncode == 0, result.stderr
    welcome, status = lines(result.stdout)
    assert welcome["payload"]["welcome"] == "Connected to ArqonBus"
    assert status["payload"]["data"]["client"]["transport"] == "control"


def test_tail_times_out_after_printing_what_came(daemon):
    result = arqon("tail", "--ws-url", daemon.ws_url, "--limit", "2", "--timeout-seconds",
                   "0.5", "--raw")
    assert result.returncode == 1
    assert lines(result.stdout)[0]["payload"]["welcome"] == "Connected to ArqonBus"
    assert result.stderr == "arqon: Timed out waiting for message\n"


@pytest.mark.parametrize("args, message", [
    (["--header", "NoColon"], "Invalid header format 'NoColon', expected 'Key:Value'"),
    (["--header", " :x"], "Invalid header ' :x': header key cannot be empty"),
    (["--send", "{"], "--send is not valid JSON: Expecting property name enclosed in double "
                      "quotes: line 1 column 2 (char 1)"),
    (["--send", "[1]"], "--send payload must be a JSON object"),
    (["--room", "lab"], 'cannot join lab: join_channel requires room and channel (as '
                        '{"room": R, "channel": C} or "R:C")'),
])
def test_tail_bad_input(daemon, args, message):
    result = arqon("tail", "--ws-url", daemon.ws_url, *args)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"arqon: {message}\n"


def test_tail_unreachable_url():
    port = closed_port()
    result = arqon("tail", "--ws-url", f"ws://127.0.0.1:{port}/")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"arqon: Failed to connect to ws://127.0.0.1:{port}/: [Errno 111] "
                             f"Connect call failed ('127.0.0.1', {port})\n")


def test_explicit_control_socket_that_is_missing(tmp_path):
    path = tmp_path / "absent.sock"
    result = arqon("cmd", "ping", "--control-socket", str(path))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"arqon: Failed to connect to {path}: No such file or directory "
                             "(arqond is not running, or its configuration names another "
                             "socket)\n")


# -- send -----------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["ws", "control"])
async def test_send_one_payload(daemon, connect_peer, transport, ws_env, control_env):
    peer = await connect_peer(daemon.ws_url)
    result = arqon("send", "science:general", '{"text": "hi"}',
                   env=ws_env if transport == "ws" else control_env)
    assert result.returncode == 0, result.stderr
    [ack] = lines(result.stdout)
    got = await peer.recv_type("message")
    assert got["payload"] == {"text": "hi"} and ack["type"] == "message_response"
    assert ack["id"] == got["id"] and ack["payload"] == {"text": "hi"}
    await peer.expect_silence(0.2)


async def test_send_stdin_lines_reports_each_and_fails_on_any(daemon, connect_peer,
                                                              control_env):
    peer = await connect_peer(daemon.ws_url)
    stdin = '{"n": 1}\nnot json\n\n[2, 3]\n{"n": 4}'
    result = arqon("send", "science:general", env=control_env, stdin=stdin)
    assert result.returncode == 1
    assert result.stderr == ("arqon: stdin line 2: invalid JSON: Expecting value: line 1 "
                             "column 1 (char 0)\n")
    acks = lines(result.stdout)
    assert [a["payload"] for a in acks] == [{"n": 1}, [2, 3], {"n": 4}]
    for ack in acks:  # in order, once each; nothing for the bad line
        got = await peer.recv_type("message")
        assert (got["id"], got["payload"]) == (ack["id"], ack["payload"])
    await peer.expect_silence(0.2)


async def test_a_refused_send_prints_the_error_frame(daemon, connect_peer, ws_env):
    peer = await connect_peer(daemon.ws_url)
    result = arqon("send", "bell\x07:x", '{"n": 1}', env=ws_env)
    assert result.returncode == 1
    [error] = lines(result.stdout)
    assert (error["type"], error["error_code"]) == ("error", "VALIDATION_ERROR")
    assert result.stderr.startswith("arqon: invalid room name 'bell\\x07': 1 to 128 "
                                    "characters, no control characters")
    assert result.stderr.endswith(" (VALIDATION_ERROR)\n")
    await peer.expect_silence(0.2)


def test_send_bad_json_argument_sends_nothing(daemon, ws_env):
    result = arqon("send", "science:general", "{nope", env=ws_env)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("arqon: payload is not valid JSON: Expecting property name "
                             "enclosed in double quotes: line 1 column 2 (char 1)\n")
    history = arqon("cmd", "history", "room=science", "channel=general", env=ws_env)
    assert json.loads(history.stdout)["history"] == []


# -- cmd ------------------------------------------------------------------------------------

def test_cmd_values_are_json_when_they_parse(daemon, control_env):
    for n in (1, 2, 3):
        assert arqon("send", "science:general", json.dumps({"n": n}),
                     env=control_env).returncode == 0
    result = arqon("cmd", "history", "room=science:general", "limit=2", env=control_env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert result.stdout == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["limit"] == 2  # the number 2, not the string "2"
    assert [entry["payload"] for entry in data["history"]] == [{"n": 2}, {"n": 3}]
    stored = arqon("cmd", "op.store.set", "key=k", 'value={"deep": [1, "x"]}',
                   env=control_env)
    assert stored.returncode == 0, stored.stderr
    got = json.loads(arqon("cmd", "op.store.get", "key=k", env=control_env).stdout)
    assert got["value"] == {"deep": [1, "x"]}


def test_cmd_admin_command_over_control_as_root_and_refused_over_websocket(daemon, ws_env,
                                                                           control_env):
    refused = arqon("cmd", "create_channel", "room=lab:bench", env=ws_env)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == ("arqon: create_channel: create_channel is for admin clients only "
                              "(AUTHORIZATION_ERROR)\n")
    created = arqon("cmd", "create_channel", "room=lab:bench", env=control_env)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["room"] == "lab"
    assert arqon("cmd", "ping", env={**control_env, **ws_env}).returncode == 0
    status = json.loads(arqon("cmd", "status", env={**control_env, **ws_env}).stdout)
    assert status["client"]["transport"] == "ws"  # a URL wins over the control socket


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "nosuch: unknown command 'nosuch'; the help command lists them "
                 "(UNKNOWN_COMMAND)"),
    (["ping", "novalue"], "argument 'novalue' is not KEY=VALUE"),
    (["ping", "=1"], "argument '=1' is not KEY=VALUE"),
    (["history", "room=science:general", "limit=0"],
     "history: limit must be between 1 and 500 (VALIDATION_ERROR)"),
])
def test_cmd_errors(daemon, control_env, args, message):
    result = arqon("cmd", *args, env=control_env)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"arqon: {message}\n"


def test_help_lists_every_subcommand():
    result = arqon("--help")
    assert result.returncode == 0
    for name in ("status", "version", "tail", "send", "cmd"):
        assert re.search(rf"^\s+{name}\s", result.stdout, re.M), name


def test_tail_jwt_flag_env_and_header_with_auth_on(make_daemon):
    daemon = make_daemon({"auth": {"enabled": True, "jwt_secret": "s3cret"}})
    admin = issue_hs256({"sub": "ops", "role": "admin"}, "s3cret")
    status = '{"type": "command", "command": "status"}'
    for extra, env in ((["--jwt", admin], {}), ([], {"ARQONBUS_AUTH_JWT": admin}),
                       (["--header", f"Authorization: Bearer {admin}"], {})):
        result = arqon("tail", "--ws-url", daemon.ws_url, "--limit", "2", "--raw",
                       "--send", status, *extra, env=env)
        assert result.returncode == 0, result.stderr
        client = lines(result.stdout)[1]["payload"]["data"]["client"]
        assert (client["subject"], client["admin"]) == ("ops", True)
    refused = arqon("tail", "--ws-url", daemon.ws_url, "--jwt", "not-a-token")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (f"arqon: Failed to connect to {daemon.ws_url}: server rejected "
                              "WebSocket connection: HTTP 401\n")


def test_tail_follow_ends_with_an_error_when_arqond_stops(daemon, control_env):
    proc = subprocess.Popen([*ARQON, "tail", "--follow"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(control_env), cwd=ROOT)
    try:
        assert "type=message sender=arqonbus" in proc.stdout.readline()  # the welcome
        assert daemon.stop() == 0
        assert proc.wait(10) == 1
        assert proc.stderr.read() == "arqon: Connection closed by arqond\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_send_reads_stdin_from_a_regular_file(daemon, connect_peer, control_env,
                                                    tmp_path):
    peer = await connect_peer(daemon.ws_url)
    source = tmp_path / "payloads.jsonl"
    source.write_text('{"n": 1}\n{"n": 2}\n')
    with source.open() as stdin:
        result = subprocess.run([*ARQON, "send", "science:general"], stdin=stdin,
                                capture_output=True, text=True, env=cli_env(control_env),
                                cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [a["payload"] for a in lines(result.stdout)] == [{"n": 1}, {"n": 2}]
    for n in (1, 2):
        assert (await peer.recv_type("message"))["payload"] == {"n": n}


# -- colour ---------------------------------------------------------------------------------

def on_a_terminal(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """arqon with stdout and stderr on a pseudo-terminal: its exit status and what it showed."""
    master, slave = pty.openpty()
    terminal = {k: v for k, v in cli_env({"TERM": "xterm", **(env or {})}).items()
                if k != "NO_COLOR" or env and k in env}
    proc = subprocess.Popen([*ARQON, *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=terminal, cwd=ROOT)
    os.close(slave)
    shown = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer of the terminal is gone
            break
        if not data:
            break
        shown.append(data)
    os.close(master)
    return proc.wait(30), b"".join(shown).decode()


def test_tail_and_errors_are_in_colour_on_a_terminal_only(daemon):
    shown = on_a_terminal("tail", "--ws-url", daemon.ws_url)
    assert shown[0] == 0
    assert "type=\x1b[1mmessage\x1b[0m sender=\x1b[32marqonbus\x1b[0m" in shown[1]
    port = closed_port()
    status, error = on_a_terminal("status", "--http-url", f"http://127.0.0.1:{port}")
    assert status == 1 and error.startswith("\x1b[1;31marqon:\x1b[0m Failed to reach ")
    for env in ({"NO_COLOR": "1"}, {"TERM": "dumb"}):
        assert "\x1b[" not in on_a_terminal("tail", "--ws-url", daemon.ws_url, env=env)[1]
        assert on_a_terminal("status", "--http-url", f"http://127.0.0.1:{port}",
                             env=env)[1].startswith("arqon: Failed to reach ")
    piped = arqon("tail", "--ws-url", daemon.ws_url)
    assert piped.returncode == 0 and "\x1b" not in piped.stdout + piped.stderr


def test_coloured_frames_and_moo_lines_keep_their_text():
    from arqond.cli.bus import format_frame
    from arqond.cli.narrative import format_moo_line
    frame = {"timestamp": "2026-02-12T14:30:00", "type": "error", "sender": "arqonbus",
             "room": "lab", "channel": "bench", "payload": {"k": 1}}
    plain = format_frame(frame, raw=False)
    coloured = format_frame(frame, raw=False, colour=True)
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain
    assert "type=\x1b[1;31merror\x1b[0m" in coloured and "room=\x1b[36mlab\x1b[0m" in coloured
    line = {"payload": {"ts": "2026-02-12T14:30:00Z", "content": "SPX sweep"}}
    assert format_moo_line(line, colour=True) == "\x1b[2m[14:30:00]\x1b[0m SPX sweep"
    assert format_moo_line(line) == "[14:30:00] SPX sweep"
