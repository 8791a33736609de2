"""arqon call and arqon serve against the real daemon: the seed's request-response over the
inbox FIFO and the socket, handler replies, exit statuses, time limits, restarts, refusals."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time

import orjson
import pytest

from tests.conftest import ROOT, arqon_command, cli_env, run_arqon, run_as_nobody, sh

pytestmark = pytest.mark.timeout(120)
ZGENTS = {"dreader": {"name": "DReader"}, "parseclipmate": {}}
DREADER_HANDLER = str(ROOT / "examples/dreader-handler.sh")
# A handler for every reply shape: the method picks one.
SHAPES_HANDLER = r"""#!/bin/sh
read -r request
case "$ARQON_METHOD" in
  echo) echo "$request" | jq -c .params ;;
  seed-result) echo '{"id":"q-from-the-handler","result":{"volume":1}}' ;;
  rpc-error) echo '{"error":{"code":-32602,"message":"bad symbol","data":{"symbol":"X"}}}' ;;
  string-error) echo '{"id":"q","error":"unknown method: subscribe"}' ;;
  invalid) echo '{"error":{"code":"x","message":"m"}}' ;;
  lookalike) echo '{"result":1,"count":2}' ;;
  fail) echo "starting" >&2; echo "no such symbol" >&2; exit 3 ;;
  junk) echo "not json" ;;
  slow) sleep 30 ;;
  patient) sleep 1; echo '"worth the wait"' ;;
  pipeline) ps -o pgid= -p $$ > "$PGID_FILE"; sleep 30 | cat ;;
  stubborn) trap '' TERM; ps -o pgid= -p $$ > "$PGID_FILE"; sleep 30 ;;
