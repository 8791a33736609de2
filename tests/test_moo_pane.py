"""A Zgent's tmux pane (the seed's Layer 1) against the real daemon, real tmux servers of their
own and ``arqon serve --relay-pane`` as the handler that runs tmux: ``arqon pane`` and
``arqon.pane.*`` for owners, refused to others, bounded, and in the tmux of the user who runs
the Zgent's handler, never the caller's."""

from __future__ import annotations

import os

import orjson
import pytest

from arqond.core.moo.pane import tail
from tests.conftest import (AS_NOBODY, NOBODY, ROOT, cli_env, metrics_of, run_arqon,
                            run_as_nobody)

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(os.getuid() != 0, reason="runs clients as other uids")]
DREADER_HANDLER = str(ROOT / "examples/dreader-handler.sh")
PANE = "dreader:main.0"
OWNERS = "(allowed: the owners of dreader: who registered it, its uids and groups; and admins)"
# A shell whose prompt the tests know, in a pane of known size.
SHELL = ["-x", "80", "-y", "12", "env PS1='$ ' sh"]


@pytest.fixture
def start_dreader(make_daemon, shared_moo_dir, tmux_server, serving):
    """arqond (with ``moo`` settings) with Zgent dreader (declared, so owned by root and
    admins only), its pane in root's own tmux server, and ``arqon serve dreader --relay-pane``."""
    def start(**moo: object):
        daemon = make_daemon({"moo": {"dir": shared_moo_dir, "group": "nogroup", **moo},
                              "zgents": {"dreader": {"pane": PANE}}})
        tmux = tmux_server()
        tmux("new-session", "-d", "-s", "dreader", "-n", "main", *SHELL)
        tmux.shows(PANE, "$")
        serve = serving(daemon, "dreader", "--relay-pane", "--exec", DREADER_HANDLER,
                        env=tmux.env_for(cli_env(daemon)))
        return daemon, tmux, serve
    return start


@pytest.fixture
def dreader(start_dreader):
    return start_dreader()


def arqon_pane(daemon, *args: str):
    return run_arqon(daemon, "pane", "dreader", *args)


def test_an_owner_types_into_the_pane_and_reads_it_back_through_the_handler(dreader):
    daemon, tmux, serve = dreader
    typed = arqon_pane(daemon, "--send", "echo ready;", "--enter")
    assert (typed.returncode, typed.stdout, typed.stderr) == (0, "", "")
    shown = tmux.shows(PANE, "$ echo ready;\nready\n$")     # the ";" typed, not eaten by tmux
    looked = arqon_pane(daemon)
    assert (looked.returncode, looked.stdout) == (0, shown.rstrip("\n") + "\n")
    # Keys go before the text: C-c ends what runs, then the next command is typed.
    assert arqon_pane(daemon, "--send", "sleep 600", "--enter").returncode == 0
    tmux.shows(PANE, "$ sleep 600\n")
    assert arqon_pane(daemon, "--key", "C-c", "--send", "echo after", "--enter").returncode == 0
    tmux.shows(PANE, "after\n$")   # "$ after" when the shell read it typed ahead
    # Scrollback above the visible pane, as capture-pane -S -N.
    assert arqon_pane(daemon, "--send", "seq 1 30", "--enter").returncode == 0
    tmux.shows(PANE, "\n30\n$")
    visible, more = arqon_pane(daemon).stdout, arqon_pane(daemon, "--lines", "40").stdout
    assert "\n1\n" not in visible and "\n1\n2\n3\n" in more
    assert more == tmux("capture-pane", "-p", "-t", PANE, "-S", "-40").stdout.rstrip("\n") \
        + "\n"
    # The handler logged each, and arqond audited each send with who typed what.
    assert len(serve.wait_for("arqon: dreader: arqon.pane.send ", 4)) == 4
    audit = daemon.wait_for_line("typing into pane dreader:main.0: keys C-c, then text "
                                 "'echo after' (10 characters), then Enter")
    assert "UID=0" in audit and "PRINCIPAL=uid:0" in audit


def test_a_user_who_does_not_own_the_zgent_may_neither_look_nor_type(dreader, shared_moo_dir):
    daemon, tmux, serve = dreader
    before = tmux("capture-pane", "-p", "-t", PANE).stdout
    for args, method in ((["--send", "rm -rf ~", "--enter"], "arqon.pane.send"),
                         ([], "arqon.pane.capture")):
        refused = run_as_nobody(daemon, shared_moo_dir, "pane", "dreader", *args)
        assert (refused.returncode, refused.stdout, refused.stderr) == (
            6, "", f"arqon: dreader {method}: not allowed to manage Zgent dreader {OWNERS} "
                   "(-32003)\n")
    line = daemon.wait_for_line("not allowed to manage Zgent dreader")
    assert "UID=65534" in line
    # Nothing was typed, nothing reached the handler.
    assert tmux("capture-pane", "-p", "-t", PANE).stdout == before
    assert not [line for line in serve.lines if "arqon.pane" in line]


