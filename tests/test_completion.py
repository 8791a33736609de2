"""arqon's shell completion, generated from its parser, loaded into real bash and zsh."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys

import pytest

from arqond.cli.main import build_parser
from tests.conftest import ROOT

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


def script(shell: str, tmp_path) -> str:
    path = tmp_path / f"arqon.{shell}"
    result = subprocess.run([sys.executable, "-m", "arqond.cli", "completion", shell],
                            capture_output=True, text=True, cwd=ROOT, timeout=30, check=True)
    path.write_text(result.stdout)
    return str(path)


@pytest.fixture
def moo_dir(tmp_path):
    """A MOO dir with two Zgent sockets and a file that is not one."""
    moo = tmp_path / "moo"
    moo.mkdir()
    sockets = []
    for name in ("dreader", "parseclipmate"):
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(moo / f"{name}.sock"))
        sockets.append(sock)
    (moo / "registry.json").write_text("{}")
    yield moo
    for sock in sockets:
        sock.close()


def bash_complete(path: str, moo, *words: str) -> list[str]:
    """What bash offers after WORDS (the last one being completed)."""
    words_array = " ".join(f"'{w}'" for w in words)
    result = subprocess.run(
        ["bash", "-c", f'source {path}; COMP_WORDS=({words_array}); '
                       f'COMP_CWORD={len(words) - 1}; _arqon; printf "%s\\n" "${{COMPREPLY[@]}}"'],
        capture_output=True, text=True, timeout=30, env={"ARQONBUS_MOO_DIR": str(moo),
                                                         "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_bash_loads_it_and_completes_subcommands_flags_and_zgent_names(tmp_path, moo_dir):
    path = script("bash", tmp_path)
    loaded = subprocess.run(["bash", "-c", f"source {path}; complete -p arqon"],
                            capture_output=True, text=True, timeout=30)
    assert (loaded.returncode, loaded.stdout) == (0, "complete -F _arqon arqon\n")
    assert sorted(bash_complete(path, moo_dir, "arqon", "")) == SUBCOMMANDS
    assert bash_complete(path, moo_dir, "arqon", "se") == ["send", "send-to", "serve"]
    assert bash_complete(path, moo_dir, "arqon", "zgent", "") == ["register", "unregister",
                                                                  "list"]
    assert bash_complete(path, moo_dir, "arqon", "call", "") == ["dreader", "parseclipmate"]
    assert bash_complete(path, moo_dir, "arqon", "call", "dreader", "") == []
    assert bash_complete(path, moo_dir, "arqon", "tail", "--moo", "p") == ["parseclipmate"]
    assert bash_complete(path, moo_dir, "arqon", "serve", "dreader", "--t") == ["--timeout"]
    (tmp_path / "arqond.toml").write_text("")
    assert bash_complete(path, moo_dir, "arqon", "--config", f"{tmp_path}/arqond.t") == [
        f"{tmp_path}/arqond.toml"]
    assert bash_complete(path, moo_dir, "arqon", "call", "dreader", "m", "--timeout",
                         "") == []
    assert "--capability" in bash_complete(path, moo_dir, "arqon", "zgent", "register", "--")
    # read takes ROOM:CHANNEL and a cursor's name, never a Zgent's.
    assert bash_complete(path, moo_dir, "arqon", "re") == ["read", "recv"]
    assert bash_complete(path, moo_dir, "arqon", "read", "lab:notes", "--c") == [
        "--cursor", "--control-socket", "--config"]
    assert bash_complete(path, moo_dir, "arqon", "read", "") == []
    assert bash_complete(path, moo_dir, "arqon", "read", "lab:notes", "--cursor", "") == []
    assert "--since" in bash_complete(path, moo_dir, "arqon", "tail", "--s")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (make "
                                                         "system-deps installs it)")
def test_zsh_loads_it_and_offers_subcommands_flags_and_zgent_names(tmp_path, moo_dir):
    path = script("zsh", tmp_path)
    assert subprocess.run(["zsh", "-n", path], timeout=30).returncode == 0
    # compinit registers it from an fpath dir, as the packages install it.
    fpath = tmp_path / "functions"
    fpath.mkdir()
    shutil.copy(path, fpath / "_arqon")
    registered = subprocess.run(
        ["zsh", "-fc", f"fpath=({fpath} $fpath); autoload -Uz compinit; "
                       f"compinit -u -d {tmp_path}/zcompdump; print $_comps[arqon]"],
        capture_output=True, text=True, timeout=30)
    assert registered.stdout == "_arqon\n", registered.stdout + registered.stderr

    def offered(*words: str) -> list[str]:
        # zsh's completion widgets need a terminal; these stand-ins print what _arqon offers.
        stubs = ('_describe() { print -l -- "${(@P)4}" }; '
                 'compadd() { print -l -- "${(@P)2}" }; _files() { print FILES }')
        quoted = " ".join(f"'{w}'" for w in words)
        result = subprocess.run(
            ["zsh", "-fc", f"{stubs}; words=({quoted}); CURRENT={len(words)}; "
                           f"PREFIX=${{words[CURRENT]}}; source {path}"],
            capture_output=True, text=True, timeout=30, env={"ARQONBUS_MOO_DIR": str(moo_dir)})
        assert result.returncode == 0 and result.stderr == "", result.stderr
        return result.stdout.splitlines()

    assert sorted(line.split(":")[0] for line in offered("arqon", "")) == SUBCOMMANDS
    assert "call:send one JSON-RPC request to Zgent NAME and print its result" in \
        offered("arqon", "")
    assert [line.split(":")[0] for line in offered("arqon", "zgent", "")] == [
        "register", "unregister", "list"]
    assert offered("arqon", "call", "") == ["dreader", "parseclipmate"]
    assert offered("arqon", "tail", "--moo", "") == ["dreader", "parseclipmate"]
    assert offered("arqon", "serve", "dreader", "--exec", "") == ["FILES"]
    assert "--timeout:give up waiting for the answer after SECONDS (default 60)" in \
        offered("arqon", "call", "dreader", "m", "--")
    assert "--cursor:the cursor's name (1 to 128 characters)" in \
        offered("arqon", "read", "lab:notes", "--")


def test_completion_refuses_an_unknown_shell():
    result = subprocess.run([sys.executable, "-m", "arqond.cli", "completion", "fish"],
                            capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 2 and "invalid choice: 'fish'" in result.stderr
