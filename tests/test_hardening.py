"""Hardening items of issue 12, each named after its behaviour: failures inside arqond caught
one record at a time and counted in one family, HEAD answered like GET, no slowloris, CASIL
logging where a secret was and never the secret, arqond's own telemetry event names reserved,
and `arqond --daemon` reporting a failed start."""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import signal
import socket
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect, unix_connect

from arqond import config as configuration
from arqond.app import Daemon
from arqond.core.commands import Command
from arqond.core.telemetry import RESERVED_EVENT_TYPES
from arqond.transports import http as http_adapter
from tests.conftest import (ROOT, HttpReply, PortTaken, ZgentSocket, isolated_sections,
                            metrics_of, on_free_ports, parse_http_reply, parse_metrics, scaled,
                            write_config)
from tests.test_lifecycle import alive, read_pid, run_arqond, wait_for

INTERNAL_ERROR_TEXT = ("internal error in arqond while handling this frame; it was logged, and "
                       "the connection stays open")


# -- failures inside arqond: one record lost, never the connection --------------------------

class LiveDaemon:
    """The real Daemon of arqond/app.py, run on the test's own event loop, so that a test can
    plug a part that fails into its Bus, as a buggy command or observer would."""

    def __init__(self, tmp: Path, config: dict | None = None) -> None:
        sections = isolated_sections(tmp)
        for section, body in (config or {}).items():
            sections.setdefault(section, {}).update(body)
        self.config = configuration.load(str(write_config(tmp / "arqond.toml", sections)))
        self.daemon = Daemon(self.config, {})
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> "LiveDaemon":
        self.task = asyncio.create_task(self.daemon.run())
        while self.daemon.state != "ready":
            assert not self.task.done(), self.task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc) -> None:
        self.daemon.stopping.set()
        assert await self.task == 0
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)

    def address(self, name: str) -> tuple[str, int]:
        host, _, port = self.daemon.addresses[name].rpartition(":")
        return host, int(port)

    def url(self, name: str) -> str:
        return f"ws://{self.daemon.addresses[name]}/"

    async def request(self, method: str, target: str, body: bytes = b"") -> HttpReply:
        """One request on its own connection (the daemon runs on this very loop, so no
        blocking client here)."""
        reader, writer = await asyncio.open_connection(*self.address("http"))
        writer.write(f"{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        reply = await asyncio.wait_for(reader.read(), scaled(10))
        writer.close()
        return parse_http_reply(reply)

    async def metrics(self) -> dict[str, float]:
        return parse_metrics((await self.request("GET", "/metrics")).body.decode())


def explode(ctx):
    raise RuntimeError("a bug in a command")


def late_and_malformed(ctx):
    """A command whose answer comes later and is not the (message, data) pair: the failure
    happens in a loop callback, with no adapter on the stack."""
    future = asyncio.get_running_loop().create_future()
    future.set_result("not a pair")
    return future


def explode_on_marked(env, client):
    if b"explode" in orjson.dumps(env.get("payload")):
        raise RuntimeError("a bug in an observer")


def explode_at_the_target(client, env):
    raise RuntimeError("a bug in an intercept")


def plug_faults(daemon: Daemon) -> None:
    daemon.bus.plug(commands={"test.explode": Command(explode, False, "fails"),
                              "test.late": Command(late_and_malformed, False, "fails later")},
                    on_message=explode_on_marked,
                    intercepts={("science", "boom"): explode_at_the_target})


async def assert_internal_error(connection, request_id: str) -> None:
    error = orjson.loads(await asyncio.wait_for(connection.recv(), scaled(5)))
    assert (error["type"], error["error_code"], error["error"], error["request_id"]) == (
        "error", "INTERNAL_ERROR", INTERNAL_ERROR_TEXT, request_id)


async def test_a_frame_that_fails_inside_arqond_is_answered_internal_error_and_the_connection_stays(
        tmp_path, caplog):
    async with LiveDaemon(tmp_path, {"zgents": {"zed": {}}}) as live:
        plug_faults(live.daemon)
        async with connect(live.url("ws")) as ws, \
                unix_connect(live.daemon.addresses["bus"]) as bus:
            for connection in (ws, bus):
                await connection.recv()  # welcome
                await connection.send(orjson.dumps({"id": "boom-1", "type": "command",
                                                    "command": "test.explode"}).decode())
                await assert_internal_error(connection, "boom-1")
                await connection.send(orjson.dumps({
                    "id": "boom-2", "type": "message", "room": "science", "channel": "boom",
                    "payload": {}}).decode())
                await assert_internal_error(connection, "boom-2")
                # An observer (telemetry, webhooks) that fails on a message: the message is
                # stored and delivered all the same, so its sender gets the ack.
                await connection.send(orjson.dumps({
                    "id": "boom-2b", "type": "message", "room": "science", "channel": "explore",
                    "payload": {"explode": True}}).decode())
                ack = orjson.loads(await asyncio.wait_for(connection.recv(), scaled(5)))
                assert (ack["type"], ack["id"]) == ("message_response", "boom-2b")
                await connection.send(orjson.dumps({"id": "boom-3", "type": "command",
                                                    "command": "test.late"}).decode())
                await assert_internal_error(connection, "boom-3")
                # Still open and served.
                await connection.send('{"type":"command","command":"ping","id":"p"}')
                pong = orjson.loads(await asyncio.wait_for(connection.recv(), scaled(5)))
                assert (pong["type"], pong["payload"]["message"]) == ("response", "pong")
            # The control socket: one line fails, the next is served.
            reader, writer = await asyncio.open_unix_connection(live.daemon.addresses["control"])
            await reader.readline()
            writer.write(b'{"id":"boom-4","type":"command","command":"test.explode"}\n'
                         b'{"id":"p","type":"command","command":"ping"}\n')
            error = orjson.loads(await reader.readline())
            assert (error["error_code"], error["error"], error["request_id"]) == (
                "INTERNAL_ERROR", INTERNAL_ERROR_TEXT, "boom-4")
            assert orjson.loads(await reader.readline())["payload"]["message"] == "pong"
            writer.close()
            # A bus envelope on a Zgent socket goes through the same catch.
            zed = await ZgentSocket.open(live.daemon.config.moo.dir + "/zed.sock")
            await zed.send({"id": "boom-5", "type": "command", "command": "test.explode"})
            error = await zed.recv()
            assert (error["error_code"], error["request_id"]) == ("INTERNAL_ERROR", "boom-5")
            assert (await zed.call("arqon.ping"))["result"]["pong"] is True
            await zed.close()
            # HTTP: a 500 for that request, and the server goes on serving.
            reply = await live.request("POST", "/v1/publish?room=science&channel=boom", b'{}')
            assert reply.status == 500
            assert reply.json() == {"error": "Internal Server Error",
                                    "details": "internal error; see the arqond log",
                                    "status": 500}
            # Telemetry: an error frame, and the watcher stays (a bug on the event's way to
            # the bus, this time).
            publish = live.daemon.bus.publish

            def publish_or_explode(env, **kwargs):
                if b"explode" in orjson.dumps(env.get("payload")):
                    raise RuntimeError("a bug on the way to the bus")
                return publish(env, **kwargs)
            live.daemon.bus.publish = publish_or_explode
            async with connect(live.url("telemetry")) as watcher:
                await watcher.recv()
                await watcher.send('{"eventType":"load","payload":{"explode":true}}')
                # Watchers hear of it first, as of any event of arqond's.
                event = orjson.loads(await asyncio.wait_for(watcher.recv(), scaled(5)))
                assert (event["event_type"], event["payload"]["component"]) == (
                    "internal_error", "telemetry")
                error = orjson.loads(await asyncio.wait_for(watcher.recv(), scaled(5)))
                assert (error["error_code"], error["error"]) == ("INTERNAL_ERROR",
                                                                 INTERNAL_ERROR_TEXT)
                await watcher.send('{"type":"ping"}')
                pong = orjson.loads(await asyncio.wait_for(watcher.recv(), scaled(5)))
                assert pong["type"] == "pong"
            values = await live.metrics()
    counts = {component: values[f'arqonbus_internal_errors_total{{component="{component}"}}']
              for component in ("ws", "control", "http", "telemetry", "moo", "narrative",
                                "casil", "observer", "streams")}
    assert counts == {"ws": 6, "control": 1, "http": 1, "telemetry": 1, "moo": 1,
                      "narrative": 0, "casil": 0, "observer": 2, "streams": 0}
    logged = [record for record in caplog.records if record.getMessage().startswith(
        "internal error in ")]
    assert len(logged) == 12
    assert all(record.levelname == "ERROR" and record.exc_info for record in logged)
    assert logged[0].getMessage().startswith("internal error in ws while handling a command "
                                             "frame of client arq_client_")
    assert "internal error in http while handling POST /v1/publish; that one record was " \
        "dropped, the connection kept" in [record.getMessage() for record in logged]


# -- HTTP: HEAD, malformed targets, slow senders ---------------------------------------------

def test_head_is_answered_like_get_without_a_body_and_logs_no_traceback(daemon):
    """Status and headers as GET's, no body, on one keep-alive connection (a body would
    corrupt the framing of the next answer)."""
    host, port = daemon.http_address
    connection = http.client.HTTPConnection(host, port, timeout=scaled(10))
    try:
        for path in ("/version", "/nope", "/v1/history?room=science", "/v1/history"):
            connection.request("HEAD", path)
            head = connection.getresponse()
            assert head.read() == b""
            connection.request("GET", path)
            got = connection.getresponse()
            body = got.read()
            assert (head.status, head.getheader("Content-Type")) == (
                got.status, got.getheader("Content-Type"))
            if path != "/version":  # its timestamp makes each answer a new length
                assert int(head.getheader("Content-Length")) == len(body)
        for path, content_type in (("/health", "application/json"),
                                   ("/status", "application/json"),
                                   ("/metrics", "text/plain; version=0.0.4; charset=utf-8"),
                                   ("/v1/stream?room=science&channel=general",
                                    "application/x-ndjson")):
            connection.request("HEAD", path)
            head = connection.getresponse()
            assert (head.status, head.getheader("Content-Type"), head.read()) == (
                200, content_type, b"")
        connection.request("POST", "/health")
        refused = connection.getresponse()
        assert refused.status == 405 and refused.getheader("Allow") == "GET, HEAD"
        assert orjson.loads(refused.read())["details"] == \
            "/health accepts GET and HEAD only, not POST"
    finally:
        connection.close()
    assert not [line for line in daemon.lines if "Traceback" in line or "ERROR" in line]


@pytest.mark.parametrize("listener, target, details", [
    ("http", "http://[x/health", "Invalid IPv6 URL"),
    ("http", "/v1/history?room=%FF", "'utf-8' codec can't decode byte 0xff in position 0: "
     "invalid start byte"),
    ("ws", "/?screen_name=%FF", "'utf-8' codec can't decode byte 0xff in position 0: "
     "invalid start byte"),
])
def test_a_request_target_arqond_cannot_read_is_a_400_not_a_500(daemon, listener, target,
                                                                 details):
    host, _, port = daemon.listeners[listener].rpartition(":")
    with socket.create_connection((host, int(port)), timeout=scaled(10)) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade, close\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: YXJxb25kLWNvcnB1cy0xNg==\r\n\r\n".encode())
        reply = b""
        while b"}" not in reply and (chunk := sock.recv(65536)):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply
    assert orjson.loads(body)["details"] == f"malformed request target: {details}"
    assert not [line for line in daemon.lines if "Traceback" in line]


async def test_a_request_trickled_byte_by_byte_is_closed_at_the_deadline_and_counted(
        tmp_path, monkeypatch):
    """A slowloris sends one byte at a time, each well within the read timeout: the whole
    request has the deadline, so it is closed. An idle keep-alive connection is closed
    too, but is no slow request and is not counted."""
    monkeypatch.setattr(http_adapter, "IDLE_TIMEOUT", 0.5)
    async with LiveDaemon(tmp_path) as live:
        reader, writer = await asyncio.open_connection(*live.address("http"))
        idle_reader, idle_writer = await asyncio.open_connection(*live.address("http"))
        closed = False
        for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 100:  # 6.5 s of trickle
            writer.write(bytes((byte,)))
            try:
                closed = await asyncio.wait_for(reader.read(1), 0.05) == b""
            except asyncio.TimeoutError:
                continue
            break
        assert closed, "a trickle kept the request open past its deadline"
        assert await asyncio.wait_for(idle_reader.read(1), scaled(5)) == b""
        writer.close()
        idle_writer.close()
        assert (await live.metrics())["arqonbus_http_timeouts_total"] == 1


# -- CASIL: where a secret was, never the secret ---------------------------------------------

SECRETS = ("sk_live_0123456789abcdef", "Bearer abcdefgh12345xyz", "hunter2-password-value")


async def test_casil_logs_the_detector_and_location_never_the_secret(make_daemon, connect_peer):
    daemon = make_daemon({"casil": {"enabled": True, "mode": "enforce",
                                    "block_on_probable_secret": True, "redaction_paths": []}})
    watcher = await connect_peer(daemon.telemetry_url)
    sender = await connect_peer(daemon.ws_url)
    await sender.send({"id": "secret-1", "type": "message", "room": "science",
                       "channel": "general", "payload": {
                           "note": f"use {SECRETS[1]} please", "key": SECRETS[0],
                           "password": SECRETS[2], "list": ["fine", {"api_key": 1}]}})
    refusal = await sender.recv_type("error")
    assert (refusal["error_code"], refusal["request_id"]) == ("CASIL_POLICY_BLOCKED_SECRET",
                                                              "secret-1")
    while (event := await watcher.recv())["event_type"] != "casil_decision":
        pass
    findings = ("bearer_token at $.note, stripe_key at $.key, password at $.<key 3>, "
                "api_key at $.list[1].<key 1>")
    assert event["payload"]["findings"] == findings
    assert event["payload"]["payload"] is None
    line = daemon.wait_for_line("CASIL_POLICY_BLOCKED_SECRET")
    assert findings in line
    everything = "\n".join(daemon.lines) + orjson.dumps(event).decode()
    assert not [secret for secret in SECRETS if secret in everything]


# -- telemetry: arqond's own event names are arqond's ----------------------------------------

EMITTED = re.compile(r"""(?:emit|on_event)\(\s*"([a-z_]+)"|events\.append\(\(\s*"([a-z_]+)"|"""
                     r""""event_type":\s*"([a-z_]+)"|"eventType":\s*"([a-z_]+)\"""")


def test_every_event_name_arqond_emits_is_reserved():
    """The reserved set is written out in core/telemetry.py; this keeps it in step with the
    names the code emits (Bus events, CASIL's, the telemetry port's own frames)."""
    emitted = set()
    for path in (ROOT / "arqond").rglob("*.py"):
        for match in EMITTED.finditer(path.read_text()):
            emitted.add(next(name for name in match.groups() if name))
    assert emitted - {"x"} <= RESERVED_EVENT_TYPES, emitted - RESERVED_EVENT_TYPES
    assert {"client_connected", "channel_created", "casil_decision", "internal_error",
            "agent_activity", "telemetry_connected"} <= emitted


async def test_telemetry_clients_cannot_send_arqonds_own_event_names(daemon, connect_peer):
    sender = await connect_peer(daemon.telemetry_url)
    other = await connect_peer(daemon.telemetry_url)
    for name in sorted(RESERVED_EVENT_TYPES) + ["Client_Connected", " channel_created "]:
        await sender.send({"eventType": name, "payload": {"forged": True}})
        error = await sender.recv()
        text = (f"eventType {name!r} is reserved for arqond's own events (arqond(8) lists "
                "them); choose another name")
        assert (error["type"], error["error_code"], error["error"]) == (
            "error", "VALIDATION_ERROR", text)
    await sender.send({"eventType": "client_connected_too", "payload": {"n": 1}})
    got = await other.recv()
    assert (got["event_type"], got["payload"]) == ("client_connected_too", {"n": 1})
    values = metrics_of(daemon)
    assert values["arqonbus_telemetry_rejected_total"] == len(RESERVED_EVENT_TYPES) + 2
    assert values["arqonbus_telemetry_events_total"] == 1


async def test_a_telemetry_event_nested_past_the_bound_is_refused_not_a_1011_close(
        daemon, connect_peer):
    """The JSON rule of every surface: decoded, orjson took 300 levels, and encoding the
    broadcast then failed and closed the connection (1011)."""
    sender = await connect_peer(daemon.telemetry_url)
    deep = '{"eventType":"x","payload":' + '{"a":' * 300 + "1" + "}" * 300 + "}"
    await sender.send(deep)
    error = await sender.recv()
    assert (error["error_code"], error["error"]) == (
        "VALIDATION_ERROR", "JSON nests deeper than 64 levels (server.max_json_depth)")
    wide = '{"eventType":"x","payload":{"s":"' + "é" * 40000 + '"}}'  # 80 kB in 40 k characters
    await sender.send(wide)
    error = await sender.recv()
    assert error["error"] == f"frame is {len(wide.encode())} bytes; telemetry events are " \
        "limited to 65536 bytes"
    await sender.send({"type": "ping"})
    assert (await sender.recv())["type"] == "pong"


# -- arqond --daemon tells how its start went -------------------------------------------------

def test_daemon_mode_exits_non_zero_with_the_reason_when_it_cannot_bind(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    settings = isolated_sections(tmp_path)
    settings["server"]["port"] = port
    config = write_config(tmp_path / "arqond.toml", settings)
    pidfile = tmp_path / "arqond.pid"
    try:
        started = run_arqond("--config", str(config), "--daemon", "--pidfile", str(pidfile))
    finally:
        taken.close()
        if pidfile.exists():  # a daemon that started after all: never left running
            os.kill(read_pid(pidfile), signal.SIGKILL)
    assert started.returncode == 1
    assert re.fullmatch(rf"arqond: cannot listen on 127\.0\.0\.1:{port}: .*\n", started.stderr)
    assert not pidfile.exists()  # the daemon that failed is gone and took its pidfile along


def test_daemon_mode_exits_zero_only_once_every_listener_serves(tmp_path):
    settings = isolated_sections(tmp_path)
    config = tmp_path / "arqond.toml"
    pidfile = tmp_path / "arqond.pid"

    def start(ports: list[int]) -> tuple[int, int]:
        settings["server"].update(port=ports[0], telemetry_port=ports[1], http_port=ports[2])
        write_config(config, settings)
        started = run_arqond("--config", str(config), "--daemon", "--pidfile", str(pidfile))
        if started.returncode == 1 and "Address already in use" in started.stderr:
            raise PortTaken(ports)
        assert (started.returncode, started.stderr) == (0, "")
        return ports[2], read_pid(pidfile)

    http_port, pid = on_free_ports(3, start)
    try:
        # Nothing to wait for: the command returned, so arqond serves.
        connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=scaled(10))
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid))
