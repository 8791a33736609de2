"""Every example of the README and of the man pages runs: a page never shows a command that
fails.

Each document gets a daemon of its own, with fixed free ports and its own dirs, and the
document's system paths are rewritten to that daemon's (PATHS). `arqon` and `arqond` are on
PATH and ARQONBUS_CONFIG names the daemon's file, so the examples run as written. Each shell
command must exit 0 (with pipefail); a command that runs until interrupted (--follow, serve,
curl -N, tail -f, a bot) is started in the background, and must still be running, or have
exited 0, when the document is done. A TOML example must pass `arqond --check-config`. The few
examples that cannot run here are in NOT_RUN, each with the test that covers it instead.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, fixed_ports

pytestmark = pytest.mark.timeout(300)
MAN = ROOT / "man"
DOCUMENTS = ("README.md", "arqon.1", "arqond-moo.7", "arqond.8", "arqond.conf.5.in")
# Zgents each document takes as already there (the others it registers itself).
ZGENTS = {"arqon.1": ["parseclipmate"], "arqond-moo.7": ["dreader", "parseclipmate"]}
# (document, first line of the block): why it is not run here, and what shows it instead.
NOT_RUN = {
    ("README.md", "make run     # set up (virtualenv + dependencies) and run arqond in the "
                  "foreground"): "the whole setup and suite: test_dev_install.py runs "
                                 "dev-install, CI runs make test",
    ("README.md", "make deb                          # dist/arqond_<version>_amd64.deb, checked "
                  "with lintian"): "builds the packages: test_packaging.py",
    ("README.md", "apt install ./dist/arqond_*_amd64.deb    # creates user arqond and group "
                  "zgents, enables and"): "installs the package: test_packaging.py boots it",
    ("arqon.1", "ARQONBUS_AUTH_JWT=$(cat ~/.arqon-token) \\"):
        "a remote bus with a token: test_cli.py runs tail with --jwt against auth",
    ("arqond.8", "systemctl enable --now arqond.socket arqond-telemetry.socket \\"):
        "systemd as PID 1: test_system_nspawn.py",
    ("arqond.8", "PYTHONPATH=/usr/lib/arqond ARQONBUS_WS_URL=ws://127.0.0.1:9100 \\"):
        "ArqonBus's own hello_world_bot.py, not in this tree: test_sdk_compat.py runs it",
    ("arqond.8", "arqond --daemon --pidfile /run/arqond.pid"):
        "detaches a daemon on the default ports: test_lifecycle.py "
        "test_daemon_mode_pidfile",
    ("arqond.conf.5.in", "# arqond --check-config && systemctl reload arqond"):
        "systemd as PID 1: test_system_nspawn.py reloads",
}
# Commands that run until interrupted: a prefix, and what they say once ready (or None).
FOLLOWERS = ((re.compile(r"arqon serve\b"), "arqon: serving "),
             (re.compile(r"\S*python\S* examples/hello-bot\.py"), "listening on"),
             (re.compile(r"arqon tail\b.*--(follow|moo)\b"), None),
             (re.compile(r"curl -s?N\b"), None), (re.compile(r"tail -f\b"), None),
             (re.compile(r"arqond (?!.*--check-config)"), None))
HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?")
# A command's last `&`, and a comment after it.
BACKGROUND = re.compile(r"(?<![&|])&\s*(#[^'\"]*)?$")


@dataclass
class Block:
    document: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0]


def unroff(text: str) -> str:
    return (text.replace("\\-", "-").replace("\\(dq", '"').replace("\\&", "")
            .replace("\\e", "\\"))


def blocks(document: str) -> list[Block]:
    """The shell (and TOML) examples of a document: README's sh blocks, and the literal
    displays of a man page's EXAMPLES section."""
    if document == "README.md":
        text = (ROOT / document).read_text()
        return [Block(document, body) for body in re.findall(r"```sh\n(.*?)```", text, re.S)]
    text = (MAN / document).read_text()
    examples = text[text.index(".Sh EXAMPLES"):].split("\n.Sh ", 1)[0]
    return [Block(document, unroff(body)) for body in
            re.findall(r"^\.Bd -literal[^\n]*\n(.*?)^\.Ed$", examples, re.S | re.M)]


def commands(text: str) -> list[str]:
    """A block as the shell would read it, one whole command (continuation lines, pipes at
    line ends, heredocs, if ... fi) at a time."""
    found, lines, heredoc = [], [], None
    for line in text.splitlines():
        lines.append(line)
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            if heredoc is not None:
                continue
        elif (match := HEREDOC.search(line)) is not None:
            heredoc = match.group(1)
            continue
        command = "\n".join(lines)
        if command.rstrip().endswith(("\\", "|")) or subprocess.run(
                ["bash", "-n", "-c", command], capture_output=True).returncode != 0:
            continue
        if command.strip():
            found.append(command)
        lines = []
    assert not lines, f"an incomplete command at the end of a block:\n{lines}"
    return found


