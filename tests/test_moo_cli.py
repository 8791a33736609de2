"""The arqon subcommands for Zgents (arqond/cli/moo.py) against the real daemon."""

from __future__ import annotations

import os
import subprocess

import orjson

from tests.conftest import arqon_command, run_arqon, sh

ZGENTS = {"dreader": {"name": "DReader"}, "parseclipmate": {}}


def test_zgent_register_list_unregister(make_daemon):
    daemon = make_daemon({"zgents": ZGENTS})
    added = run_arqon(daemon, "zgent", "register", "gamma-watch", "--capability",
                      "query:gamma-exposure", "--capability", "subscribe:narrative",
                      "--name", "GammaWatch")
    assert added.returncode == 0, added.stderr
    entry = orjson.loads(added.stdout)
    assert (entry["id"], entry["name"], entry["capabilities"]) == (
        "gamma-watch", "GammaWatch", ["query:gamma-exposure", "subscribe:narrative"])
    listed = run_arqon(daemon, "zgent", "list")
    assert sorted(orjson.loads(listed.stdout)["zgents"]) == ["dreader", "gamma-watch",
                                                            "parseclipmate"]
    removed = run_arqon(daemon, "zgent", "unregister", "gamma-watch")
    assert removed.returncode == 0 and orjson.loads(removed.stdout)["status"] == "offline"
    again = run_arqon(daemon, "zgent", "unregister", "gamma-watch")
    assert again.returncode == 1
    assert again.stderr == "arqon: zgent.unregister: no registered Zgent gamma-watch " \
                           "(NOT_FOUND)\n"


def test_bad_names_and_unreachable_daemon_give_one_clear_line(make_daemon):
    daemon = make_daemon({"zgents": ZGENTS})
    for args in (["zgent", "register", "../etc"], ["recv", "../../etc/x"],
                 ["send-to", "Dreader", "{}"], ["serve", "a/b", "--exec", "true"]):
        result = run_arqon(daemon, *args)
        assert result.returncode == 1 and result.stderr.startswith("arqon: invalid Zgent name")
        assert result.stdout == ""
    nowhere = run_arqon(daemon, "zgent", "list", "--ws-url", "ws://127.0.0.1:1/")
    assert nowhere.returncode == 1 and nowhere.stderr.startswith(
        "arqon: Failed to connect to ws://127.0.0.1:1/")
    absent = run_arqon(daemon, "recv", "nobody-here")
    assert absent.returncode == 4 and absent.stderr == (
        f"arqon: no socket {daemon.moo_dir}/nobody-here.sock: the Zgent is not registered "
        "(arqon zgent list), or arqond uses another MOO dir (--config)\n")


def test_send_to_and_recv(make_daemon):
    daemon = make_daemon({"zgents": ZGENTS})
    sent = run_arqon(daemon, "send-to", "dreader", '{"id": "q-1", "method": "query"}')
    assert sent.returncode == 0, sent.stderr
    got = run_arqon(daemon, "recv", "dreader")
    assert got.returncode == 0 and orjson.loads(got.stdout) == {"id": "q-1", "method": "query"}
    assert got.stdout.count("\n") == 1
    empty = run_arqon(daemon, "recv", "dreader")
    assert empty.returncode == 1 and empty.stderr == "arqon: no message for dreader\n"
    bad = run_arqon(daemon, "send-to", "dreader", "{not json")
    assert bad.returncode == 1 and bad.stderr.startswith("arqon: not valid JSON")
    # Never creates a file where no FIFO is: an unregistered name is an error.
    missing = run_arqon(daemon, "send-to", "ghost", "{}")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert not os.path.exists(daemon.moo_dir / "ghost-inbox")


def test_send_to_refuses_when_arqond_is_not_reading(make_daemon):
    daemon = make_daemon({"zgents": ZGENTS})
    daemon.stop()
    result = run_arqon(daemon, "send-to", "dreader", "{}", timeout=10)
    assert (result.returncode, result.stderr) == (1, (
        f"arqon: cannot write to {daemon.moo_dir}/dreader-inbox: No such device or address "
        "(arqond is not running, or it serves another MOO dir: see --config)\n"))


def test_recv_wait_gets_a_message_written_meanwhile(make_daemon):
    # (The socket test shows the waiting itself; this is the command around it.)
    daemon = make_daemon({"zgents": ZGENTS})
    env = {**daemon.env, "ARQONBUS_CONFIG": str(daemon.config_path)}
    waiting = subprocess.Popen(arqon_command("recv", "dreader", "--wait", "30"),
                               stdout=subprocess.PIPE, text=True, env=env)
    assert sh(f"echo '{{\"hello\":1}}' > {daemon.moo_dir}/dreader-inbox").returncode == 0
    out, _ = waiting.communicate(timeout=30)
    assert waiting.returncode == 0 and orjson.loads(out) == {"hello": 1}


def test_serve_runs_the_handler_once_per_request(make_daemon, tmp_path):
    daemon = make_daemon({"zgents": ZGENTS})
    handler = tmp_path / "handler"
    handler.write_text("""#!/bin/sh
read -r request
method=$(echo "$request" | jq -r .method)
case "$method" in
  query) echo "$request" | jq -c '{symbol: .params.symbol, pid: 0}' ;;
  fail) echo "no such symbol" >&2; exit 3 ;;
  junk) echo "not json" ;;
  *) echo "unknown method: $method" >&2; exit 1 ;;
esac
""")
    handler.chmod(0o755)
    env = {**daemon.env, "ARQONBUS_CONFIG": str(daemon.config_path)}
    serve = subprocess.Popen(arqon_command("serve", "dreader", "--exec", str(handler)),
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert "serving dreader" in serve.stderr.readline()
        sock = f"{daemon.moo_dir}/dreader.sock"

        def ask(line: str) -> dict:
            result = sh(f"echo '{line}' | socat -t 20 - UNIX-CONNECT:{sock}")
            return orjson.loads(result.stdout)

        assert ask('{"id":"q-1","method":"query","params":{"symbol":"SPX"}}') == {
            "jsonrpc": "2.0", "id": "q-1", "result": {"symbol": "SPX", "pid": 0}}
        failed = ask('{"id":"q-2","method":"fail"}')
        assert failed["id"] == "q-2" and failed["error"]["code"] == -32000
        assert failed["error"]["message"] == "handler exited with status 3: no such symbol"
        junk = ask('{"id":"q-3","method":"junk"}')
        assert junk["error"] == {"code": -32603, "message": "handler output is not one JSON value"}
        second = subprocess.run(arqon_command("serve", "dreader", "--exec", "true"),
                                capture_output=True, text=True, env=env, timeout=30)
        assert second.returncode == 6 and "already has a handler" in second.stderr
    finally:
        serve.terminate()
        serve.wait()
