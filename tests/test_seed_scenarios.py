"""The tmuxMOO seed's own scenarios, run end to end by a member of the MOO group: section 5.2
(ParseClipmate asks DReader and gets the reply through its inbox, or over the socket) and
section 6 (DReader's narrative flowing to ParseClipmate and into the three tmux panes a human
watches), with the seed's commands where they work as written.

Everything the agents do runs as ``nobody`` (uid 65534) in group ``nogroup``, the MOO group
here, in a tmux server of its own: arqond (root in the tests) creates every file of the MOO
dir (mode 2755, not writable by members), and the agents write only their narratives, in the
log dir (mode 3775). Their ``arqon`` finds arqond through a world-readable copy of its
configuration, as /etc/arqond/arqond.toml is.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import orjson
import pytest

from tests.conftest import (AS_NOBODY, NOBODY, ROOT, TmuxServer, eventually, fixed_ports,
                            scaled)

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(os.getuid() != 0, reason="runs the agents as another uid")]

# The seed's DReader and ParseClipmate, as console programs in their tmux panes.
DREADER = r"""#!/bin/sh
# dreader --channel CHANNEL --output FILE: each line typed into its console stands for a
# message DReader saw on the Discord channel: it becomes a narrative entry in FILE, and the
# console says so. "/query volume SYMBOL ..." is answered on the console (the seed's
# send-keys example).
while [ $# -gt 0 ]; do
    case $1 in --channel) channel=$2; shift 2 ;; --output) output=$2; shift 2 ;; *) shift ;; esac
done
: >> "$output"
echo "dreader: reading #$channel into $output"
while IFS= read -r line; do
    case $line in
    "/query volume "*) set -- $line; echo "volume $3: 125000" ;;
    *) jq -cn --arg ts "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg content "$line" \
           '{ts: $ts, from: "dreader", type: "narrative", content: $content, tags: ["spx"]}' \
           >> "$output"
       echo "posted: $line" ;;
    esac
done
"""
PARSECLIPMATE = r"""#!/bin/sh
# parseclipmate --subscribe FILE --filter WORD --output FILE: follows a narrative and writes a
# signal for each entry whose content mentions WORD.
while [ $# -gt 0 ]; do
    case $1 in
    --subscribe) subscribe=$2; shift 2 ;; --filter) filter=$2; shift 2 ;;
    --output) output=$2; shift 2 ;; *) shift ;;
    esac
done
: >> "$output"
echo "parseclipmate: following $subscribe for $filter"
tail -n +1 -F "$subscribe" 2>/dev/null | while IFS= read -r entry; do
    printf '%s\n' "$entry" | jq -c --arg word "$filter" \
        --arg ts "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        'select(.content | ascii_downcase | contains($word))
         | {ts: $ts, from: "parseclipmate", type: "narrative",
            content: ("SIGNAL: " + .content), tags: ["spx", "signal"]}' >> "$output"
done
"""
# Section 6, "Setup Commands", as written; /var/log/moo becomes the test's log dir.
AGENT_SESSIONS = r"""
tmux new-session -d -s dreader
tmux send-keys -t dreader:0 'dreader --channel spx-flow --output /var/log/moo/dreader-narrative.jsonl' Enter
tmux new-session -d -s parseclipmate
tmux send-keys -t parseclipmate:0 'parseclipmate --subscribe /var/log/moo/dreader-narrative.jsonl --filter "spx" --output /var/log/moo/parseclipmate-narrative.jsonl' Enter
"""  # noqa: E501
VIEW_SESSION = r"""
tmux new-session -d -s moo-steve -n main
tmux split-window -t moo-steve:main -h
tmux split-window -t moo-steve:main.1 -v
tmux send-keys -t moo-steve:main.1 \
  "tail -f /var/log/moo/dreader-narrative.jsonl | jq --unbuffered -r '\"[\" + .ts[11:19] + \"] \" + .content'" Enter
tmux send-keys -t moo-steve:main.2 \
  "tail -f /var/log/moo/parseclipmate-narrative.jsonl | jq --unbuffered -r '\"[\" + .ts[11:19] + \"] \" + .content'" Enter
