"""`make run`'s first step, `make dev-install`: arqon, arqond, their man pages and completion
usable by name, as links into the checkout; `make dev-uninstall` takes them away."""

from __future__ import annotations

import os
import subprocess

import pytest

from arqond import __version__
from tests.conftest import ROOT

pytestmark = [pytest.mark.timeout(300), pytest.mark.skipif(
    not (ROOT / ".venv/.installed").exists(),
    reason="make setup has not made .venv here (this test would make it)")]
PAGES = {"arqon": "man1/arqon.1", "arqond": "man8/arqond.8", "arqond-moo": "man7/arqond-moo.7",
         "arqond.conf": "man5/arqond.conf.5"}


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args],
                          capture_output=True, text=True, timeout=240)


def test_dev_install_links_commands_pages_and_completion_and_uninstall_removes_them(tmp_path):
    prefix = tmp_path / "local"
    made = make("dev-install", f"DEV_PREFIX={prefix}")
    assert made.returncode == 0, made.stdout + made.stderr
    for command in ("arqon", "arqond"):
        link = prefix / "bin" / command
        assert link.is_symlink() and link.resolve().is_relative_to(ROOT)
        shown = subprocess.run([str(link), "--version"], capture_output=True, text=True,
                               timeout=30)
        assert shown.stdout.split()[-1] == __version__, shown.stdout + shown.stderr
    man_env = {**os.environ, "MANPATH": str(prefix / "share/man"), "MANPAGER": "cat",
               "MANWIDTH": "80"}
    for name, path in PAGES.items():
        found = subprocess.run(["man", "-w", name], capture_output=True, text=True,
                               env=man_env, timeout=30)
        # Found through DEV_PREFIX alone (MANPATH), it is the checkout's page (man -w follows
        # the link).
        assert found.stdout.strip() == str(ROOT / "man" / path.split("/")[1]), found.stderr
        assert (prefix / "share/man" / path).is_symlink()
    rendered = subprocess.run(["man", "arqond.conf"], capture_output=True, text=True,
                              env=man_env, timeout=30).stdout
    assert "server.port" in rendered  # built from config.SCHEMA by dev-install
    loaded = subprocess.run(["bash", "-c", f"source {prefix}/share/bash-completion/"
                                           "completions/arqon; complete -p arqon"],
                            capture_output=True, text=True, timeout=30)
    assert loaded.stdout == "complete -F _arqon arqon\n", loaded.stderr
    assert (prefix / "share/zsh/site-functions/_arqon").read_text().startswith(
        "#compdef arqon\n")
    removed = make("dev-uninstall", f"DEV_PREFIX={prefix}")
    assert removed.returncode == 0, removed.stderr
    left = [path for path in prefix.rglob("*") if path.is_symlink()]
    assert left == []


def test_make_run_does_the_dev_install_before_it_starts_arqond(tmp_path):
    planned = make("-n", "run", f"DEV_PREFIX={tmp_path}")
    assert planned.returncode == 0, planned.stderr
    steps = planned.stdout
    assert f"ln -sfn $target {tmp_path}/$link" in steps
    assert steps.index("ln -sfn") < steps.index(".venv/bin/arqond")
