"""Every arqon subcommand finds arqond from the daemon's own configuration file (--config,
ARQONBUS_CONFIG): ports, control socket, MOO and log dirs; explicit flags and variables win."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import orjson
import pytest

from tests.conftest import ROOT, arqon_command, fixed_ports, free_ports, run_as_nobody

pytestmark = pytest.mark.timeout(120)
ZGENTS = {"zgents": {"dreader": {}}}


def arqon(*args: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(arqon_command(*args), capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=60, **kwargs)


def config_only(daemon, **extra: str) -> dict[str, str]:
    """The daemon's environment (no ARQONBUS_* at all) with only its config file named."""
    return {**daemon.env, "ARQONBUS_CONFIG": str(daemon.config_path), **extra}


def client_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)["client"]


def test_one_config_file_points_every_subcommand_at_another_daemon(make_daemon, tmp_path):
    daemon = make_daemon({**fixed_ports(), **ZGENTS})
    env = config_only(daemon)
    status = arqon("status", env=env)
    assert status.returncode == 0, status.stderr
    assert orjson.loads(status.stdout)["listeners"]["http"] == daemon.listeners["http"]
    assert arqon("version", env=env).returncode == 0
    # The bus through the configuration's control socket, the user named after the login.
    assert client_of(arqon("cmd", "status", env=env))["transport"] == "control"
    sent = arqon("send", "science:general", '{"k": 1}', env=env)
    assert sent.returncode == 0 and orjson.loads(sent.stdout)["type"] == "message_response"
    tail = arqon("tail", "--raw", env=env)
    assert tail.returncode == 0 and '"welcome"' in tail.stdout
    assert "dreader" in orjson.loads(arqon("zgent", "list", env=env).stdout)["zgents"]
    # Without a control socket it may use, the configuration's bus socket (the WebSocket
    # protocol), and without that too its WebSocket port.
    for bus_socket in (str(daemon.tmp / "bus.sock"), ""):
        over_ws = arqon("cmd", "status", env=config_only(
            daemon, ARQONBUS_CONTROL_SOCKET=str(tmp_path / "none.sock"),
            ARQONBUS_BUS_SOCKET=bus_socket))
        assert client_of(over_ws)["transport"] == "ws"
    # The Zgents' files in the configuration's moo.dir.
    assert arqon("send-to", "dreader", '{"n": 1}', env=env).returncode == 0
    assert orjson.loads(arqon("recv", "dreader", env=env).stdout) == {"n": 1}
    assert orjson.loads(arqon("call", "dreader", "arqon.ping", env=env).stdout)["pong"]
    unserved = arqon("pane", "dreader", env=env)
    assert unserved.returncode == 4 and "dreader is not serving" in unserved.stderr
    serve = subprocess.Popen(arqon_command("serve", "dreader", "--exec", "echo 7"), cwd=ROOT,
                             env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stderr.readline() == "arqon: serving dreader with echo 7\n"
        assert arqon("call", "dreader", "seven", env=env).stdout == "7\n"
    finally:
        serve.terminate()
        serve.wait(20)
    # --config instead of the variable, before or after the subcommand.
    without = {**daemon.env}
    for args in (["--config", str(daemon.config_path), "zgent", "list"],
                 ["zgent", "list", "--config", str(daemon.config_path)]):
        assert "dreader" in orjson.loads(arqon(*args, env=without).stdout)["zgents"]


def test_hooks_write_to_the_configurations_log_dir(make_daemon, tmp_path):
    daemon = make_daemon()
    tmux_socket = str(tmp_path / "tmux.sock")
    subprocess.run(["tmux", "-S", tmux_socket, "-f", "/dev/null", "new-session", "-d", "-s",
                    "dreader"], check=True, timeout=10)
    try:
        installed = arqon("hooks", "install", "dreader", "-S", tmux_socket,
                          env=config_only(daemon))
        assert installed.returncode == 0, installed.stderr
        hooks = subprocess.run(["tmux", "-S", tmux_socket, "show-hooks", "-t", "dreader:"],
                               capture_output=True, text=True, check=True).stdout
        assert f"--file {daemon.log_dir}/dreader-events.jsonl" in hooks
        assert f"--file {daemon.log_dir}/presence.jsonl" in hooks
    finally:
        subprocess.run(["tmux", "-S", tmux_socket, "kill-server"], capture_output=True)


def test_flags_and_variables_win_over_the_config(make_daemon, tmp_path):
    daemon = make_daemon({**fixed_ports(), **ZGENTS})
    [closed] = free_ports(1)
    env = config_only(daemon)
    refused = (f"arqon: Failed to reach http://127.0.0.1:{closed}/status: [Errno 111] "
               "Connection refused\n")
    for args, extra, status, message in (
            (["status", "--http-url", f"http://127.0.0.1:{closed}"], {}, 1, refused),
            (["status"], {"ARQONBUS_HTTP_URL": f"http://127.0.0.1:{closed}"}, 1, refused),
            (["recv", "dreader"], {"ARQONBUS_MOO_DIR": str(tmp_path)}, 4,
             f"arqon: no socket {tmp_path}/dreader.sock: the Zgent is not registered (arqon "
             "zgent list), or arqond uses another MOO dir (--config)\n")):
        result = arqon(*args, env={**env, **extra})
        assert (result.returncode, result.stdout, result.stderr) == (status, "", message)
    ws = arqon("cmd", "status", env={**env, "ARQONBUS_WS_URL": f"ws://127.0.0.1:{closed}/"})
    assert ws.returncode == 1 and ws.stderr.startswith(
        f"arqon: Failed to connect to ws://127.0.0.1:{closed}/")


def test_a_config_that_cannot_say_where_the_daemon_is_gets_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARQONBUS_")}
    free_port = tmp_path / "free.toml"
    free_port.write_text("[server]\nhttp_port = 0\nport = 0\n"
                         f'control_socket = "{tmp_path}/none.sock"\n'
                         f'bus_socket = "{tmp_path}/none-bus.sock"\n')
    for args, message in (
            (["status"], f"arqon: {free_port} sets server.http_port = 0 (a free port picked "
                         "when arqond starts): give --http-url or ARQONBUS_HTTP_URL\n"),
            (["zgent", "list"], f"arqon: {free_port} sets server.port = 0 (a free port "
                                "picked when arqond starts): give the WebSocket URL "
                                "(ARQONBUS_WS_URL)\n")):
        result = arqon(*args, env={**env, "ARQONBUS_CONFIG": str(free_port)})
        assert (result.returncode, result.stdout, result.stderr) == (1, "", message)
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    result = arqon("status", "--config", str(broken), env=env)
    assert result.returncode == 1 and result.stderr.startswith(
        f"arqon: {broken}: not valid TOML: ")
    missing = arqon("recv", "dreader", "--config", str(tmp_path / "nope.toml"), env=env)
    assert (missing.returncode, missing.stderr) == (
        1, f"arqon: {tmp_path}/nope.toml: cannot read: No such file or directory\n")


def test_a_control_socket_this_user_may_not_use_is_passed_over_for_the_bus_socket(
        make_daemon, shared_moo_dir):
    if shutil.which("setpriv") is None or os.getuid() != 0:
        pytest.skip("needs root and setpriv to run arqon as another uid")
    # Without loopback identity a TCP peer is its address: the principal tells the doors apart.
    # Sockets and configuration where another uid can reach them (the test's own dir is
    # private), so that the control socket's mode is what refuses.
    sections = fixed_ports()
    sections["server"].update(admin_group="nogroup",
                              control_socket=os.path.join(shared_moo_dir, "control.sock"),
                              bus_socket=os.path.join(shared_moo_dir, "bus.sock"))
    daemon = make_daemon({**sections, "auth": {"loopback_identity": False}})
    assert os.stat(daemon.control_path).st_mode & 0o007 == 0  # others may not connect
    readable = os.path.join(shared_moo_dir, "arqond.toml")
    shutil.copy(daemon.config_path, readable)
    os.chmod(readable, 0o644)

    def as_outsider(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65533", "--clear-groups",
             *arqon_command(*args)], capture_output=True, text=True, cwd="/", timeout=60,
            env={**daemon.env, "ARQONBUS_CONFIG": readable, "PYTHONPATH": str(ROOT), **env})
    over_bus = client_of(as_outsider("cmd", "status"))
    assert (over_bus["principal"], over_bus["admin"], over_bus["screen_name"]) == (
        "nobody", False, "nobody")   # the kernel named the peer: the bus socket
    over_tcp = client_of(as_outsider("cmd", "status", ARQONBUS_BUS_SOCKET=""))
    assert (over_tcp["principal"], over_tcp["admin"]) == ("ip:127.0.0.1", False)
    # Asked for by name, the control socket's refusal names the group that may.
    named = as_outsider("cmd", "status", "--control-socket", daemon.control_path)
    assert (named.returncode, named.stdout, named.stderr) == (1, "", (
        f"arqon: Failed to connect to {daemon.control_path}: Permission denied (members of "
        "group nogroup may: sudo usermod -aG nogroup $USER)\n"))