"""  # noqa: E501
SEED_PARAMS = {"type": "history", "symbol": "SPX", "since": "2026-02-12T14:00:00Z"}
SEED_RESULT = {"symbol": "SPX", "since": "2026-02-12T14:00:00Z",
               "entries": [{"ts": "2026-02-12T14:30:00Z", "volume": 2000,
                            "content": "SPX 5900C sweep 2000 contracts"}]}


def python_for_nobody() -> tuple[str, str]:
    """An interpreter nobody's shells may run arqon with, and the PYTHONPATH it needs: this
    one, when nobody may execute it (a shell cannot when it lies in root's 0700 home, where
    pyenv puts it); else the system's python of the same version, given this one's packages
    (the same ABI)."""
    probe = subprocess.run([*AS_NOBODY, "sh", "-c", f"exec {sys.executable} -c ''"],
                           capture_output=True, timeout=scaled(10))
    if probe.returncode == 0:
        return sys.executable, str(ROOT)
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if not os.access(python, os.X_OK):
        pytest.skip(f"no interpreter nobody may run: {sys.executable} is out of its reach")
    packages = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    return python, os.pathsep.join([str(ROOT), *packages])


class Members:
    """arqond, and a shell of ``nobody`` (in the MOO group) with tmux, ``arqon``, the two
    agents on its PATH and the MOO paths of the seed pointing at this arqond's."""

    def __init__(self, daemon, top: Path, tmux: TmuxServer) -> None:
        self.daemon = daemon
        self.top = top
        self.tmux = tmux
        self.moo_dir, self.log_dir = top / "moo", top / "log"
        bin_dir = top / "bin"
        bin_dir.mkdir()
        python, python_path = python_for_nobody()
        scripts = {"arqon": f'#!/bin/sh\nexec {python} -m arqond.cli "$@"\n',
                   "dreader": DREADER, "parseclipmate": PARSECLIPMATE}
        for name, text in scripts.items():
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        config = top / "arqond.toml"
        shutil.copy(daemon.config_path, config)
        config.chmod(0o644)
        self.env = tmux.env_for({**daemon.env, "ARQONBUS_CONFIG": str(config),
                                 "PYTHONPATH": python_path,
                                 "PATH": f"{bin_dir}:{os.environ['PATH']}"})
        # tmux starts login shells, which take PATH from /etc/profile: the user's own
        # profile puts the programs back on it, as a real user's would.
        profile = Path(self.env["HOME"], ".profile")
        profile.write_text(f'PATH="{bin_dir}:$PATH"; export PATH\n')
        profile.chmod(0o644)

    def local(self, script: str) -> str:
        return script.replace("/var/log/moo", str(self.log_dir)).replace(
            "/var/moo", str(self.moo_dir))

    def ok(self, script: str) -> str:
        """What ``script`` prints, run by bash as nobody with the seed's paths made this
        test's; it must succeed."""
        done = subprocess.run([*AS_NOBODY, "bash", "-e", "-o", "pipefail", "-c",
                               self.local(script)], capture_output=True, text=True,
                              env=self.env, cwd=self.top, timeout=scaled(60))
        assert done.returncode == 0, f"{script}\nexit {done.returncode}: {done.stderr}"
        return done.stdout


@pytest.fixture
def members(make_daemon, tmux_server):
    top = Path(tempfile.mkdtemp(prefix="arqond-seed-"))
    top.chmod(0o755)
    for name, mode in (("moo", 0o2755), ("log", 0o3775)):
        (top / name).mkdir()
        os.chown(top / name, 0, NOBODY)
        (top / name).chmod(mode)
    daemon = make_daemon({**fixed_ports(),
                          "moo": {"dir": str(top / "moo"), "log_dir": str(top / "log"),
                                  "group": "nogroup"}})
    yield Members(daemon, top, tmux_server(NOBODY))
    shutil.rmtree(top, ignore_errors=True)


def test_section_5_2_parseclipmate_asks_dreader_and_reads_the_reply_as_a_member(members,
                                                                                 serving):
    members.ok("arqon zgent register dreader --capability query:volume\n"
               "arqon zgent register parseclipmate")
    serving(members.daemon, "dreader", "--exec", str(ROOT / "examples/dreader-handler.sh"),
            env=members.env, prefix=AS_NOBODY)
    query = orjson.dumps({"id": "q-456", "method": "query", "params": SEED_PARAMS,
                          "replyTo": "parseclipmate"}).decode()
    # Via named pipes, as the seed writes it. The seed's reader, `read -r response <
    # /var/moo/parseclipmate-inbox`, would be a second reader of the FIFO; arqond is its one
    # reader and keeps the reply in parseclipmate's mailbox, which `arqon recv` reads.
    replied = members.ok(f"echo '{query}' \\\n  > /var/moo/dreader-inbox\n"
                         "arqon recv parseclipmate --wait 10 | jq -c '.result'")
    assert orjson.loads(replied) == SEED_RESULT
    # Via the Unix socket, as the seed writes it (socat given time with -t), and arqon call.
    line = orjson.dumps({"id": "q-456", "method": "query", "params": SEED_PARAMS}).decode()
    answered = members.ok(f"echo '{line}' \\\n  | socat -t 30 - UNIX-CONNECT:/var/moo/dreader.sock")
    assert orjson.loads(answered) == {"jsonrpc": "2.0", "id": "q-456", "result": SEED_RESULT}
    called = members.ok(f"arqon call dreader query '{orjson.dumps(SEED_PARAMS).decode()}'")
    assert orjson.loads(called) == SEED_RESULT
    # The member owns what it registered, and needed no file of its own in the MOO dir.
    registry = orjson.loads((members.moo_dir / "registry.json").read_bytes())["zgents"]
    assert registry["dreader"]["status"] == registry["parseclipmate"]["status"] == "active"
    assert stat.S_IMODE(members.moo_dir.stat().st_mode) == 0o2755
    assert all(path.stat().st_uid == 0 for path in members.moo_dir.iterdir())