class Runner:
    """Runs one document's commands against its daemon, as a person at a shell would."""

    def __init__(self, daemon, tmp: Path) -> None:
        self.tmp = tmp
        self.paths = {  # what the pages say -> where this test's daemon has it
            "/var/log/moo": str(daemon.log_dir), "/var/moo": str(daemon.moo_dir),
            "/run/arqond/control.sock": daemon.control_path,
            "127.0.0.1:8080": daemon.listeners["http"], "127.0.0.1:9100": daemon.listeners["ws"],
            "/usr/share/doc/arqond/examples": str(ROOT / "examples"),
            "/usr/local/bin/dreader-handler": str(tmp / "dreader-handler"),
            "/etc/arqond/test.toml": str(daemon.config_path),
            "/tmp/new.toml": str(daemon.config_path), "/tmp/moo-log": str(tmp / "moo-log"),
            "/tmp/moo": str(tmp / "moo"), "/tmp/arqond": str(tmp / "state"),
            ".venv/bin/python": sys.executable}
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        for name, module in (("arqon", "arqond.cli"), ("arqond", "arqond")):
            (bin_dir / name).write_text(f'#!/bin/sh\nexec {sys.executable} -m {module} "$@"\n')
            (bin_dir / name).chmod(0o755)
        self.env = {**daemon.env, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                    "ARQONBUS_CONFIG": str(daemon.config_path), "HOME": str(tmp),
                    "TMUX_TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
        self.env.pop("NO_COLOR", None)
        self.env.pop("TMUX", None)   # never a tmux server of the person running the tests
        self.background: list[tuple[str, subprocess.Popen, Path]] = []

    def local(self, command: str) -> str:
        for written in sorted(self.paths, key=len, reverse=True):
            command = command.replace(written, self.paths[written])
        return command

    def run(self, block: Block) -> None:
        if block.first_line.startswith("["):
            path = self.tmp / "example.toml"
            path.write_text(self.local(block.text))
            self.check(block, "arqond --check-config --config " + str(path))
            return
        for command in commands(block.text):
            self.check(block, self.local(command))

    def check(self, block: Block, command: str) -> None:
        ampersand = BACKGROUND.search(command)
        background = ampersand is not None
        command = command[:ampersand.start()] if ampersand else command
        ready = next((signal_text for pattern, signal_text in FOLLOWERS
                      if pattern.match(command.lstrip())), None)
        if background or any(pattern.match(command.lstrip()) for pattern, _ in FOLLOWERS):
            self.start(block, command, ready)
            return
        result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=ROOT,
                                env=self.env, capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, (f"{block.document}: exit {result.returncode}\n"
                                        f"{command}\n{result.stdout}{result.stderr}")

    def start(self, block: Block, command: str, ready: str | None) -> None:
        log = self.tmp / f"background-{len(self.background)}.log"
        env = self.env
        if command.startswith("arqond "):
            # A second daemon, configured by its flags alone: not by this test's file, and
            # with control and bus sockets other than the first one's (nor the host's).
            env = {**env, "ARQONBUS_CONFIG": os.devnull,
                   "ARQONBUS_CONTROL_SOCKET": str(self.tmp / "second-control.sock"),
                   "ARQONBUS_SERVER_BUS_SOCKET": str(self.tmp / "second-bus.sock")}
        with open(log, "w") as out:
            process = subprocess.Popen(["bash", "-o", "pipefail", "-c", command], cwd=ROOT,
                                       env=env, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.background.append((f"{block.document}: {command}", process, log))
        deadline = time.monotonic() + 20
        while ready is not None and ready not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, (
                f"{block.document}: not ready\n{command}\n{log.read_text()}")
            time.sleep(0.05)

    def finish(self) -> None:
        """Every background command still runs, or ended well; then all are stopped."""
        failed = [f"{what}\nexit {process.returncode}\n{log.read_text()}"
                  for what, process, log in self.background
                  if process.poll() not in (None, 0)]
        for _, process, _ in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(10)
        subprocess.run(["tmux", "kill-server"], env=self.env, capture_output=True)
        assert not failed, "\n\n".join(failed)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_example_of_the_page_runs(make_daemon, tmp_path, document):
    daemon = make_daemon({**fixed_ports(),
                          "zgents": {name: {} for name in ZGENTS.get(document, [])}})
    runner = Runner(daemon, tmp_path)
    # The tmux examples act on the session of the Zgent they are about, and its pane.
    subprocess.run(["tmux", "-f", "/dev/null", "new-session", "-d", "-s", "dreader", "-n",
                    "main"], env=runner.env, check=True, timeout=10)
    try:
        ran = 0
        for block in blocks(document):
            if (document, block.first_line) not in NOT_RUN:
                runner.run(block)
                ran += 1
        assert ran, f"no example of {document} ran"
    finally:
        runner.finish()


def test_every_example_not_run_is_still_in_its_page_and_each_page_has_blocks():
    found = {(document, block.first_line) for document in DOCUMENTS
             for block in blocks(document)}
    assert not set(NOT_RUN) - found, "NOT_RUN names examples that are gone"
    assert all(any(d == document for d, _ in found) for document in DOCUMENTS)


def test_every_socat_to_a_zgent_socket_gives_the_handler_time():
    """socat stops waiting half a second after its input ends (its -t): an example asking a
    Zgent over its socket without -t would print nothing for a slower handler."""
    asking = [(document, command) for document in DOCUMENTS
              for block in blocks(document) for command in commands(block.text)
              if re.search(r"\bsocat\b.*UNIX-CONNECT:/var/moo/", command, re.S)]
    assert asking, "no example asks a Zgent with socat"
    assert [found for found in asking if not re.search(r"\bsocat -t \d+ ", found[1])] == []


def test_commands_are_split_as_the_shell_reads_them():
    text = ("a \\\n  b\necho x |\n  jq .\ncat > f <<'SH'\nx |\nSH\nif true; then\n  y\nfi\n"
            "z &")
    assert commands(text) == ["a \\\n  b", "echo x |\n  jq .", "cat > f <<'SH'\nx |\nSH",
                              "if true; then\n  y\nfi", "z &"]
