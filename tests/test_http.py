"""The HTTP listener against the real daemon: monitoring, /v1 bus access, bad requests."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import socket

import orjson
import pytest

from arqond import __version__
from arqond.core.auth import issue_hs256
from tests.conftest import (http_call, http_raw, metrics_of, parse_http_reply, parse_metrics,
                            scaled)

SECRET = "http-secret"


# -- monitoring ----------------------------------------------------------------------------

def test_health_and_version(daemon):
    health = http_call(daemon, "GET", "/health")
    assert health.status == 200
    body = health.json()
    assert (body["status"], body["service"], body["version"]) == ("healthy", "arqonbus",
                                                                  __version__)
    version = http_call(daemon, "GET", "/version").json()
    assert (version["service"], version["version"], version["protocol"]) == \
        ("arqonbus", __version__, "1.0")


async def test_status_reports_counts_and_listeners(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url + "?client_type=ai-agent")
    await connect_peer(daemon.ws_url)
    await connect_peer(daemon.telemetry_url)
    await a.send({"type": "message", "payload": {"x": 1}})
    await a.recv_type("message_response")
    status = http_call(daemon, "GET", "/status").json()
    assert status["status"] == "healthy" and status["service"] == "arqonbus"
    assert status["listeners"] == daemon.listeners
    assert {"ws", "telemetry", "http"} <= set(status["listeners"])
    assert status["connections"]["active"] == 2
    assert status["connections"]["by_type"] == {"ai-agent": 1, "human": 1}
    assert status["messages"]["total"] == 2  # the message and its agent_activity report
    assert status["rooms"] == 2        # science, and integriguard made by the report
    assert status["channels"] == 8     # 7 science channels, integriguard:dashboard-events
    assert status["telemetry"]["connections"] == 1
    assert status["uptime_seconds"] >= 0


async def test_metrics_counts_exactly(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url)
    b = await connect_peer(daemon.ws_url)
    for n in range(3):
        await a.send({"type": "message", "payload": {"n": n}})
        await a.recv_type("message_response")
        await b.recv_type("message")
    await a.send("{broken")
    await a.recv_type("error")
    for n in range(2):
        reply = http_call(daemon, "POST", "/v1/publish?room=science:general",
                          body=orjson.dumps({"via": "http", "n": n}))
        assert reply.status == 200
        await a.recv_type("message")
        await b.recv_type("message")
    assert http_call(daemon, "POST", "/v1/publish?room=science:general",
                     body=b"{oops").status == 400
    values = metrics_of(daemon)
    expected = {
        "arqonbus_messages_total": 5,
        "arqonbus_deliveries_total": 3 + 2 * 2,
        "arqonbus_errors_total": 1,
        "arqonbus_commands_total": 0,
        # A POST is a request, not a connection of the bus.
        "arqonbus_connections_total": 2,
        "arqonbus_connections_active": 2,
        'arqonbus_transport_connections_total{transport="ws"}': 2,
        'arqonbus_transport_connections_total{transport="http"}': None,
        "arqonbus_slow_consumers_total": 0,
        "arqonbus_http_published_total": 2,
        'arqonbus_http_responses_total{code="200"}': 2,
        'arqonbus_http_responses_total{code="400"}': 1,
        "arqonbus_http_connections_total": 4,  # the /metrics request is the fourth
        "arqonbus_ws_refused_total": 0,
        "arqonbus_telemetry_connections": 0,
        "arqonbus_agent_activity_total": 0,
        "arqonbus_rooms": 1,
        "arqonbus_channels": 7,
    }
    assert {key: values.get(key) for key in expected} == expected
    assert values["arqonbus_uptime_seconds"] >= 0


# -- /v1/history and /v1/publish ---------------------------------------------------------

async def test_publish_acts_like_a_client_message(daemon, connect_peer):
    listener = await connect_peer(daemon.ws_url)
    await listener.command("join_channel", {"room": "science", "channel": "explore"})
    reply = http_call(daemon, "POST", "/v1/publish?room=science&channel=explore&type=event",
                      body=b'{"hello": "curl"}', headers={"Content-Type": "application/json"})
    assert reply.status == 200
    ack = reply.json()
    assert ack["type"] == "message_response" and ack["payload"] == {"hello": "curl"}
    got = await listener.recv_type("event")
    assert got["id"] == ack["id"]
    assert got["payload"] == {"hello": "curl"}
    assert got["sender"].startswith("arq_client_")
    await listener.expect_silence(0.2)


@pytest.mark.parametrize("query, body, status, needle", [
    ("channel=general", b'{"a": 1}', 400, "query parameter room is required"),
    ("room=bad%07name&channel=general", b'{"a": 1}', 400, "invalid room name"),
    ("room=science:general&type=command", b'{"a": 1}', 400, "type must be one of"),
    ("room=science:general", b"not json", 400, "body is not valid JSON"),
    ("room=science:general", b"", 400, "body is not valid JSON"),
    ("room=science:general", b"null", 400, "payload is required"),
    ("room=science:general&client_type=" + "x" * 300, b'{"a": 1}', 400,
     "type must be a string of 1 to 256"),
])
async def test_bad_publish_is_refused_and_delivers_nothing(shared_daemon, connect_peer, query,
                                                           body, status, needle):
    daemon = shared_daemon()
    listener = await connect_peer(daemon.ws_url)
    reply = http_call(daemon, "POST", f"/v1/publish?{query}", body=body)
    assert reply.status == status
    text = orjson.dumps(reply.json()).decode()
    assert needle in text, text
    await listener.expect_silence(0.2)
    assert http_call(daemon, "GET", "/v1/history?room=science&channel=general").json()[
        "count"] == 0


async def test_history_returns_the_last_messages_in_order(daemon, connect_peer):
    ids = []
    for n in range(4):
        reply = http_call(daemon, "POST", "/v1/publish?room=science&channel=design",
                          body=orjson.dumps({"n": n}))
        ids.append(reply.json()["id"])
    http_call(daemon, "POST", "/v1/publish?room=science&channel=share", body=b'{"other": 1}')
    body = http_call(daemon, "GET", "/v1/history?room=science&channel=design&limit=2").json()
    assert (body["room"], body["channel"], body["limit"]) == ("science", "design", 2)
    assert (body["total"], body["count"]) == (4, 2)
    assert [m["id"] for m in body["messages"]] == ids[2:]
    assert [m["payload"] for m in body["messages"]] == [{"n": 2}, {"n": 3}]
    assert all(m["room"] == "science" and m["channel"] == "design" for m in body["messages"])
    whole_room = http_call(daemon, "GET", "/v1/history?room=science").json()
    assert whole_room["channel"] is None
    assert [m["payload"] for m in whole_room["messages"]] == \
        [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}, {"other": 1}]


@pytest.mark.parametrize("query, status, needle", [
    ("room=science&channel=design&limit=0", 400, "limit must be a whole number from 1 to 500"),
    ("room=science&channel=design&limit=501", 400, "limit must be a whole number"),
    ("room=science&channel=design&limit=ten", 400, "limit must be a whole number"),
    ("room=science&channel=design&limit=%C2%B2", 400, "limit must be a whole number"),
    ("channel=design", 400, "query parameter room is required"),
    ("room=science&channel=absent", 404, "channel science:absent does not exist"),
    ("room=absent", 404, "room absent does not exist"),
])
def test_bad_history_requests(shared_daemon, query, status, needle):
    daemon = shared_daemon()
    reply = http_call(daemon, "GET", f"/v1/history?{query}")
    assert reply.status == status
    body = reply.json()
    assert body["status"] == status and needle in body["details"], body


# -- /v1/stream ----------------------------------------------------------------------------

async def open_curl_stream(daemon, query: str) -> asyncio.subprocess.Process:
    """``curl -N`` on /v1/stream piped through ``jq -c``, started once the headers are in."""
    url = f"{daemon.http_url}/v1/stream?{query}"
    process = await asyncio.create_subprocess_shell(
        f"curl -sSN -D /dev/stderr '{url}' | jq --unbuffered -c .",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    status = await asyncio.wait_for(process.stderr.readline(), scaled(10))
    assert b" 200 " in status, status
    while (await asyncio.wait_for(process.stderr.readline(), scaled(10))).strip():
        pass  # the rest of the head; the subscription exists before the head is sent
    return process


async def close_stream(process) -> None:
    os.killpg(process.pid, signal.SIGKILL)  # the shell, curl and jq
    await process.wait()


async def read_lines(process, count: int) -> list[dict]:
    return [orjson.loads(await asyncio.wait_for(process.stdout.readline(), scaled(5)))
            for _ in range(count)]


async def test_stream_gets_exactly_the_published_envelopes(daemon, connect_peer):
    stream = await open_curl_stream(daemon, "room=science&channel=execute")
    try:
        sender = await connect_peer(daemon.ws_url)
        expected = []
        for n in range(3):
            await sender.send({"type": "message", "room": "science:execute", "payload": {"n": n}})
            expected.append((await sender.recv_type("message_response"))["id"])
            await sender.send({"type": "message", "room": "science:interpret",
                               "payload": {"elsewhere": n}})
            await sender.recv_type("message_response")
        reply = http_call(daemon, "POST", "/v1/publish?room=science:execute",
                          body=b'{"from": "http"}')
        expected.append(reply.json()["id"])
        lines = await read_lines(stream, 4)
        assert [line["id"] for line in lines] == expected
        assert [line["payload"] for line in lines] == \
            [{"n": 0}, {"n": 1}, {"n": 2}, {"from": "http"}]
        assert all((line["room"], line["channel"]) == ("science", "execute") for line in lines)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(stream.stdout.readline(), scaled(0.3))
        status = http_call(daemon, "GET", "/status").json()
        assert status["http"]["streams"] == 1
    finally:
        await close_stream(stream)


async def test_stream_with_wildcard_and_new_channel(daemon, connect_peer):
    stream = await open_curl_stream(daemon, "room=*&channel=narrative")
    try:
        for name in ("alice", "bob"):
            http_call(daemon, "POST", f"/v1/publish?room={name}:inbox", body=b'{"skip": 1}')
        # Channels nobody created yet: the first publish creates them, as in ArqonBus.
        reply = http_call(daemon, "POST", "/v1/publish?room=alice&channel=narrative",
                          body=orjson.dumps({"who": "alice"}))
        assert reply.status == 200
        sender = await connect_peer(daemon.ws_url)
        await sender.send({"type": "message", "room": "bob:narrative", "payload": {"who": "bob"}})
        await sender.recv_type("message_response")
        lines = await read_lines(stream, 2)
        assert [(line["room"], line["payload"]) for line in lines] == \
            [("alice", {"who": "alice"}), ("bob", {"who": "bob"})]
    finally:
        await close_stream(stream)


@pytest.mark.parametrize("query, needle", [
    ("room=science", "query parameters room and channel are required"),
    ("room=science&channel=bad%00name", "invalid channel name"),
])
def test_bad_stream_requests(shared_daemon, query, needle):
    daemon = shared_daemon()
    reply = http_call(daemon, "GET", f"/v1/stream?{query}")
    assert reply.status == 400 and needle in reply.json()["details"]


async def test_slow_stream_is_cut_off_and_counted(make_daemon, connect_peer):
    daemon = make_daemon({"server": {"client_buffer_bytes": 65536}})
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(daemon.http_address)
    slow.sendall(b"GET /v1/stream?room=science&channel=general HTTP/1.1\r\nHost: t\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += slow.recv(1)  # read the head only, then never again
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    sender = await connect_peer(daemon.ws_url)
    fast = await connect_peer(daemon.ws_url)
    blob = "s" * 100000
    start = len(daemon.lines)
    count = 0
    while not any("client slow" in line and "TRANSPORT=http" in line
                  for line in daemon.lines[start:]):
        await sender.send({"type": "message", "payload": {"n": count, "blob": blob}})
        await sender.recv_type("message_response")
        assert (await fast.recv_type("message"))["payload"]["n"] == count
        count += 1
        assert count < 1000, "the stream was never cut off"
    values = metrics_of(daemon)
    assert values["arqonbus_http_stream_cutoffs_total"] == 1
    assert values["arqonbus_slow_consumers_total"] == 1
    assert values["arqonbus_http_streams"] == 0
    assert values["arqonbus_connections_active"] == 2
    slow.close()


async def test_publish_identity_comes_from_client_type(daemon, connect_peer):
    dashboard = await connect_peer(daemon.ws_url)
    await dashboard.command("join_channel", {"room": "integriguard", "channel": "dashboard-events"})
    await dashboard.command("leave_channel", {"room": "science", "channel": "general"})
    # type= is the envelope type, never the client's: a human publishing an event.
    assert http_call(daemon, "POST", "/v1/publish?room=science:general&type=event",
                     body=b'{"a": 1}').status == 200
    reply = http_call(daemon, "POST", "/v1/publish?room=science:general&client_type=ai-agent"
                      "&screen_name=curl-bot", body=b'{"a": 2}')
    report = await dashboard.recv_type("telemetry")
    assert report["payload"]["eventType"] == "agent_activity"
    assert (report["payload"]["client_type"], report["payload"]["screen_name"]) == \
        ("ai-agent", "curl-bot")
    assert report["payload"]["last_message_id"] == reply.json()["id"]
    await dashboard.expect_silence(0.2)


async def test_stream_ends_cleanly_when_arqond_stops(daemon):
    stream = await open_curl_stream(daemon, "room=science&channel=general")
    http_call(daemon, "POST", "/v1/publish?room=science:general", body=b'{"last": 1}')
    assert (await read_lines(stream, 1))[0]["payload"] == {"last": 1}
    assert daemon.stop() == 0
    assert await asyncio.wait_for(stream.stdout.read(), scaled(5)) == b""
    assert await asyncio.wait_for(stream.wait(), scaled(5)) == 0  # curl saw a complete chunked body


def test_connection_limit_answers_503(make_daemon):
    daemon = make_daemon({"server": {"max_connections": 1}})
    host, port = daemon.http_address
    holder = http.client.HTTPConnection(host, port, timeout=scaled(10))

    def held(path: str) -> tuple[int, bytes]:
        holder.request("GET", path)
        response = holder.getresponse()
        return response.status, response.read()

    try:
        assert held("/health")[0] == 200  # answered, so the connection is registered
        refused = http_call(daemon, "GET", "/health")
        assert refused.status == 503
        assert refused.json()["details"] == "connection limit reached"
        status, body = held("/metrics")  # the held connection still works
        assert status == 200
        assert parse_metrics(body.decode())["arqonbus_http_refused_total"] == 1
    finally:
        holder.close()


# -- JWT -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path, method", [
    ("/v1/history?room=science", "GET"), ("/v1/stream?room=science&channel=general", "GET"),
    ("/v1/publish?room=science:general", "POST")])
def test_v1_endpoints_need_a_token_when_auth_is_on(shared_daemon, path, method):
    daemon = shared_daemon({"auth": {"enabled": True, "jwt_secret": SECRET}})
    missing = http_call(daemon, method, path, body=b'{"a": 1}')
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="arqonbus"'
    assert missing.json()["details"] == "Missing bearer token"
    forged = issue_hs256({"sub": "x"}, "wrong-secret")
    bad = http_call(daemon, method, path, body=b'{"a": 1}',
                    headers={"Authorization": f"Bearer {forged}"})
    assert bad.status == 401 and bad.json()["details"] == "Invalid token: bad signature"
    token = issue_hs256({"sub": "x"}, SECRET)
    history = http_call(daemon, "GET", f"/v1/history?room=science:general&token={token}")
    assert history.json()["count"] == 0  # the refused publish left nothing behind
    assert http_call(daemon, "GET", "/health").status == 200  # monitoring stays open


async def test_valid_token_in_header_or_query(make_daemon, connect_peer):
    daemon = make_daemon({"auth": {"enabled": True, "jwt_secret": SECRET}})
    token = issue_hs256({"sub": "ops", "role": "user"}, SECRET)
    reply = http_call(daemon, "POST", "/v1/publish?room=science:general",
                      body=b'{"a": 1}', headers={"Authorization": f"Bearer {token}"})
    assert reply.status == 200
    history = http_call(daemon, "GET", f"/v1/history?room=science&access_token={token}").json()
    assert [m["id"] for m in history["messages"]] == [reply.json()["id"]]


# -- protocol errors and limits ------------------------------------------------------------

@pytest.mark.parametrize("request_bytes, status, needle", [
    (b"GARBAGE\r\n\r\n", 400, "illegal request line"),
    (b"GET /health HTTP/1.1\r\n\r\n", 400, "Missing mandatory Host"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n", 400, "malformed request"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-Flood-%d: y\r\n" % n for n in range(100)) + b"\r\n", 431, "more than 64 header"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431,
     "request line and headers exceed 16384 bytes"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000, 431,
     "request line and headers exceed 16384 bytes"),  # still incomplete
    (b"POST /v1/publish?room=science:general HTTP/1.1\r\nHost: x\r\n"
     b"Content-Length: 5000\r\n\r\n", 413, "exceeds the limit of 4096 bytes"),
    (b"POST /v1/publish?room=science:general HTTP/1.1\r\nHost: x\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n" + b"800\r\n" + b"a" * 2048 + b"\r\n"
     + b"800\r\n" + b"a" * 2048 + b"\r\n" + b"800\r\n" + b"a" * 2048 + b"\r\n0\r\n\r\n",
     413, "body exceeds the limit of 4096 bytes"),
])
async def test_malformed_requests_get_json_errors_and_close(shared_daemon, connect_peer,
                                                            request_bytes, status, needle):
    daemon = shared_daemon({"server": {"max_message_size": 4096}})
    listener = await connect_peer(daemon.ws_url)
    reply = parse_http_reply(http_raw(daemon, request_bytes))  # read until the server closes
    assert reply.status == status
    assert reply.headers["connection"] == "close"
    body = reply.json()
    assert body["status"] == status and needle in body["details"], body
    await listener.expect_silence(0.2)
    assert http_call(daemon, "GET", "/health").status == 200


def test_http_10_without_host_is_accepted(daemon):
    reply = parse_http_reply(http_raw(daemon, b"GET /version HTTP/1.0\r\n\r\n"))
    assert reply.status == 200 and reply.json()["service"] == "arqonbus"


@pytest.mark.parametrize("method, path, status, allow", [
    ("GET", "/nothing", 404, None), ("GET", "/v1", 404, None),
    ("POST", "/health", 405, "GET, HEAD"), ("DELETE", "/metrics", 405, "GET, HEAD"),
    ("GET", "/v1/publish?room=science:general", 405, "POST"),
    ("PUT", "/v1/stream", 405, "GET, HEAD"),
])
def test_unknown_paths_and_wrong_methods(shared_daemon, method, path, status, allow):
    daemon = shared_daemon()
    reply = http_call(daemon, method, path)
    assert reply.status == status
    assert reply.headers.get("allow") == allow
    assert reply.json()["status"] == status


def test_keep_alive_and_pipelining(daemon):
    host, port = daemon.http_address
    connection = http.client.HTTPConnection(host, port, timeout=scaled(10))
    try:
        for path in ("/health", "/version", "/nothing", "/status"):
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            assert response.status in (200, 404)
            assert not response.will_close
    finally:
        connection.close()
    pipelined = http_raw(daemon, b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert pipelined.count(b"HTTP/1.1 200 OK") == 2
    assert b'"protocol":"1.0"' in pipelined and b'"status":"healthy"' in pipelined
    values = metrics_of(daemon)
    assert values["arqonbus_http_connections_total"] == 2 + 1  # + the /metrics request


def test_expect_100_continue_is_answered_before_the_body(daemon):
    body = orjson.dumps({"big": "x" * 5000})
    with socket.create_connection(daemon.http_address, timeout=scaled(10)) as sock:
        sock.sendall(b"POST /v1/publish?room=science:general HTTP/1.1\r\nHost: x\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    reply = parse_http_reply(raw)
    assert reply.status == 200 and reply.json()["payload"] == {"big": "x" * 5000}