def test_the_cli_names_itself_after_the_login_user_and_broadcasts_say_so(make_daemon):
    daemon = make_daemon({**fixed_ports(), **ZGENTS})
    login = pwd.getpwuid(os.getuid()).pw_name
    for extra in ({}, {"ARQONBUS_WS_URL": daemon.ws_url}):  # control socket, WebSocket
        env = config_only(daemon, **extra)
        assert client_of(arqon("cmd", "status", env=env))["screen_name"] == login
        sent = arqon("send", "moo:broadcast", f'{{"content": "via {sorted(extra)}"}}', env=env)
        assert sent.returncode == 0, sent.stderr
        last = (daemon.moo_dir / "broadcast.jsonl").read_text().splitlines()[-1]
        assert orjson.loads(last)["from"] == login
    # A URL that names a screen_name keeps it.
    named = arqon("cmd", "status", env=config_only(
        daemon, ARQONBUS_WS_URL=daemon.ws_url + "?screen_name=ops"))
    assert client_of(named)["screen_name"] == "ops"


def test_a_members_broadcast_sent_with_arqon_send_is_from_its_own_user_name(make_daemon,
                                                                          shared_moo_dir):
    daemon = make_daemon({"moo": {"dir": shared_moo_dir, "group": "nogroup"}})
    log = os.path.join(shared_moo_dir, "broadcast.jsonl")

    def send(payload: str) -> subprocess.CompletedProcess:
        return run_as_nobody(daemon, shared_moo_dir, "send", "moo:broadcast", payload,
                             env={"ARQONBUS_WS_URL": daemon.ws_url})
    sent = send('{"content": "maintenance at 11:00"}')
    assert sent.returncode == 0, sent.stdout + sent.stderr
    with open(log, "rb") as lines:
        last = orjson.loads(lines.read().splitlines()[-1])
    assert (last["from"], last["content"]) == ("nobody", "maintenance at 11:00")
    # Another name is for admins; nothing is appended.
    forged = send('{"content": "stop everything", "from": "orchestrator"}')
    error = orjson.loads(forged.stdout)
    assert (forged.returncode, error["error_code"], error["error"]) == (
        1, "AUTHORIZATION_ERROR", "not allowed to broadcast as orchestrator (allowed: admins)")
    with open(log, "rb") as lines:
        assert b"stop everything" not in lines.read()
