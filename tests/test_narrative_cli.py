"""`arqon hooks` on a real tmux server and moo-tail following the real daemon."""

from __future__ import annotations

import asyncio
import os
import shutil
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from arqond.cli import narrative as cli
from arqond.sdk import ArqonBusClient
from arqond.core.narrative.schema import schema_problem
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(60)
TRICKY = 'it\'s "odd" $(touch /tmp/x) `id` \\ #{x} %s'


def arqon(*args: str) -> subprocess.CompletedProcess:
    """The hooks part of the arqon command line, run as the hooks themselves run it."""
    return subprocess.run([sys.executable, "-m", "arqond.cli", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)


@pytest.fixture
def tmux(tmp_path):
    socket = str(tmp_path / "tmux.sock")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-S", socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, check=check, timeout=10)

    run("new-session", "-d", "-s", "dreader", "-x", "80", "-y", "20")
    run.socket = socket  # type: ignore[attr-defined]
    yield run
    run("kill-server", check=False)


async def events(peer, count: int) -> list[dict[str, Any]]:
    got = []
    while len(got) < count:
        frame = await peer.recv(10)
        assert frame["type"] == "event", frame
        got.append(frame)
    return got


async def test_hooks_log_valid_json_that_reaches_the_bus(daemon, connect_peer, tmux):
    peer = await connect_peer(daemon.ws_url)
    for target in ("dreader:events", "moo:presence"):
        await peer.command("join_channel", {"room": target})
    result = arqon("hooks", "install", "dreader", "-S", tmux.socket,
                   "--log-dir", str(daemon.log_dir))
    assert result.returncode == 0, result.stderr
    assert "6 hooks installed for tmux session dreader" in result.stdout

    tmux("new-window", "-t", "=dreader:", "-n", TRICKY)
    created = (await events(peer, 1))[0]
    assert (created["room"], created["channel"]) == ("dreader", "events")
    assert created["payload"]["event"] == "window-created"
    # tmux expands #{x} in the name it is given; everything else must survive tmux and sh.
    name, window_id = tmux("display-message", "-p", "-t", "=dreader:1",
                           "#{window_name}\t#{window_id}").stdout.rstrip("\n").split("\t")
    assert name == TRICKY.replace("#{x}", "")
    assert created["payload"]["window_name"] == name
    assert created["payload"]["window"] == window_id

    tmux("split-window", "-t", "=dreader:1")
    tmux("select-pane", "-t", "=dreader:1.0")
    pane_id = tmux("display-message", "-p", "-t", "=dreader:1.0", "#{pane_id}").stdout.strip()
    focused = (await events(peer, 1))[0]
    assert (focused["payload"]["event"], focused["payload"]["pane"]) == ("pane-focused",
                                                                         pane_id)

    short = tmux("split-window", "-P", "-F", "#{pane_id}", "-t", "=dreader:1",
                 "sleep 0.3").stdout.strip()
    died = (await events(peer, 1))[0]
    assert (died["room"], died["channel"], died["sender"]) == ("moo", "presence", "tmux")
    assert (died["payload"]["event"], died["payload"]["pane"]) == ("pane-died", short)

    client = await asyncio.create_subprocess_exec(
        "script", "-qfc", f"tmux -S {tmux.socket} attach -t =dreader", "/dev/null",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
    attached = (await events(peer, 1))[0]
    assert attached["payload"]["event"] == "client-attached"
    assert attached["payload"]["client"].startswith("/dev/pts/")
    tmux("detach-client", "-s", "=dreader")
    detached = (await events(peer, 1))[0]
    assert detached["payload"]["event"] == "client-detached"
    assert detached["payload"]["client"] == attached["payload"]["client"]
    await client.wait()

    for path in (daemon.log_dir / "dreader-events.jsonl", daemon.log_dir / "presence.jsonl"):
        for raw in path.read_bytes().splitlines():
            obj = orjson.loads(raw)
            assert schema_problem(obj) is None
            assert (obj["from"], obj.get("session")) in (("dreader", "dreader"), ("tmux", None))
    for frame in (created, focused, attached, detached):
        assert frame["sender"] == "dreader"
    for frame in (created, focused, died, attached, detached):
        assert "malformed" not in frame["metadata"]


async def test_hooks_remove_takes_them_off_and_leaves_other_zgents_alone(daemon,
                                                                          connect_peer, tmux):
    tmux("new-session", "-d", "-s", "other")
    log_dir = str(daemon.log_dir)
    for name in ("dreader", "dreader", "other"):  # installing twice leaves one set
        assert arqon("hooks", "install", name, "-S", tmux.socket,
                     "--log-dir", log_dir).returncode == 0
    for hook in ("pane-died", "pane-exited"):  # the shared pane-death entry, once
        assert tmux("show-hooks", "-g", hook).stdout.count(cli.MARKER) == 1
    result = arqon("hooks", "remove", "dreader", "-S", tmux.socket)
    assert result.returncode == 0, result.stderr
    assert cli.MARKER not in tmux("show-hooks", "-t", "=dreader:").stdout
    assert cli.MARKER in tmux("show-hooks", "-t", "=other:").stdout
    peer = await connect_peer(daemon.ws_url)
    await peer.command("join_channel", {"room": "dreader:*"})
    await peer.command("join_channel", {"room": "moo:presence"})
    tmux("new-window", "-t", "=dreader:")
    tmux("select-pane", "-t", "=dreader:1.0")
    pane = tmux("split-window", "-P", "-F", "#{pane_id}", "-t", "=other:", "true").stdout.strip()
    died = (await events(peer, 1))[0]  # pane death is still watched for the other Zgent
    assert died["payload"]["pane"] == pane
    await peer.expect_silence(1.0)
    assert not (daemon.log_dir / "dreader-events.jsonl").exists()
    assert arqon("hooks", "remove", "other", "-S", tmux.socket).returncode == 0
    for hook in ("pane-died", "pane-exited"):  # the last one out takes the shared entry
        assert cli.MARKER not in tmux("show-hooks", "-g", hook).stdout


def test_hooks_errors_are_clear(tmux, tmp_path):
    result = arqon("hooks", "install", "nobody", "-S", tmux.socket, "--log-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("arqon: tmux has-session") and "nobody" in result.stderr
    result = arqon("hooks", "install", "Bad/Name", "-S", tmux.socket)
    assert result.returncode == 1 and "arqon: invalid Zgent name 'Bad/Name'" in result.stderr
    result = arqon("hooks", "install", "dreader", "-S", tmux.socket,
                   "--log-dir", str(tmp_path / "with space"))
    assert result.returncode == 1 and "cannot carry safely" in result.stderr
    listed = tmux("show-hooks", "-t", "=dreader:").stdout
    assert cli.MARKER not in listed  # nothing half-installed


def test_emit_refuses_a_bad_field(tmp_path):
    target = tmp_path / "x-events.jsonl"
    result = arqon("hooks", "emit", "--file", str(target), "--from", "x", "--event", "e",
                   "novalue")
    assert result.returncode == 1 and "arqon: bad field 'novalue'" in result.stderr
    assert not target.exists()


@pytest.mark.parametrize("planted, reason", [
    ("symlink", "a symbolic link; not following it"),
    ("fifo", "No such device or address"),            # nobody reads it: never blocks
    ("read fifo", "not a regular file; not writing to it"),
    ("directory", "Is a directory"),
])
def test_emit_never_writes_through_what_another_user_put_at_a_shared_log(tmp_path, planted,
                                                                         reason):
    victim = tmp_path / "victim.txt"   # a file of the user whose hook runs
    victim.write_text("mine\n")
    presence = tmp_path / "presence.jsonl"
    reader = None
    if planted == "symlink":
        presence.symlink_to(victim)
    elif planted == "directory":
        presence.mkdir()
    else:
        os.mkfifo(presence)
        if planted == "read fifo":
            reader = os.open(presence, os.O_RDONLY | os.O_NONBLOCK)
    try:
        result = arqon("hooks", "emit", "--file", str(presence), "--from", "x", "--event", "e")
        if reader is not None:
            assert os.read(reader, 4096) == b""   # nothing went into the FIFO
    finally:
        if reader is not None:
            os.close(reader)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", f"arqon: cannot append to {presence}: {reason}\n")
    assert victim.read_text() == "mine\n"


def narrative_line(seq: int, **extra: Any) -> bytes:
    return orjson.dumps({"ts": f"2026-02-12T14:30:0{seq}Z", "from": "dreader",
                         "type": "narrative", "content": f"signal {seq}", **extra}) + b"\n"


async def test_moo_tail_prints_the_last_lines_then_follows(daemon):
    path = daemon.log_dir / "dreader-narrative.jsonl"
    with open(path, "ab") as handle:
        handle.write(b"".join(narrative_line(seq) for seq in (1, 2, 3)))
    await published(daemon, path)
    out = io.StringIO()
    follower = asyncio.create_task(cli.follow_moo(ArqonBusClient(daemon.ws_url), "dreader", out,
                                                  lines=2))
    try:
        while out.getvalue().count("\n") < 2:
            await asyncio.sleep(0.05)
        with open(path, "ab") as handle:
            handle.write(narrative_line(4, content={"volume": 125000}))
            handle.write(b"garbage\n")
        while out.getvalue().count("\n") < 4:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    finally:
        follower.cancel()
    assert out.getvalue().splitlines() == ["[14:30:02] signal 2", "[14:30:03] signal 3",
                                           '[14:30:04] {"volume":125000}',
                                           f"[{out.getvalue().splitlines()[3][1:9]}] garbage"]


def test_moo_tail_reports_a_daemon_it_cannot_reach():
    result = subprocess.run([sys.executable, "-m", "arqond.cli", "tail", "--moo", "dreader",
                             "--ws-url", "ws://127.0.0.1:1/"], capture_output=True, text=True,
                            cwd=ROOT, timeout=30)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("arqon: Failed to connect to ws://127.0.0.1:1/")


async def published(daemon, path: Path) -> None:
    """Until the checkpoint of ``path`` has reached its end: every line is on the bus."""
    checkpoint = daemon.state_dir / "narrative-checkpoints.json"
    while b'"offset":%d' % path.stat().st_size not in checkpoint.read_bytes():
        await asyncio.sleep(0.05)


async def test_arqon_tail_moo_follows_until_interrupted(daemon):
    def tail_command(name: str) -> list[str]:
        return [sys.executable, "-m", "arqond.cli", "tail", "--moo", name, "--ws-url",
                daemon.ws_url]

    bad = subprocess.run(tail_command("Bad/Name"), capture_output=True, text=True, cwd=ROOT,
                         timeout=30)
    assert bad.returncode == 1 and bad.stderr.startswith("arqon: invalid Zgent name")
    path = daemon.log_dir / "dreader-narrative.jsonl"
    with open(path, "ab") as handle:
        handle.write(narrative_line(5))
    await published(daemon, path)
    tail = await asyncio.create_subprocess_exec(*tail_command("dreader"), cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE)
    try:  # line 5 comes from history, so the tail has joined when it shows
        assert await asyncio.wait_for(tail.stdout.readline(), 10) == b"[14:30:05] signal 5\n"
        with open(path, "ab") as handle:
            handle.write(narrative_line(6))
        assert await asyncio.wait_for(tail.stdout.readline(), 10) == b"[14:30:06] signal 6\n"
    finally:
        tail.send_signal(2)  # SIGINT, as ^C in the pane
        assert await asyncio.wait_for(tail.wait(), 10) == 0


async def test_moo_tail_of_a_narrative_not_there_yet_says_what_it_waits_for(daemon):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARQONBUS_")}
    env["ARQONBUS_CONFIG"] = str(daemon.config_path)

    async def tail(name: str):
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "arqond.cli", "tail", "--moo", name, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    waiting = await tail("nosuch")
    try:
        assert await asyncio.wait_for(waiting.stderr.readline(), 10) == (
            f"arqon: no Zgent nosuch is registered and nosuch:narrative has no lines yet; "
            f"waiting for the first one (a line appended to {daemon.log_dir}/"
            "nosuch-narrative.jsonl registers nosuch); Ctrl-C to stop\n").encode()
        with open(daemon.log_dir / "nosuch-narrative.jsonl", "ab") as handle:
            handle.write(narrative_line(1))
        assert await asyncio.wait_for(waiting.stdout.readline(), 10) == \
            b"[14:30:01] signal 1\n"
    finally:
        waiting.send_signal(2)
        assert await asyncio.wait_for(waiting.wait(), 10) == 0
    # Now nosuch is registered; a registered Zgent that has not written is said as such.
    registered = subprocess.run([sys.executable, "-m", "arqond.cli", "zgent", "register",
                                 "quiet"], env=env, cwd=ROOT, capture_output=True, timeout=30)
    assert registered.returncode == 0, registered.stderr
    quiet = await tail("quiet")
    try:
        assert await asyncio.wait_for(quiet.stderr.readline(), 10) == (
            f"arqon: quiet:narrative has no lines yet; waiting for the first one "
            f"({daemon.log_dir}/quiet-narrative.jsonl); Ctrl-C to stop\n").encode()
    finally:
        quiet.send_signal(2)
        assert await asyncio.wait_for(quiet.wait(), 10) == 0
    # With history there is nothing to say: stderr stays empty.
    shown = await tail("nosuch")
    try:
        assert await asyncio.wait_for(shown.stdout.readline(), 10) == b"[14:30:01] signal 1\n"
    finally:
        shown.send_signal(2)
        assert await asyncio.wait_for(shown.wait(), 10) == 0
    assert await shown.stderr.read() == b""


def test_a_log_the_hooks_create_is_group_writable_whatever_the_umask(shared_moo_dir):
    if shutil.which("setpriv") is None or os.getuid() != 0:
        pytest.skip("needs root and setpriv to append as another uid")
    os.chown(shared_moo_dir, -1, 65534)  # the log dir's group; not setgid: emit sets it
    os.chmod(shared_moo_dir, 0o775)
    presence = os.path.join(shared_moo_dir, "presence.jsonl")
    emit = ["-m", "arqond.cli", "hooks", "emit", "--file", presence, "--event",
            "client-attached"]
    first = subprocess.run([sys.executable, *emit, "--from", "dreader"], cwd=ROOT,
                           capture_output=True, text=True, timeout=30,
                           preexec_fn=lambda: os.umask(0o022))
    assert first.returncode == 0, first.stderr
    info = os.stat(presence)
    assert (info.st_mode & 0o777, info.st_gid) == (0o664, 65534)
    # Another user of the group appends its own hooks' lines.
    other = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, *emit, "--from", "parseclipmate"], cwd="/",
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                           text=True, timeout=30)
    assert other.returncode == 0, other.stderr
    senders = [orjson.loads(line)["from"] for line in Path(presence).read_text().splitlines()]
    assert senders == ["dreader", "parseclipmate"]
    # A user outside the dir's group still gets 0664, in its own group.
    os.chmod(shared_moo_dir, 0o777)
    outsider_log = os.path.join(shared_moo_dir, "outsider-events.jsonl")
    outsider = subprocess.run(["setpriv", "--reuid=65534", "--regid=65533", "--clear-groups",
                               sys.executable, "-m", "arqond.cli", "hooks", "emit", "--file",
                               outsider_log, "--event", "e", "--from", "x"], cwd="/",
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True, timeout=30)
    assert outsider.returncode == 0, outsider.stderr
    info = os.stat(outsider_log)
    assert (info.st_mode & 0o777, info.st_gid) == (0o664, 65533)