async def test_section_6_dreaders_narrative_reaches_parseclipmate_and_the_humans_three_panes(
        members, serving):
    tmux = members.tmux
    # The agents are Zgents with their panes in the registry: window 0 of their sessions, as
    # the seed's setup makes them.
    members.ok("arqon zgent register dreader --pane dreader:0.0 --capability query:volume\n"
               "arqon zgent register parseclipmate --pane parseclipmate:0.0")
    members.ok(AGENT_SESSIONS)
    tmux.shows("dreader:0.0", "dreader: reading #spx-flow")
    tmux.shows("parseclipmate:0.0", "parseclipmate: following")
    members.ok(VIEW_SESSION)
    # DReader's own handler, run by its user: it answers queries and relays its pane.
    serving(members.daemon, "dreader", "--relay-pane", "--exec",
            str(ROOT / "examples/dreader-handler.sh"), env=members.env, prefix=AS_NOBODY)

    # Discord messages reach DReader (typed into its console through arqond, Layer 1).
    for message in ("NDX quiet today", "SPX volume spike detected at 5835"):
        members.ok(f"arqon pane dreader --send '{message}' --enter")
    # What Steve sees: DReader's narrative top right, ParseClipmate's signals bottom right,
    # the seed's capture-pane for each.
    dreader_view = tmux.shows("moo-steve:main.1", "] SPX volume spike detected at 5835",
                              joined=True)
    signals = tmux.shows("moo-steve:main.2", "] SIGNAL: SPX volume spike detected at 5835",
                         joined=True)
    assert "] NDX quiet today" in dreader_view and "NDX" not in signals
    seen = members.ok("tmux capture-pane -t moo-steve:main.2 -p | head -20")   # as wrapped
    assert "SIGNAL: SPX" in seen
    # The same lines went out on the bus, once each, in order (the panes follow the files:
    # the bus has a line once arqond has read and stored it, a moment later).
    for zgent, contents in (("dreader", ["NDX quiet today",
                                         "SPX volume spike detected at 5835"]),
                            ("parseclipmate", ["SIGNAL: SPX volume spike detected at 5835"])):
        async def published() -> list[str]:
            history = orjson.loads(members.ok(
                f"""arqon call {zgent} arqon.history '{{"channel": "narrative"}}'"""))
            return [m["payload"]["content"] for m in history["messages"]]
        assert await eventually(published, done=lambda got: len(got) >= len(contents)) == \
            contents

    # Steve's command pane (left): he asks DReader over its socket, and looks at its pane.
    tmux("send-keys", "-t", "moo-steve:main.0",
         """arqon call dreader query '{"symbol": "SPX"}' | jq -c .volume""", "Enter")
    tmux.shows("moo-steve:main.0", "\n125000\n")
    looked = members.ok("arqon pane dreader")
    assert "posted: SPX volume spike detected at 5835" in looked
    # Section 2.4: "Ask DReader to run a query", then "wait for output to appear, then
    # capture"; and "Send Ctrl-C to cancel a hung command".
    members.ok("arqon pane dreader --send '/query volume SPX 2026-02-12' --enter")
    tmux.shows("dreader:0.0", "volume SPX: 125000")
    assert "volume SPX: 125000" in members.ok("arqon pane dreader --lines 5")
    members.ok("arqon pane dreader --key C-c")
    console = tmux.shows("dreader:0.0", "^C\n$").rstrip("\n")
    assert console.endswith("volume SPX: 125000\n^C\n$")   # DReader ended: its shell's prompt
    audit = members.daemon.wait_for_line("typing into pane dreader:0.0: keys C-c")
    assert f"UID={NOBODY}" in audit
