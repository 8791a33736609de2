"""Zgent sockets against the real daemon: socat and jq as the seed uses them, handlers,
errors, floods and SO_PEERCRED."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket

import orjson
import pytest

from tests.conftest import metrics_of, sh

ZGENTS = {"dreader": {"name": "DReader", "capabilities": ["query:volume"]},
          "parseclipmate": {}}


def moo_config(**moo):
    return {"moo": moo, "zgents": ZGENTS}


def socat(path, line: str) -> list[dict]:
    """``echo LINE | socat - UNIX-CONNECT:PATH``: every JSON line printed back."""
    result = sh(f"echo '{line}' | socat - UNIX-CONNECT:{path}")
    assert result.returncode == 0, result.stderr
    return [orjson.loads(out) for out in result.stdout.splitlines()]


async def attach_handler(zgent_socket, path):
    handler = await zgent_socket(path)
    answer = await handler.call("arqon.serve", request_id="s")
    assert answer == {"jsonrpc": "2.0", "id": "s", "result": {"serving": "dreader"}}
    return handler


def test_arqon_methods_answer_one_line_each_for_socat_and_jq(make_daemon):
    daemon = make_daemon(moo_config())
    sock = daemon.moo_dir / "dreader.sock"
    [pong] = socat(sock, '{"id":"p","method":"arqon.ping"}')
    assert pong["id"] == "p" and pong["result"]["pong"] is True
    info = sh(f"""echo '{{"id":1,"method":"arqon.info"}}' | socat - UNIX-CONNECT:{sock} \
                  | jq -r '.result.capabilities[]'""")
    assert info.stdout == "query:volume\n"
    [history] = socat(sock, '{"jsonrpc":"2.0","id":2,"method":"arqon.history"}')
    assert history["result"] == {"room": "dreader", "channel": None, "messages": []}


@pytest.mark.parametrize("line, code, needle", [
    ('{"id":"q-123","method":"query","params":{"type":"volume","symbol":"SPX"}}', -32001,
     "not serving"),
    ("this is not json", -32700, "parse error"),
    ('{"id":"x","method":7}', -32600, '"method" must be'),
    ('{"id":"x"}', -32600, 'no "method"'),
    ('["id"]', -32600, "JSON object"),
    ('{"id":"x","method":"arqon.teleport"}', -32601, "method not found"),
    ('{"id":"x","method":"arqon.recv","params":{"wait":-1}}', -32602, "wait must be"),
    ('{"id":"x","method":"arqon.history","params":[1]}', -32602, "params"),
])
def test_errors_come_at_once_in_json_rpc_shape(make_daemon, line, code, needle):
    daemon = make_daemon(moo_config())
    [answer] = socat(daemon.moo_dir / "dreader.sock", line)
    assert answer["jsonrpc"] == "2.0" and set(answer) == {"jsonrpc", "id", "error"}
    assert answer["error"]["code"] == code and needle in answer["error"]["message"]
    # The connection and the daemon are fine afterwards.
    [pong] = socat(daemon.moo_dir / "dreader.sock", '{"id":9,"method":"arqon.ping"}')
    assert pong["result"]["pong"]


async def test_requests_reach_the_handler_and_replies_keep_each_clients_id(make_daemon,
                                                                           zgent_socket):
    daemon = make_daemon(moo_config())
    path = daemon.moo_dir / "dreader.sock"
    handler = await attach_handler(zgent_socket, path)
    a, b = await zgent_socket(path), await zgent_socket(path)
    request = {"id": "q-123", "method": "query", "params": {"symbol": "SPX"}}
    await a.send(request)
    await b.send({**request, "params": {"symbol": "NDX"}})  # the same id, from someone else
    first, second = await handler.recv(), await handler.recv()
    assert first["method"] == "query" and first["id"] != second["id"]
    # Answer in reverse order; each reply goes back to its own client with its own id.
    await handler.send({"id": second["id"], "result": {"symbol": second["params"]["symbol"]}})
    await handler.send({"id": first["id"], "result": {"symbol": first["params"]["symbol"]}})
    assert await a.recv() == {"jsonrpc": "2.0", "id": "q-123", "result": {"symbol": "SPX"}}
    assert await b.recv() == {"jsonrpc": "2.0", "id": "q-123", "result": {"symbol": "NDX"}}
    # The seed's shell query, with a handler answering.
    task = asyncio.create_task(asyncio.to_thread(
        sh, f"""echo '{{"id":"q-9","method":"query","params":{{}}}}' \
                | socat -t 10 - UNIX-CONNECT:{path} | jq -c .result"""))
    forwarded = await handler.recv()
    await handler.send({"id": forwarded["id"], "result": {"volume": 125000}})
    assert (await task).stdout == '{"volume":125000}\n'
    # A bad reply becomes an error for the caller, not silence.
    await a.send({"id": 5, "method": "query"})
    forwarded = await handler.recv()
    await handler.send({"id": forwarded["id"]})
    answer = await a.recv()
    assert answer["id"] == 5 and answer["error"]["code"] == -32603


async def test_a_second_handler_is_refused(make_daemon, zgent_socket):
    daemon = make_daemon(moo_config())
    path = daemon.moo_dir / "dreader.sock"
    await attach_handler(zgent_socket, path)
    other = await zgent_socket(path)
    answer = await other.call("arqon.serve")
    assert answer["error"]["code"] == -32004 and "already has a handler" in \
        answer["error"]["message"]


async def test_a_silent_handler_gives_a_timeout_error(make_daemon, zgent_socket):
    daemon = make_daemon(moo_config(handler_timeout=0.5))
    path = daemon.moo_dir / "dreader.sock"
    handler = await attach_handler(zgent_socket, path)
    client = await zgent_socket(path)
    answer = await client.call("query", {"x": 1}, request_id="q-1")
    assert answer["id"] == "q-1" and answer["error"]["code"] == -32002
    forwarded = await handler.recv()
    await handler.send({"id": forwarded["id"], "result": "too late"})  # dropped, harmless
    await client.expect_silence()
    assert (await client.call("arqon.ping"))["result"]["pong"]


async def test_handler_or_client_leaving_mid_request_harms_nobody(make_daemon, zgent_socket):
    daemon = make_daemon(moo_config())
    path = daemon.moo_dir / "dreader.sock"
    handler = await attach_handler(zgent_socket, path)
    leaver, stayer = await zgent_socket(path), await zgent_socket(path)
    await leaver.send({"id": "gone", "method": "query"})
    await stayer.send({"id": "here", "method": "query"})
    to_leaver, to_stayer = await handler.recv(), await handler.recv()
    await leaver.close()
    await handler.send({"id": to_leaver["id"], "result": 1})  # its asker is gone
    await handler.send({"id": to_stayer["id"], "result": 2})
    assert await stayer.recv() == {"jsonrpc": "2.0", "id": "here", "result": 2}
    # Now the handler goes away with a request open: the asker hears at once.
    await stayer.send({"id": "orphan", "method": "query"})
    await handler.recv()
    await handler.close()
    answer = await stayer.recv()
    assert answer["id"] == "orphan" and answer["error"]["code"] == -32001
    assert "went away" in answer["error"]["message"]
    assert (await stayer.call("query", request_id="next"))["error"]["code"] == -32001


async def test_over_long_and_garbage_lines_on_a_socket_leave_the_connection_usable(
        make_daemon, zgent_socket):
    daemon = make_daemon(moo_config(max_line_bytes=1000))
    client = await zgent_socket(daemon.moo_dir / "dreader.sock")
    await client.send(b'{"id":1,"method":"arqon.ping","params":{"pad":"' + b"x" * 5000 + b'"}}\n')
    refused = await client.recv()
    assert refused["id"] is None and refused["error"]["code"] == -32600
    assert "longer than 1000 bytes" in refused["error"]["message"]
    await client.send(b"\x00\xff garbage\n")
    assert (await client.recv())["error"]["code"] == -32700
    assert (await client.call("arqon.ping", request_id=2))["id"] == 2
    daemon.wait_for_line("dreader.sock: line refused: line longer than 1000 bytes")
    # Over-long up to the end of the stream (no newline at all): refused too, in one line.
    result = sh(f"head -c 3000 /dev/zero | tr '\\0' x | socat - "
                f"UNIX-CONNECT:{daemon.moo_dir}/dreader.sock")
    [answer] = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert answer["error"]["code"] == -32600 and "longer than 1000" in answer["error"]["message"]
    # A last request without its newline is answered.
    result = sh(f"printf '{{\"id\":7,\"method\":\"arqon.ping\"}}' | socat - "
                f"UNIX-CONNECT:{daemon.moo_dir}/dreader.sock")
    assert orjson.loads(result.stdout)["id"] == 7


async def test_a_client_flooding_without_reading_is_cut_off_alone(make_daemon, zgent_socket):
    daemon = make_daemon(moo_config(client_buffer_bytes=65536))
    path = daemon.moo_dir / "dreader.sock"
    calm = await zgent_socket(path)
    flood = await zgent_socket(path)
    request = orjson.dumps({"id": "f", "method": "arqon.info"}) + b"\n"
    try:
        for _ in range(2000):  # replies pile up unread until arqond gives up on it
            flood.writer.write(request * 50)
            await flood.writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        pass
    daemon.wait_for_line("dreader.sock: client")
    assert any("bytes behind; disconnected" in line for line in daemon.lines)
    assert (await calm.call("arqon.ping"))["result"]["pong"]


async def test_bus_envelopes_on_a_socket_act_as_over_websocket(make_daemon, zgent_socket,
                                                               connect_peer):
    daemon = make_daemon(moo_config())
    peer = await connect_peer(daemon.ws_url)
    client = await zgent_socket(daemon.moo_dir / "dreader.sock")
    await client.send({"type": "message", "room": "science", "channel": "general",
                       "payload": {"from": "socket"}})
    ack = await client.recv()
    assert ack["type"] == "message_response"
    got = await peer.recv_type("message")
    assert got["payload"] == {"from": "socket"} and got["id"] == ack["id"]
    await client.send({"type": "command", "command": "ping"})
    response = await client.recv()
    assert response["type"] == "response" and response["payload"]["data"]["pong"] is True
    assert (await client.recv())["type"] == "command_response"
    await client.send({"type": "message", "room": "science", "bogus": 1, "payload": {}})
    error = await client.recv()
    assert error["type"] == "error" and "'bogus'" in error["error"]


async def test_subscribe_streams_inbox_and_channels_as_notifications(make_daemon,
                                                                     zgent_socket):
    daemon = make_daemon(moo_config())
    watcher = await zgent_socket(daemon.moo_dir / "dreader.sock")
    answer = await watcher.call("arqon.subscribe", {"channels": ["moo:broadcast"]})
    assert answer["result"]["subscribed"] == ["dreader:*", "moo:broadcast"]
    assert sh(f"echo '{{\"n\":1}}' > {daemon.moo_dir}/dreader-inbox").returncode == 0
    note = await watcher.recv()
    assert note["method"] == "arqon.message" and "id" not in note
    assert (note["params"]["room"], note["params"]["channel"]) == ("dreader", "inbox")
    assert note["params"]["payload"] == {"n": 1}
    # Subscribing does not consume: the message is still in the mailbox.
    reader = await zgent_socket(daemon.moo_dir / "dreader.sock")
    assert (await reader.call("arqon.recv"))["result"] == {"n": 1}


async def test_recv_waits_for_the_next_message(make_daemon, zgent_socket):
    daemon = make_daemon(moo_config())
    reader = await zgent_socket(daemon.moo_dir / "dreader.sock")
    await reader.send({"id": "w", "method": "arqon.recv", "params": {"wait": 30}})
    await reader.expect_silence(0.3)
    assert sh(f"echo '{{\"late\":true}}' > {daemon.moo_dir}/dreader-inbox").returncode == 0
    assert await reader.recv() == {"jsonrpc": "2.0", "id": "w", "result": {"late": True}}
    # Handed to the waiter, so not kept twice.
    assert (await reader.call("arqon.recv"))["result"] is None


def test_serve_is_allowed_only_to_configured_uids(make_daemon, shared_moo_dir):
    if shutil.which("setpriv") is None or os.getuid() != 0:
        pytest.skip("needs root and setpriv to connect as another uid")
    daemon = make_daemon({"moo": {"dir": shared_moo_dir, "group": "nogroup"},
                          "zgents": {"dreader": {"uids": [1234]},
                                     "nobodys": {"uids": ["nobody"]}}})
    as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups"
    serve = '{"id":"s","method":"arqon.serve"}'
    refused = sh(f"echo '{serve}' | {as_nobody} socat - UNIX-CONNECT:{shared_moo_dir}/dreader.sock")
    answer = orjson.loads(refused.stdout)
    assert answer["error"] == {"code": -32003, "message": "not allowed to serve Zgent dreader "
                               "(allowed: the owners of dreader: who registered it, its uids "
                               "and groups; and admins)"}
    daemon.wait_for_line("not allowed to serve Zgent dreader")
    # The same uid may query (group access), and may serve the Zgent that names it.
    [pong] = [orjson.loads(line) for line in sh(
        f"echo '{{\"id\":1,\"method\":\"arqon.ping\"}}' | {as_nobody} socat - "
        f"UNIX-CONNECT:{shared_moo_dir}/dreader.sock").stdout.splitlines()]
    assert pong["result"]["pong"]
    allowed = sh(f"echo '{serve}' | {as_nobody} socat - "
                 f"UNIX-CONNECT:{shared_moo_dir}/nobodys.sock")
    assert orjson.loads(allowed.stdout.splitlines()[0])["result"] == {"serving": "nobodys"}


async def test_clients_past_max_clients_are_refused_and_the_others_served(make_daemon,
                                                                          zgent_socket):
    daemon = make_daemon(moo_config(max_clients=2))
    first = await zgent_socket(daemon.moo_dir / "dreader.sock")
    second = await zgent_socket(daemon.moo_dir / "parseclipmate.sock")
    assert (await first.call("arqon.ping"))["result"]["pong"]
    third = await zgent_socket(daemon.moo_dir / "dreader.sock")
    refused = await third.recv()
    assert refused["error"]["code"] == -32004 and "2 Zgent socket clients" in \
        refused["error"]["message"]
    assert await third.reader.read() == b""  # and closed
    daemon.wait_for_line("moo.max_clients (2) reached")
    assert (await second.call("arqon.ping"))["result"]["pong"]
    await first.close()
    # Its slot frees once arqond has seen it go.
    for _ in range(100):
        fourth = await zgent_socket(daemon.moo_dir / "dreader.sock")
        if "result" in await fourth.call("arqon.ping", request_id=4):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the closed client's slot was never freed")


async def test_stopping_answers_open_requests_then_closes(make_daemon, zgent_socket):
    daemon = make_daemon(moo_config())
    handler = await attach_handler(zgent_socket, daemon.moo_dir / "dreader.sock")
    asker = await zgent_socket(daemon.moo_dir / "dreader.sock")
    await asker.send({"id": "q", "method": "query"})
    await handler.recv()
    daemon.signal(signal.SIGTERM)
    answer = await asker.recv()
    assert answer["error"] == {"code": -32001, "message": "arqond is stopping"}
    assert await asker.reader.read() == b""
    assert daemon.proc.wait(10) == 0


@pytest.mark.parametrize("how", ["socat gave up waiting", "the reader was killed"])
async def test_a_recv_wait_abandoned_by_its_reader_never_eats_the_next_message(
        make_daemon, zgent_socket, how):
    daemon = make_daemon(moo_config())
    path = daemon.moo_dir / "dreader.sock"
    if how == "socat gave up waiting":
        # socat half-closes after its request, waits 0.5 s (-t) for an answer, then leaves.
        result = sh(f"""echo '{{"id":"w","method":"arqon.recv","params":{{"wait":30}}}}' """
                    f"| socat - UNIX-CONNECT:{path}")
        assert result.returncode == 0 and result.stdout == "", result
    else:
        with socket.socket(socket.AF_UNIX) as waiter:  # gone without a word, as after kill -9
            waiter.connect(str(path))
            waiter.sendall(b'{"id":"w","method":"arqon.recv","params":{"wait":30}}\n')
            await asyncio.sleep(0.2)
    assert sh(f"echo '{{\"after\":1}}' > {daemon.moo_dir}/dreader-inbox").returncode == 0
    reader = await zgent_socket(path)
    assert (await reader.call("arqon.recv", {"wait": 5}))["result"] == {"after": 1}
    assert (await reader.call("arqon.recv"))["result"] is None  # once, not twice
    assert metrics_of(daemon)["arqonbus_moo_abandoned_waits_total"] == 1