esac
"""
REQUEST_LOG = re.compile(r"^arqon: dreader: (\S+) \d+\.\d{3}s (ok|error -?\d+: .*)$")


@pytest.fixture
def shapes_handler(tmp_path) -> str:
    path = tmp_path / "handler"
    path.write_text(SHAPES_HANDLER)
    path.chmod(0o755)
    return str(path)


def socat(daemon, line: str, name: str = "dreader") -> dict:
    result = sh(f"echo '{line}' | socat -t 30 - UNIX-CONNECT:{daemon.moo_dir}/{name}.sock")
    assert result.returncode == 0, result.stderr
    [answer] = result.stdout.splitlines()
    return orjson.loads(answer)


def group_gone(pgid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


# -- the seed's section 5.2 ------------------------------------------------------------------

SEED_PARAMS = {"type": "history", "symbol": "SPX", "since": "2026-02-12T14:00:00Z"}
SEED_RESULT = {"symbol": "SPX", "since": "2026-02-12T14:00:00Z",
               "entries": [{"ts": "2026-02-12T14:30:00Z", "volume": 2000,
                            "content": "SPX 5900C sweep 2000 contracts"}]}


def test_the_seeds_request_response_runs_over_the_inbox_fifo_and_the_socket(make_daemon,
                                                                              serving):
    daemon = make_daemon({"zgents": ZGENTS})
    serve = serving(daemon, "dreader", "--exec", DREADER_HANDLER)
    # Via named pipes: ParseClipmate writes the query into DReader's inbox, naming its own
    # inbox for the answer, and reads the answer from its mailbox.
    query = orjson.dumps({"id": "q-456", "method": "query", "params": SEED_PARAMS,
                          "replyTo": "parseclipmate"}).decode()
    assert sh(f"echo '{query}' > {daemon.moo_dir}/dreader-inbox").returncode == 0
    got = run_arqon(daemon, "recv", "parseclipmate", "--wait", "10")
    assert got.returncode == 0, got.stderr
    assert orjson.loads(got.stdout) == {"jsonrpc": "2.0", "id": "q-456", "result": SEED_RESULT}
    # Via the Unix socket: the seed's socat line, given time with -t, prints one answer.
    line = orjson.dumps({"id": "q-456", "method": "query", "params": SEED_PARAMS}).decode()
    assert socat(daemon, line) == {"jsonrpc": "2.0", "id": "q-456", "result": SEED_RESULT}
    # And arqon call: the result alone, from an argument or from stdin.
    called = run_arqon(daemon, "call", "dreader", "query", orjson.dumps(SEED_PARAMS).decode())
    assert (called.returncode, called.stdout, called.stderr) == (
        0, orjson.dumps(SEED_RESULT).decode() + "\n", "")
    piped = run_arqon(daemon, "call", "dreader", "query", "-",
                      input=orjson.dumps(SEED_PARAMS).decode())
    assert piped.stdout == called.stdout
    logged = serve.wait_for("arqon: dreader: query", 4)
    assert all(REQUEST_LOG.match(line) and line.endswith(" ok") for line in logged), logged


# -- arqon call ------------------------------------------------------------------------------

def test_call_exit_status_says_which_kind_of_failure(make_daemon, serving, shapes_handler):
    daemon = make_daemon({"zgents": ZGENTS, "moo": {"handler_timeout": 1}})
    unserved = run_arqon(daemon, "call", "dreader", "query", '{"symbol": "SPX"}')
    assert (unserved.returncode, orjson.loads(unserved.stdout)["code"]) == (4, -32001)
    assert unserved.stderr == ("arqon: dreader query: dreader is not serving: no handler "
                               "attached (arqon serve dreader) (-32001)\n")
    serving(daemon, "dreader", "--exec", shapes_handler)
    handler_error = run_arqon(daemon, "call", "dreader", "rpc-error")
    assert handler_error.returncode == 3
    assert orjson.loads(handler_error.stdout) == {"code": -32602, "message": "bad symbol",
                                                  "data": {"symbol": "X"}}
    assert handler_error.stderr == "arqon: dreader rpc-error: bad symbol (-32602)\n"
    no_method = run_arqon(daemon, "call", "dreader", "arqon.nosuch")
    assert no_method.returncode == 3 and orjson.loads(no_method.stdout)["code"] == -32601
    # arqond's moo.handler_timeout (1 s here) ends the wait with -32002 ...
    slow = run_arqon(daemon, "call", "dreader", "slow", "--timeout", "20")
    assert slow.returncode == 5 and orjson.loads(slow.stdout) == {
        "code": -32002, "message": "dreader's handler did not answer within 1s"}
    # ... and so does arqon call's own --timeout, with nothing on stdout.
    impatient = run_arqon(daemon, "call", "dreader", "arqon.recv", '{"wait": 30}',
                          "--timeout", "0.5")
    assert (impatient.returncode, impatient.stdout) == (5, "")
    assert impatient.stderr == (f"arqon: no answer from {daemon.moo_dir}/dreader.sock "
                                "within 0.5s\n")
    nobody = run_arqon(daemon, "call", "nobody-here", "query")
    assert (nobody.returncode, nobody.stdout) == (4, "")
    assert nobody.stderr.startswith(f"arqon: no socket {daemon.moo_dir}/nobody-here.sock: "
                                    "the Zgent is not registered")
    # A socket nobody listens on (left by a crash elsewhere) refuses the connection.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(daemon.moo_dir / "ghost.sock"))
    try:
        refused = run_arqon(daemon, "call", "ghost", "query")
    finally:
        stale.close()
    assert (refused.returncode, refused.stdout) == (6, "")
    assert refused.stderr == (f"arqon: cannot connect to {daemon.moo_dir}/ghost.sock: "
                              "Connection refused (arqond is not running, or it serves another "
                              "MOO dir: see --config)\n")


def test_call_refused_when_the_socket_is_full(make_daemon, serving):
    daemon = make_daemon({"zgents": ZGENTS, "moo": {"max_clients": 1}})
    serving(daemon, "dreader", "--exec", DREADER_HANDLER)  # the one client allowed
    busy = run_arqon(daemon, "call", "dreader", "arqon.ping")
    assert busy.returncode == 6 and orjson.loads(busy.stdout)["code"] == -32004
    assert busy.stderr.startswith("arqon: dreader arqon.ping: arqond serves 1 Zgent socket "
                                  "clients already")


def test_call_refuses_bad_input_before_sending_anything(make_daemon, serving):
    daemon = make_daemon({"zgents": ZGENTS})
    serve = serving(daemon, "dreader", "--exec", DREADER_HANDLER)
    for args, message in (
            (["query", "{not json"], "arqon: PARAMS_JSON is not valid JSON: Expecting "
                                     "property name enclosed in double quotes: line 1 column "
                                     "2 (char 1)\n"),
            (["query", "42"], "arqon: PARAMS_JSON must be a JSON object or array\n"),
            (["query", "{}", "--timeout", "0"], "arqon: --timeout must be greater than 0\n"),
            (["", "{}"], "arqon: METHOD must not be empty\n")):
        result = run_arqon(daemon, "call", "dreader", *args)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", message)
    bad_name = run_arqon(daemon, "call", "../etc", "query")
    assert bad_name.returncode == 1 and bad_name.stderr.startswith("arqon: invalid Zgent name")
    assert run_arqon(daemon, "call", "dreader", "arqon.ping").returncode == 0
    assert not [line for line in serve.lines if "arqon: dreader: " in line]  # none reached it


def test_call_and_serve_as_a_user_the_socket_or_the_zgent_refuses(make_daemon, shared_moo_dir):
    daemon = make_daemon({"moo": {"dir": shared_moo_dir, "group": "nogroup"},
                          "zgents": {"dreader": {"uids": [1234]}}})
    outsider = run_as_nobody(daemon, shared_moo_dir, "call", "dreader", "arqon.ping",
                             group=65533)
    assert (outsider.returncode, outsider.stdout) == (6, "")
    join = "(members of group nogroup may: sudo usermod -aG nogroup $USER)"
    assert outsider.stderr == (f"arqon: cannot connect to {shared_moo_dir}/dreader.sock: "
                               f"Permission denied {join}\n")
    written = run_as_nobody(daemon, shared_moo_dir, "send-to", "dreader", "{}", group=65533)
    assert (written.returncode, written.stdout, written.stderr) == (
        1, "", f"arqon: cannot write to {shared_moo_dir}/dreader-inbox: Permission denied "
               f"{join}\n")
    member = run_as_nobody(daemon, shared_moo_dir, "call", "dreader", "arqon.ping")
    assert member.returncode == 0 and orjson.loads(member.stdout)["pong"] is True
    not_allowed = run_as_nobody(daemon, shared_moo_dir, "serve", "dreader", "--exec", "true")
    assert (not_allowed.returncode, not_allowed.stdout) == (6, "")
    assert not_allowed.stderr == (
        "arqon: cannot serve dreader: not allowed to serve Zgent dreader (allowed: the owners "
        "of dreader: who registered it, its uids and groups; and admins)\n")


# -- arqon serve: what a handler prints ---------------------------------------------------

@pytest.mark.parametrize("method, answer", [
    ("echo", {"result": {"symbol": "SPX"}}),
    ("seed-result", {"result": {"volume": 1}}),
    ("rpc-error", {"error": {"code": -32602, "message": "bad symbol", "data": {"symbol": "X"}}}),
    ("string-error", {"error": {"code": -32000, "message": "unknown method: subscribe"}}),
    ("invalid", {"error": {"code": -32603, "message": "handler printed an invalid JSON-RPC "
                           'response: "error" must be {"code": integer, "message": string}'}}),
    ("lookalike", {"result": {"result": 1, "count": 2}}),
    ("fail", {"error": {"code": -32000, "message": "handler exited with status 3: no such "
                        "symbol"}}),
    ("junk", {"error": {"code": -32603, "message": "handler output is not one JSON value"}}),
])
def test_what_a_handler_prints_reaches_the_caller_under_the_callers_id(
        make_daemon, serving, shapes_handler, method, answer):
    daemon = make_daemon({"zgents": ZGENTS})
    serve = serving(daemon, "dreader", "--exec", shapes_handler)
    line = orjson.dumps({"id": "q-7", "method": method, "params": {"symbol": "SPX"}}).decode()
    assert socat(daemon, line) == {"jsonrpc": "2.0", "id": "q-7", **answer}
    [logged] = serve.wait_for(f"arqon: dreader: {method} ")
    outcome = "ok" if "result" in answer else \
        f"error {answer['error']['code']}: {answer['error']['message']}"
    assert REQUEST_LOG.match(logged) and logged.endswith(f"s {outcome}"), logged


def test_the_documented_socat_line_waits_for_a_handler_slower_than_socats_default(
        make_daemon, serving, shapes_handler):
    """The pages' one-liner says -t: without it socat gives up half a second after its input
    ends, printing nothing and exiting 0, however sure the answer is to come."""
    daemon = make_daemon({"zgents": ZGENTS})
    serving(daemon, "dreader", "--exec", shapes_handler)
    line = '{"id":"q-1","method":"patient"}'
    assert socat(daemon, line) == {"jsonrpc": "2.0", "id": "q-1", "result": "worth the wait"}
    hasty = sh(f"echo '{line}' | socat - UNIX-CONNECT:{daemon.moo_dir}/dreader.sock")
    assert (hasty.returncode, hasty.stdout) == (0, "")


# -- arqon serve: time limits, stopping, restarts --------------------------------------------

@pytest.mark.parametrize("method", ["pipeline", "stubborn"])
def test_a_handler_over_its_time_is_answered_at_once_and_its_whole_group_ended(
        make_daemon, serving, shapes_handler, tmp_path, method):
    # The group's `sleep 30` keeps the handler's stdout open: waiting for it would leave the
    # caller without an answer for 30 s, past the call's own 20 s limit.
    daemon = make_daemon({"zgents": ZGENTS})
    pgid_file = tmp_path / "pgid"
    serve = serving(daemon, "dreader", "--exec", shapes_handler, "--timeout", "1",
                    env=cli_env(daemon, PGID_FILE=str(pgid_file)))
    called = run_arqon(daemon, "call", "dreader", method, "--timeout", "20")
    assert (called.returncode, orjson.loads(called.stdout)) == (
        5, {"code": -32002, "message": "handler ran longer than 1s"})
    # `stubborn` ignores SIGTERM: SIGKILL ends it two seconds later.
    assert group_gone(int(pgid_file.read_text())), f"process group of {method} still there"
    assert serve.wait_for(f"arqon: dreader: {method} ")[0].endswith(
        "error -32002: handler ran longer than 1s")


def test_stopping_serve_ends_the_handlers_it_runs(make_daemon, serving, shapes_handler,
                                                  tmp_path):
    daemon = make_daemon({"zgents": ZGENTS})
    pgid_file = tmp_path / "pgid"
    serve = serving(daemon, "dreader", "--exec", shapes_handler,
                    env=cli_env(daemon, PGID_FILE=str(pgid_file)))
    caller = subprocess.Popen(arqon_command("call", "dreader", "pipeline"), cwd=ROOT,
                              env=cli_env(daemon), stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not pgid_file.exists() or not pgid_file.read_text().strip():
        assert time.monotonic() < deadline, "the handler never started"
        time.sleep(0.05)
    assert serve.stop() == 0
    assert group_gone(int(pgid_file.read_text()))
    # The caller is answered by arqond: its handler went away.
    out, _ = caller.communicate(timeout=30)
    assert caller.returncode == 4 and orjson.loads(out)["code"] == -32001


def test_serve_attaches_again_after_arqond_restarts_and_says_so(make_daemon, serving):
    daemon = make_daemon({"zgents": ZGENTS})
    serve = serving(daemon, "dreader", "--exec", DREADER_HANDLER)
    daemon.stop()
    serve.wait_for(f"arqon: arqond closed {daemon.moo_dir}/dreader.sock; attaching again "
                   "in 0.5s")
    daemon.start()
    serve.wait_for("arqon: serving dreader with ", count=2)
    called = run_arqon(daemon, "call", "dreader", "query", '{"symbol": "NDX"}')
    assert called.returncode == 0 and orjson.loads(called.stdout)["volume"] == 48000
    assert serve.process.poll() is None


def test_serve_that_cannot_attach_fails_at_once_with_the_status_of_its_kind(make_daemon,
                                                                           serving):
    daemon = make_daemon({"zgents": ZGENTS})
    for args, status, message in (
            (["nobody-here", "--exec", "true"], 4,
             f"arqon: no socket {daemon.moo_dir}/nobody-here.sock: the Zgent is not "
             "registered (arqon zgent list), or arqond uses another MOO dir (--config)\n"),
            (["dreader", "--exec", " "], 1,
             "arqon: --exec needs a shell command (HANDLER is empty)\n"),
            (["dreader", "--exec", "true", "--jobs", "0"], 1,
             "arqon: --jobs must be at least 1 and --timeout greater than 0\n")):
        result = run_arqon(daemon, "serve", *args)
        assert (result.returncode, result.stderr) == (status, message)
    serving(daemon, "dreader", "--exec", DREADER_HANDLER)
    second = run_arqon(daemon, "serve", "dreader", "--exec", "true")
    assert second.returncode == 6 and second.stderr.startswith(
        "arqon: cannot serve dreader: dreader already has a handler (pid=")
    assert run_arqon(daemon, "call", "dreader", "query", '{"symbol": "SPX"}').returncode == 0
