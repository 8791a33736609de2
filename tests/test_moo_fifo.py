"""Inbox FIFOs against the real daemon: shell writers, framing, refusals, concurrency."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import time

import orjson
import pytest

from tests.conftest import eventually, metrics_of, run_arqon, sh

ZGENTS = {"dreader": {"name": "DReader", "capabilities": ["query:volume"]},
          "parseclipmate": {}}


def moo_config(**moo):
    return {"moo": moo, "zgents": ZGENTS}


async def drain(sock, count):
    """``count`` messages from the mailbox through arqon.recv, then check it is empty."""
    got = []
    for n in range(count):
        answer = await sock.call("arqon.recv", {"wait": 5}, request_id=n)
        assert answer["id"] == n and answer["result"] is not None, answer
        got.append(answer["result"])
    assert (await sock.call("arqon.recv", request_id="last"))["result"] is None
    return got


def test_fifos_and_sockets_have_mode_0660_and_the_configured_group(make_daemon):
    daemon = make_daemon(moo_config(group="nogroup"))
    nogroup = grp.getgrnam("nogroup").gr_gid
    for name in ZGENTS:
        inbox = os.lstat(daemon.moo_dir / f"{name}-inbox")
        sock = os.lstat(daemon.moo_dir / f"{name}.sock")
        assert stat.S_ISFIFO(inbox.st_mode) and stat.S_ISSOCK(sock.st_mode)
        assert stat.S_IMODE(inbox.st_mode) == stat.S_IMODE(sock.st_mode) == 0o660
        assert inbox.st_gid == sock.st_gid == nogroup
    registry = os.lstat(daemon.moo_dir / "registry.json")
    assert stat.S_IMODE(registry.st_mode) == 0o644 and registry.st_gid == nogroup


def test_a_missing_group_is_logged_once_and_files_keep_arqonds_group(make_daemon):
    daemon = make_daemon(moo_config(group="no-such-group-here"))
    assert sum("no-such-group-here" in line for line in daemon.lines) == 1
    assert os.lstat(daemon.moo_dir / "dreader-inbox").st_gid == os.getgid()


async def test_echo_into_an_inbox_is_published_and_kept_until_read(make_daemon, connect_peer,
                                                                   zgent_socket):
    daemon = make_daemon(moo_config())
    peer = await connect_peer(daemon.ws_url)
    await peer.command("join_channel", {"room": "dreader", "channel": "inbox"})
    moo = daemon.moo_dir
    result = sh(f"""echo '{{"ts":"2026-02-12T10:00:00Z","from":"orchestrator","content":"hi"}}' \
                      > {moo}/dreader-inbox
                    echo 'plain words, not JSON' > {moo}/dreader-inbox
                    printf '\\377\\376 bytes\\n' > {moo}/dreader-inbox
                    echo '[1, 2]' > {moo}/dreader-inbox""")
    assert result.returncode == 0, result.stderr
    expected = [{"ts": "2026-02-12T10:00:00Z", "from": "orchestrator", "content": "hi"},
                {"raw": "plain words, not JSON"}, {"raw": "\ufffd\ufffd bytes"},
                {"raw": "[1, 2]"}]
    for payload in expected:
        got = await peer.recv_type("message")
        assert (got["room"], got["channel"], got["payload"]) == ("dreader", "inbox", payload)
    assert got["sender"] == "arqonbus"
    # Read the way the seed reads an inbox, one message per call, through the socket.
    first = sh(f"""echo '{{"id":1,"method":"arqon.recv"}}' \
                   | socat - UNIX-CONNECT:{moo}/dreader.sock | jq -c .result""")
    assert orjson.loads(first.stdout) == expected[0]
    sock = await zgent_socket(moo / "dreader.sock")
    assert await drain(sock, 3) == expected[1:]
    parse = await zgent_socket(moo / "parseclipmate.sock")
    assert (await parse.call("arqon.recv"))["result"] is None  # nothing leaked across inboxes


async def test_an_over_long_line_is_refused_whole_and_neighbours_arrive(make_daemon,
                                                                        zgent_socket):
    daemon = make_daemon(moo_config(max_line_bytes=1000))
    long_line = "x" * 5000
    with open(daemon.moo_dir / "dreader-inbox", "w") as inbox:
        inbox.write('{"n":1}\n' + long_line + '\n{"n":2}\n')
    daemon.wait_for_line("refused: line longer than 1000 bytes")
    sock = await zgent_socket(daemon.moo_dir / "dreader.sock")
    assert await drain(sock, 2) == [{"n": 1}, {"n": 2}]


async def test_a_writer_stopping_mid_line_is_never_glued_to_the_next(make_daemon,
                                                                     zgent_socket):
    daemon = make_daemon(moo_config())
    inbox = daemon.moo_dir / "dreader-inbox"
    assert sh(f"printf '{{\"half\":' > {inbox}").returncode == 0
    daemon.wait_for_line("the writer closed before ending its line")
    assert sh(f"echo '{{\"whole\":true}}' > {inbox}").returncode == 0
    sock = await zgent_socket(daemon.moo_dir / "dreader.sock")
    assert await drain(sock, 1) == [{"whole": True}]


async def test_fifty_concurrent_writers_lose_and_merge_nothing(make_daemon, zgent_socket):
    daemon = make_daemon(moo_config(mailbox_size=5000))
    inbox = daemon.moo_dir / "dreader-inbox"
    writers, lines_each = 50, 20
    # Each writer's lines carry a pad of its own length and letter (up to ~4 KiB, PIPE_BUF).
    script = "\n".join(
        f"(for i in $(seq 1 {lines_each}); do printf '{{\"w\":{w},\"i\":%d,\"pad\":\"%s\"}}\\n'"
        f" $i {chr(97 + w % 26) * (80 * w + 1)} > {inbox}; done) &"
        for w in range(writers)) + "\nwait"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    sock = await zgent_socket(daemon.moo_dir / "dreader.sock")
    got = await drain(sock, writers * lines_each)
    seen = set()
    for message in got:
        w = message["w"]
        assert message["pad"] == chr(97 + w % 26) * (80 * w + 1), "merged or cut line"
        seen.add((w, message["i"]))
    assert seen == {(w, i) for w in range(writers) for i in range(1, lines_each + 1)}
    # Per writer, order is kept.
    for w in range(writers):
        assert [m["i"] for m in got if m["w"] == w] == list(range(1, lines_each + 1))


async def test_a_full_mailbox_drops_the_oldest_and_says_so(make_daemon, zgent_socket,
                                                           connect_peer):
    daemon = make_daemon(moo_config(mailbox_size=3))
    inbox = daemon.moo_dir / "dreader-inbox"
    assert sh(f"for i in 1 2 3 4 5; do echo \"{{\\\"n\\\":$i}}\" > {inbox}; done").returncode == 0
    daemon.wait_for_line("mailbox of dreader full (3)")
    assert sum("mailbox of dreader full" in line for line in daemon.lines) == 1
    sock = await zgent_socket(daemon.moo_dir / "dreader.sock")

    async def inbox_history() -> list[int]:
        history = await sock.call("arqon.history", {"channel": "inbox"})
        return [m["payload"]["n"] for m in history["result"]["messages"]]
    # The dropped ones are still in the channel's history: recorded there once the store
    # has them, which may be a moment after the mailbox had them.
    assert await eventually(inbox_history, done=lambda got: len(got) >= 5) == [1, 2, 3, 4, 5]
    # What is kept on disk is what the full mailbox kept, through a kill -9.
    daemon.kill()
    daemon.start()
    sock = await zgent_socket(daemon.moo_dir / "dreader.sock")
    assert await drain(sock, 3) == [{"n": 3}, {"n": 4}, {"n": 5}]


async def test_request_with_reply_to_goes_to_the_handler_and_back_to_the_requester(
        make_daemon, connect_peer, tmp_path):
    daemon = make_daemon(moo_config())
    moo = daemon.moo_dir
    handler = tmp_path / "dreader-handler"
    handler.write_text("#!/bin/sh\njq -c '{symbol: .params.symbol, volume: 125000}'\n")
    handler.chmod(0o755)
    peer = await connect_peer(daemon.ws_url)
    await peer.command("join_channel", {"room": "parseclipmate:inbox"})
    env = {**daemon.env, "ARQONBUS_CONFIG": str(daemon.config_path)}
    from tests.conftest import arqon_command
    serve = subprocess.Popen(arqon_command("serve", "dreader", "--exec", str(handler)),
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert "serving dreader" in serve.stderr.readline()
        # The seed's §5.2 exchange, word for word apart from the read.
        result = sh(f"""echo '{{"id":"q-456","method":"query","params":{{"type":"history","symbol":"SPX","since":"2026-02-12T14:00:00Z"}},"replyTo":"parseclipmate"}}' \
                          > {moo}/dreader-inbox""")
        assert result.returncode == 0
        response = run_arqon(daemon, "recv", "parseclipmate", "--wait", "20")
        assert response.returncode == 0, response.stderr
        reply = orjson.loads(response.stdout)
        assert reply == {"jsonrpc": "2.0", "id": "q-456",
                         "result": {"symbol": "SPX", "volume": 125000}}
        published = await peer.recv_type("message")
        assert published["payload"] == reply
    finally:
        serve.terminate()
        serve.wait()


async def test_a_bad_reply_to_keeps_the_request_as_a_plain_message(make_daemon, zgent_socket):
    daemon = make_daemon(moo_config())
    handler = await zgent_socket(daemon.moo_dir / "dreader.sock")
    assert (await handler.call("arqon.serve"))["result"] == {"serving": "dreader"}
    requests = [{"id": "q-1", "method": "query", "replyTo": "../../etc/passwd"},
                {"id": "q-2", "method": "query", "replyTo": "ghost"}]
    with open(daemon.moo_dir / "dreader-inbox", "wb") as inbox:
        inbox.write(b"".join(orjson.dumps(r) + b"\n" for r in requests))
    daemon.wait_for_line("replyTo 'ghost' is not a registered Zgent")
    assert any("invalid Zgent name '../../etc/passwd'" in line for line in daemon.lines)
    await handler.expect_silence(0.2)
    reader = await zgent_socket(daemon.moo_dir / "dreader.sock")
    assert await drain(reader, 2) == requests
    assert not os.path.lexists(daemon.moo_dir / "ghost-inbox")
    assert not os.path.lexists("/etc/passwd-inbox")



async def test_unread_mailbox_messages_survive_restarts_and_kill_9_once(make_daemon,
                                                                        connect_peer,
                                                                        zgent_socket):
    daemon = make_daemon(moo_config())
    peer = await connect_peer(daemon.ws_url)
    await peer.command("join_channel", {"room": "dreader", "channel": "inbox"})
    moo, kept = daemon.moo_dir, daemon.state_dir / "mailboxes" / "dreader.jsonl"
    assert sh(f"for n in 1 2 3; do echo \"{{\\\"n\\\":$n}}\" > {moo}/dreader-inbox; done"
              ).returncode == 0
    for n in (1, 2, 3):
        assert (await peer.recv_type("message"))["payload"] == {"n": n}
    assert daemon.stop() == 0
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    daemon.start()
    assert sh(f"echo '{{\"n\":4}}' > {moo}/dreader-inbox").returncode == 0
    sock = await zgent_socket(moo / "dreader.sock")
    first = await sock.call("arqon.recv", {"wait": 5})
    assert first["result"] == {"n": 1}
    # The take is written down in the step that answered; one more answer shows that step
    # is over (a kill inside it gives n=1 again: arqond-moo(7), arqon.recv).
    assert (await sock.call("arqon.ping"))["result"]
    daemon.kill()   # no clean-up at all: what was unread is on disk already
    daemon.start()
    sock = await zgent_socket(moo / "dreader.sock")
    assert await drain(sock, 3) == [{"n": 2}, {"n": 3}, {"n": 4}]
    assert kept.read_bytes() == b""   # emptied with the mailbox
    daemon.kill()
    daemon.start()
    sock = await zgent_socket(moo / "dreader.sock")
    assert (await sock.call("arqon.recv"))["result"] is None


async def test_a_full_disk_keeps_the_mailbox_in_memory_and_says_so(make_daemon, zgent_socket):
    daemon = make_daemon(moo_config(), start=False)
    daemon.state_dir.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k,mode=0750", "arqond-test",
                       str(daemon.state_dir)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs for the state dir (needs root)")
    try:
        daemon.start()
        kept = daemon.state_dir / "mailboxes" / "dreader.jsonl"
        messages = [{"n": n, "pad": "x" * 2000} for n in range(100)]   # 200 KB > 128 KiB
        with open(daemon.moo_dir / "dreader-inbox", "wb") as inbox:
            for message in messages:
                inbox.write(orjson.dumps(message) + b"\n")
        daemon.wait_for_line("mailbox of dreader no longer kept on disk")
        assert metrics_of(daemon)["arqonbus_moo_mailbox_journal_errors_total"] == 1
        assert not kept.exists()   # a file missing writes would replay wrong
        sock = await zgent_socket(daemon.moo_dir / "dreader.sock")
        assert await drain(sock, 100) == messages   # nothing lost while arqond runs
    finally:
        try:
            daemon.stop()
        finally:
            subprocess.run(["umount", str(daemon.state_dir)], check=True)


async def test_a_corrupt_mailbox_file_is_set_aside_and_the_inbox_works(make_daemon,
                                                                       zgent_socket):
    daemon = make_daemon(moo_config(), start=False)
    kept = daemon.state_dir / "mailboxes" / "dreader.jsonl"
    kept.parent.mkdir()
    kept.write_text('{"n": 1}\n["not an object"]\n')
    daemon.start()
    assert (kept.parent / "dreader.jsonl.bad").read_text() == '{"n": 1}\n["not an object"]\n'
    assert any("unusable mailbox (line 2 is not a JSON object)" in line
               for line in daemon.lines)
    assert sh(f"echo hello > {daemon.moo_dir}/dreader-inbox").returncode == 0
    sock = await zgent_socket(daemon.moo_dir / "dreader.sock")
    assert await drain(sock, 1) == [{"raw": "hello"}]


async def test_the_mailbox_of_a_zgent_gone_from_the_config_is_dropped_loudly(make_daemon,
                                                                              zgent_socket):
    daemon = make_daemon(moo_config(), start=False)
    folder = daemon.state_dir / "mailboxes"
    folder.mkdir()
    (folder / "dreader.jsonl").write_text('{"n": 1}\n')
    (folder / "vanished.jsonl").write_text('{"n": 2}\n{"n": 3}\n-\n{"n": 4}\n')
    daemon.start()
    assert any("2 unread message(s) to vanished dropped" in line for line in daemon.lines)
    assert sorted(os.listdir(folder)) == ["dreader.jsonl", "parseclipmate.jsonl"]
    sock = await zgent_socket(daemon.moo_dir / "dreader.sock")
    assert await drain(sock, 1) == [{"n": 1}]


async def test_an_inbox_line_nested_too_deep_is_delivered_raw_and_the_next_one_whole(
        make_daemon, zgent_socket):
    daemon = make_daemon({"zgents": {"dreader": {}}})
    deep = '{"a":' * 300 + "1" + "}" * 300
    inbox = daemon.moo_dir / "dreader-inbox"
    assert sh(f"echo '{deep}' > {inbox}; echo '{{\"n\":2}}' > {inbox}").returncode == 0
    reader = await zgent_socket(daemon.moo_dir / "dreader.sock")
    assert (await reader.call("arqon.recv", {"wait": 5}))["result"] == {"raw": deep}
    assert (await reader.call("arqon.recv", {"wait": 5}))["result"] == {"n": 2}
    daemon.wait_for_line("dreader-inbox: JSON nests deeper than 64 levels "
                         "(server.max_json_depth); delivered as raw")


async def test_a_second_reader_of_an_inbox_is_caught_named_and_counted(make_daemon,
                                                                       connect_peer):
    daemon = make_daemon(moo_config(mailbox_size=100000))
    inbox = daemon.moo_dir / "dreader-inbox"
    # The seed's own loop, run against a FIFO arqond reads: it takes lines away.
    thief = subprocess.Popen(["bash", "-c", f"while true; do read -r line < {inbox}; done"])
    try:
        for burst in range(100):   # until arqond catches it in the act
            with open(inbox, "wb") as writer:
                writer.write(b"".join(b'{"burst":%d,"n":%d}\n' % (burst, n) for n in range(100)))
            time.sleep(0.05)
            if any("another process is reading this FIFO" in line for line in daemon.lines):
                break
    finally:
        thief.kill()
        thief.wait()
    line = daemon.wait_for_line(f"{inbox}: another process is reading this FIFO")
    assert "arqond must be its only reader" in line and line.startswith("<3>")
    assert metrics_of(daemon)["arqonbus_moo_inbox_second_reader_total"] >= 1
    # With the second reader gone, lines arrive whole and once again.
    peer = await connect_peer(daemon.ws_url)
    await peer.command("join_channel", {"room": "dreader", "channel": "inbox"})
    assert sh(f"echo '{{\"after\":1}}' > {inbox}").returncode == 0
    earlier = []
    while (got := (await peer.recv_type("message"))["payload"]) != {"after": 1}:
        earlier.append(got)   # burst lines still on their way to the store when it joined
    assert all(b"burst" in orjson.dumps(m) for m in earlier), earlier
    await peer.expect_silence(0.2)
