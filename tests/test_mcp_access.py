"""arqon mcp run by other users: the policy bites with the CLI's words (registering a Zgent
outside the MOO group, another Zgent's inbox and room, room moo), and a member's agent is a
Zgent that others call. Also where it connects: the bus socket, else the WebSocket port."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, fixed_ports, run_arqon
from tests.mcp_client import mcp_agent, mcp_environment

NOBODY = 65534
OUTSIDER = ("setpriv", f"--reuid={NOBODY}", "--regid=65533", "--clear-groups")
MEMBER = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
needs_root = pytest.mark.skipif(os.getuid() != 0 or shutil.which("setpriv") is None,
                                reason="runs arqon mcp as another uid")


@pytest.fixture
def shared(make_daemon):
    """A daemon whose MOO group is nogroup and whose bus socket, dirs and configuration file
    another uid can reach; the environment that points arqon mcp at it."""
    top = Path(tempfile.mkdtemp(prefix="arqond-mcp-"))
    top.chmod(0o755)
    for name in ("moo", "log"):
        (top / name).mkdir(mode=0o755)
    daemon = make_daemon({"server": {"bus_socket": str(top / "bus.sock")},
                          "moo": {"dir": str(top / "moo"), "log_dir": str(top / "log"),
                                  "group": "nogroup"}})
    config = top / "arqond.toml"
    shutil.copy(daemon.config_path, config)
    config.chmod(0o644)
    yield daemon, {**mcp_environment(daemon), "ARQONBUS_CONFIG": str(config)}
    shutil.rmtree(top, ignore_errors=True)


def run_mcp(env: dict[str, str], prefix: tuple[str, ...], *args: str
            ) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "arqond.cli", "mcp", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=30)


@needs_root
def test_a_user_outside_the_moo_group_may_not_register_a_zgent_and_nothing_is_left(shared):
    daemon, env = shared
    result = run_mcp(env, OUTSIDER, "--zgent", "intruder")
    assert result.stderr == (
        "arqon: zgent.register: not allowed to register a Zgent (allowed: members of the MOO "
        "group (moo.group) and admins) (AUTHORIZATION_ERROR)\n")
    assert (result.returncode, result.stdout) == (1, "")
    registry = json.loads(run_arqon(daemon, "zgent", "list").stdout)["zgents"]
    assert "intruder" not in registry


@needs_root
def test_an_agent_may_not_serve_a_zgent_whose_owner_did_not_let_it(shared):
    daemon, env = shared
    run_arqon(daemon, "zgent", "register", "dreader")
    member = run_mcp(env, MEMBER, "--zgent", "dreader")
    assert (member.stderr, member.returncode, member.stdout) == (
        "arqon: cannot serve dreader: not allowed to serve Zgent dreader "
        f"(allowed: {DREADERS_OWNERS})\n", 6, "")
    outsider = run_mcp(env, OUTSIDER, "--zgent", "dreader")
    # Not in the MOO group: refused at the registration it starts with, before any socket.
    assert (outsider.stderr, outsider.returncode, outsider.stdout) == (
        "arqon: zgent.register: not allowed to register a Zgent (allowed: members of the MOO "
        "group (moo.group) and admins) (AUTHORIZATION_ERROR)\n", 1, "")
    registry = json.loads(run_arqon(daemon, "zgent", "list").stdout)["zgents"]
    assert registry["dreader"]["status"] == "active"  # another's Zgent: left as it was
    assert os.path.exists(f"{env_moo(env)}/dreader.sock")


@needs_root
async def test_another_users_agent_may_not_write_to_an_inbox_or_speak_in_room_moo(
        shared, connect_peer):
    daemon, env = shared
    run_arqon(daemon, "zgent", "register", "dreader")
    watcher = await connect_peer(daemon.ws_url)
    await watcher.command("join_channel", {"room": "moo:chat"})
    async with mcp_agent(daemon, prefix=OUTSIDER, env=env) as agent:
        assert await agent.refused("publish", room="moo", channel="chat", payload="hi") == (
            "publish to moo:chat: not allowed to publish in room moo (allowed: members of the "
            "MOO group (moo.group) and admins) (AUTHORIZATION_ERROR)")
        join = "(members of group nogroup may: sudo usermod -aG nogroup $USER)"
        assert await agent.refused("send", to="dreader", message="hi") == (
            f"cannot write to {env_moo(env)}/dreader-inbox: Permission denied {join}")
        assert await agent.refused("call", zgent="dreader", method="ask") == (
            f"cannot connect to {env_moo(env)}/dreader.sock: Permission denied {join}")
    await watcher.expect_silence()  # nothing reached room moo
    assert run_arqon(daemon, "recv", "dreader").returncode == 1  # nor dreader's mailbox


@needs_root
async def test_another_users_agent_may_not_read_an_inbox_or_speak_in_a_zgents_room(shared):
    daemon, env = shared
    run_arqon(daemon, "zgent", "register", "dreader")
    async with mcp_agent(daemon, prefix=OUTSIDER, env=env) as agent:
        assert await agent.refused("read", room="dreader", channel="inbox") == (
            f"cursor.read: not allowed to read dreader:inbox (allowed: {DREADERS_OWNERS}) "
            "(AUTHORIZATION_ERROR)")
        assert await agent.refused("read", room="dreader", channel="inbox", wait=5) == (
            f"join_channel: not allowed to read dreader:inbox (allowed: {DREADERS_OWNERS}) "
            "(AUTHORIZATION_ERROR)")
        assert await agent.refused("publish", room="dreader", channel="narrative",
                                   payload="I am dreader") == (
            "publish to dreader:narrative: not allowed to publish in Zgent dreader's room "
            f"(allowed: {DREADERS_OWNERS}) (AUTHORIZATION_ERROR)")


DREADERS_OWNERS = "the owners of dreader: who registered it, its uids and groups; and admins"


def env_moo(env: dict[str, str]) -> str:
    return str(Path(env["ARQONBUS_CONFIG"]).parent / "moo")


@needs_root
async def test_a_moo_group_members_agent_registers_serves_and_leaves_its_zgent(shared):
    daemon, env = shared
    async with mcp_agent(daemon, "--zgent", "helper", prefix=MEMBER, env=env) as helper:
        entry = (await helper.tool("zgents"))["zgents"]["helper"]
        assert entry["status"] == "active"
        asking = subprocess.Popen([sys.executable, "-m", "arqond.cli", "call", "helper", "ask",
                                   '{"q": "ready?"}'], stdout=subprocess.PIPE, text=True,
                                  env=env, cwd=ROOT)
        [request] = (await helper.tool("requests", wait=20))["requests"]
        assert request["params"] == {"q": "ready?"}
        await helper.tool("reply", id=request["id"], result={"ready": True})
        assert asking.wait(30) == 0 and json.loads(asking.stdout.read()) == {"ready": True}
        asking.stdout.close()
        log = Path(env_moo(env)).parent / "log"  # root's, mode 0755: not the agent's to write
        assert await helper.refused("narrate", content="hello") == (
            f"cannot append to {log}/helper-narrative.jsonl: Permission denied")
    registry = json.loads(run_arqon(daemon, "zgent", "list").stdout)["zgents"]
    assert registry["helper"]["status"] == "offline"
    assert not os.path.exists(f"{env_moo(env)}/helper.sock")


async def test_without_a_bus_socket_it_uses_the_websocket_port_of_the_configuration(
        make_daemon):
    sections = fixed_ports()
    sections["server"]["bus_socket"] = ""
    daemon = make_daemon(sections)
    assert "bus" not in daemon.listeners
    async with mcp_agent(daemon, "--zgent", "alpha") as alpha:
        assert (await alpha.tool("zgents"))["zgents"]["alpha"]["status"] == "active"
        registry = json.loads((await alpha.session.read_resource("arqon://zgents"))
                              .contents[0].text)
        assert list(registry["zgents"]) == ["alpha"]
    assert "transport=ws client_type=human peer=127.0.0.1" in "\n".join(daemon.lines)


def readme_configurations() -> list[list[str]]:
    """The commands the README tells a runtime to run: its .mcp.json, and its `claude mcp
    add` line (the words after --)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### AI agents: `arqon mcp`"):text.index("## Configuration")]
    server = json.loads(re.search(r"```json\n(.*?)```", section, re.S)[1])["mcpServers"]
    claude = re.search(r"`claude mcp add arqond -- ([^`]*)`", section)[1].split()
    return [[server["arqond"]["command"], *server["arqond"]["args"]], claude]


@pytest.mark.parametrize("command", readme_configurations(), ids=[".mcp.json", "claude"])
async def test_the_readme_configurations_start_an_agent_as_documented(daemon, tmp_path,
                                                                     command):
    bin_dir = tmp_path / "bin"  # `arqon` on PATH, as the packages install it
    bin_dir.mkdir()
    (bin_dir / "arqon").write_text(f'#!/bin/sh\nexec {sys.executable} -m arqond.cli "$@"\n')
    (bin_dir / "arqon").chmod(0o755)
    env = {**mcp_environment(daemon), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    async with mcp_agent(daemon, launcher=command, env=env) as reviewer:
        entry = (await reviewer.tool("zgents"))["zgents"]["reviewer"]
        assert entry["status"] == "active"
        assert entry["capabilities"] == (["review:code"] if "--capability" in command else [])