def test_the_pane_is_in_the_tmux_of_the_user_who_runs_the_handler(make_daemon, shared_moo_dir,
                                                                 tmux_server, serving):
    daemon = make_daemon({"moo": {"dir": shared_moo_dir, "group": "nogroup"},
                          "zgents": {"mine": {"uids": [NOBODY], "pane": "mine:main.0"}}})
    theirs, roots = tmux_server(NOBODY), tmux_server()
    theirs("new-session", "-d", "-s", "mine", "-n", "main", "echo nobody console; cat")
    roots("new-session", "-d", "-s", "mine", "-n", "main", "echo root console; cat")
    theirs.shows("mine:main.0", "nobody console")
    env = theirs.env_for({**daemon.env, "ARQONBUS_CONFIG": os.devnull,
                          "ARQONBUS_MOO_DIR": shared_moo_dir, "PYTHONPATH": str(ROOT)})
    serving(daemon, "mine", "--relay-pane", "--exec", "true", env=env, prefix=AS_NOBODY)
    as_root = run_arqon(daemon, "pane", "mine")
    as_owner = run_as_nobody(daemon, shared_moo_dir, "pane", "mine")
    assert as_root.stdout == as_owner.stdout == "nobody console\n"
    assert run_arqon(daemon, "pane", "mine", "--send", "typed by root", "--enter").returncode \
        == 0
    theirs.shows("mine:main.0", "typed by root\ntyped by root")   # the tty's echo, then cat's
    assert "typed by root" not in roots("capture-pane", "-p", "-t", "mine:main.0").stdout


def test_without_a_handler_or_one_that_does_not_relay_the_pane_is_not_serving(
        make_daemon, serving):
    daemon = make_daemon({"zgents": {"dreader": {}}})
    alone = run_arqon(daemon, "pane", "dreader")
    assert (alone.returncode, alone.stderr) == (4, (
        "arqon: dreader arqon.pane.capture: dreader is not serving: no handler attached "
        "(arqon serve dreader) (-32001)\n"))
    serve = serving(daemon, "dreader", "--exec", DREADER_HANDLER)
    unrelayed = run_arqon(daemon, "pane", "dreader", "--send", "ls", "--enter")
    assert (unrelayed.returncode, unrelayed.stderr) == (4, (
        "arqon: dreader arqon.pane.send: dreader's handler does not relay its tmux pane (it "
        "was started without --relay-pane) (-32001)\n"))
    # Answered by arqon serve itself: the handler script never saw it (it would say -32601).
    [logged] = serve.wait_for("arqon: dreader: arqon.pane.send ")
    assert logged.endswith("error -32001: dreader's handler does not relay its tmux pane (it "
                           "was started without --relay-pane)")
    assert daemon.wait_for_line("typing into pane dreader:main.0: text 'ls'")


def test_a_capture_past_moo_pane_max_bytes_keeps_its_last_lines_and_is_counted(start_dreader):
    daemon, tmux, _ = start_dreader(pane_max_bytes=64)
    assert arqon_pane(daemon, "--send", "seq 1 100", "--enter").returncode == 0
    tmux.shows(PANE, "\n100\n$")
    whole = run_arqon(daemon, "call", "dreader", "arqon.pane.capture")
    assert orjson.loads(whole.stdout)["truncated"] is False     # 12 short lines: 46 bytes
    assert metrics_of(daemon)["arqonbus_moo_pane_captures_cut_total"] == 0
    cut = orjson.loads(run_arqon(daemon, "call", "dreader", "arqon.pane.capture",
                                 '{"lines": 200}').stdout)
    own = tmux("capture-pane", "-p", "-t", PANE, "-S", "-200").stdout
    assert cut == {"pane": PANE, "text": tail(own, 64)[0], "truncated": True}
    assert len(cut["text"].encode()) <= 64 and cut["text"].startswith("8")   # whole lines
    assert cut["text"].endswith("\n99\n100\n$")
    assert metrics_of(daemon)["arqonbus_moo_pane_captures_cut_total"] == 1
    daemon.wait_for_line("moo.pane_max_bytes (64) reached")


def test_what_tmux_says_when_the_pane_is_not_there_reaches_the_caller(make_daemon, serving,
                                                                       tmux_server):
    daemon = make_daemon({"zgents": {"ghost": {"pane": "nosuch:main.0"}}})
    tmux = tmux_server()
    tmux("new-session", "-d", "-s", "other", *SHELL)
    serving(daemon, "ghost", "--relay-pane", "--exec", "true", env=tmux.env_for(cli_env(daemon)))
    for args, command in (([], "capture-pane"), (["--send", "x"], "send-keys")):
        failed = run_arqon(daemon, "pane", "ghost", *args)
        method = "arqon.pane.send" if args else "arqon.pane.capture"
        assert (failed.returncode, failed.stderr) == (3, (
            f"arqon: ghost {method}: tmux {command} -t nosuch:main.0: can't find session: "
            "nosuch (-32000)\n"))


def test_bad_input_to_arqon_pane_is_refused_with_the_exact_error(dreader):
    daemon, tmux, serve = dreader
    before = tmux("capture-pane", "-p", "-t", PANE).stdout
    for args, status, message in (
            (["--lines", "3", "--send", "x"], 1, "arqon: --lines is for looking at the pane, "
             "not with text, keys or enter\n"),
            (["--timeout", "0"], 1, "arqon: --timeout must be greater than 0\n"),
            (["--send", ""], 3, "arqon: dreader arqon.pane.send: nothing to send: give text, "
             "keys or enter (-32602)\n"),
            (["--key", "C c"], 3, "arqon: dreader arqon.pane.send: keys must be a list of at "
             "most 64 tmux key names such as C-c, Escape or Up (printable, no blanks, at most "
             "32 characters) (-32602)\n"),
            (["--lines", "-1"], 3, "arqon: dreader arqon.pane.capture: lines must be an "
             "integer from 0 to 100000 (scrollback lines above the visible pane) (-32602)\n")):
        result = arqon_pane(daemon, *args)
        assert (result.returncode, result.stdout, result.stderr) == (status, "", message)
    bad_name = run_arqon(daemon, "pane", "../etc")
    assert bad_name.returncode == 1 and bad_name.stderr.startswith("arqon: invalid Zgent name")
    assert tmux("capture-pane", "-p", "-t", PANE).stdout == before
    assert not [line for line in serve.lines if "arqon.pane" in line]
