"""ArqonBus's HTTP monitoring on arqond's HTTP port, against the real daemon (issue 19): /metrics
in both forms, /status's requests and endpoints, /system/*, /storage/stats, /telemetry/*, and
/admin/* with ArqonBus's X-API-Key (or an admin token), refused to everyone else. The bodies'
rules are tables in tests/unit/test_monitoring.py."""

from __future__ import annotations

import os
import shutil
import subprocess

import orjson
import pytest

from arqond.core.auth import issue_hs256
from tests.conftest import AS_NOBODY, http_call, metrics_of, scaled, write_config

SECRET = "compat-secret"
KEY = "compat-admin-key"
REFUSAL = {"error": "Unauthorized", "details": "Valid X-API-Key required", "status": 401}
PROMETHEUS_SCRAPER = ("application/openmetrics-text;version=1.0.0,"
                      "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_hs256({"sub": "ops", "role": role}, SECRET)}


# -- /metrics, both forms --------------------------------------------------------------------

async def test_metrics_is_text_by_default_and_arqonbus_s_json_to_a_client_that_asks(
        daemon, connect_peer):
    a = await connect_peer(daemon.ws_url)
    await connect_peer(daemon.ws_url)
    await a.send({"type": "message", "room": "lab", "channel": "bots", "payload": {"n": 1}})
    await a.recv_type("message_response")
    for headers in ({}, {"Accept": "*/*"}, {"Accept": PROMETHEUS_SCRAPER}):
        text = http_call(daemon, "GET", "/metrics", headers=headers)
        assert text.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert text.headers["vary"] == "Accept"
        assert b"\narqonbus_messages_total 1\n" in text.body
    reply = http_call(daemon, "GET", "/metrics", headers={"Accept": "application/json"})
    assert reply.headers["vary"] == "Accept"
    body = reply.json()
    assert list(body) == ["system", "commands", "performance", "raw_metrics", "timestamp",
                          "http_server"]
    system = body["system"]
    assert (system["active_connections"], system["total_messages"],
            system["total_commands"]) == (2, 1, 0)
    assert system["counters"]["messages_total"] == 1
    assert system["counters"]["http_requests_total"] == 3     # the three text requests
    assert body["http_server"]["requests_by_endpoint"]["/metrics"]["count"] == 3
    # ArqonBus's own path for the text answers text whatever the client accepts (ArqonBus's
    # answers 500 there).
    prometheus = http_call(daemon, "GET", "/metrics/prometheus",
                           headers={"Accept": "application/json"})
    assert prometheus.status == 200
    assert prometheus.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"\narqonbus_connections_active 2\n" in prometheus.body


# -- /status -----------------------------------------------------------------------------------

def test_status_counts_requests_by_endpoint_as_arqonbus(daemon):
    for _ in range(2):
        assert http_call(daemon, "GET", "/health").status == 200
    assert http_call(daemon, "GET", "/v1/history?room=nowhere").status == 404
    assert http_call(daemon, "POST", "/health").status == 405
    assert http_call(daemon, "GET", "/no/such/path").status == 404  # no route: not counted
    status = http_call(daemon, "GET", "/status").json()
    requests = status["requests"]
    assert set(requests) == {"total_requests", "requests_by_endpoint",
                             "average_response_time_ms", "error_count", "uptime_seconds"}
    assert requests["total_requests"] == 4 and requests["error_count"] == 2
    by_endpoint = requests["requests_by_endpoint"]
    assert {path: (entry["count"], entry["errors"]) for path, entry in by_endpoint.items()} == \
        {"/health": (3, 1), "/v1/history": (1, 1)}
    assert all(entry["total_time_ms"] >= 0 for entry in by_endpoint.values())
    assert status["endpoints"] == {"http": True, "websocket": True, "storage": True,
                                   "telemetry": True}
    assert status["storage"] == {"status": "healthy", "backend_type": "sqlite"}
    host, port = daemon.listeners["telemetry"].rsplit(":", 1)
    telemetry = status["telemetry"]
    assert (telemetry["status"], telemetry["enabled"], telemetry["host"], telemetry["port"],
            telemetry["active_connections"]) == ("healthy", True, host, int(port), 0)
    metrics = metrics_of(daemon)
    assert metrics['arqonbus_http_requests_total{endpoint="/health"}'] == 3
    assert metrics['arqonbus_http_errors_total{endpoint="/health"}'] == 1
    assert metrics['arqonbus_http_requests_total{endpoint="/status"}'] == 1


# -- /system, /storage, /telemetry -------------------------------------------------------------

def test_system_info_and_config_describe_this_daemon_without_its_secrets(make_daemon):
    daemon = make_daemon({"auth": {"enabled": True, "jwt_secret": SECRET},
                          "http": {"admin_api_key": KEY}})
    info = http_call(daemon, "GET", "/system/info").json()
    assert info["service"] == "arqonbus"
    assert info["endpoints"]["websocket"] == f"ws://{daemon.listeners['ws']}"
    assert info["endpoints"]["http"] == f"http://{daemon.listeners['http']}"
    assert info["endpoints"]["telemetry"] == f"ws://{daemon.listeners['telemetry']}"
    assert info["endpoints"]["control"] == daemon.listeners["control"]
    assert info["features"]["persistence"] is True and info["features"]["authentication"]
    reply = http_call(daemon, "GET", "/system/config")   # no token needed, as in ArqonBus
    config = reply.json()
    assert SECRET.encode() not in reply.body and KEY.encode() not in reply.body
    assert config["redacted"] == ["auth.jwt_secret", "http.admin_api_key"]
    assert "auth.jwt_secret" not in config["arqond"]
    assert config["arqond"]["auth.enabled"] is True
    assert config["arqond"]["moo.dir"] == str(daemon.moo_dir)
    host, port = daemon.listeners["http"].rsplit(":", 1)
    assert config["server"] == {"host": host, "port": int(port), "enabled": True}
    assert config["storage"] == {"type": "sqlite", "available": True}


async def test_storage_stats_count_what_the_store_keeps(make_daemon, connect_peer):
    daemon = make_daemon()
    peer = await connect_peer(daemon.ws_url)
    for n in range(3):
        await peer.send({"type": "message", "room": "lab", "channel": "log", "payload": {"n": n}})
        await peer.recv_type("message_response")   # acked once stored
    await peer.command("op.store.set", {"key": "k", "value": {"v": 1}})
    stats = http_call(daemon, "GET", "/storage/stats").json()
    assert (stats["status"], stats["backend_type"]) == ("healthy", "sqlite")
    assert stats["configuration"]["path"] == str(daemon.state_dir / "streams.sqlite3")
    assert stats["configuration"]["durability"] == "write"
    assert (stats["stats"]["stored_total"], stats["stats"]["pending"],
            stats["stats"]["lost"]) == (3, 0, None)
    assert (stats["op_store"]["keys"], stats["op_store"]["max_keys"]) == (1, 10000)
    memory = make_daemon({"streams": {"durability": "memory"}}, name="memory")
    stats = http_call(memory, "GET", "/storage/stats").json()
    assert (stats["backend_type"], stats["configuration"]["path"]) == ("memory", None)
    assert "stored_total" not in stats["stats"]    # no store, no store counters
    assert http_call(memory, "GET", "/system/config").json()["storage"]["type"] == "memory"


async def test_telemetry_views_count_watchers_and_broadcasts(daemon, connect_peer):
    sender = await connect_peer(daemon.telemetry_url)
    watcher = await connect_peer(daemon.telemetry_url)
    await sender.send({"eventType": "cpu_load", "payload": {"load": 1}})
    await watcher.recv_event("cpu_load")
    # The event made integriguard:telemetry-stream on the bus: arqond's channel_created.
    await watcher.recv_event("channel_created")
    events = http_call(daemon, "GET", "/telemetry/events").json()
    assert set(events) == {"events_broadcast_total", "events_buffered", "active_connections",
                           "average_broadcast_time_ms", "total_clients_connected",
                           "failed_broadcasts", "buffer_size", "server_running",
                           "uptime_seconds"}
    assert (events["events_broadcast_total"], events["active_connections"],
            events["total_clients_connected"], events["failed_broadcasts"],
            events["events_buffered"], events["server_running"]) == (2, 2, 2, 0, 0, True)
    stats = http_call(daemon, "GET", "/telemetry/stats").json()
    host, port = daemon.listeners["telemetry"].rsplit(":", 1)
    assert (stats["status"], stats["host"], stats["port"], stats["active_connections"],
            stats["events_broadcast_total"]) == ("healthy", host, int(port), 2, 2)


# -- /admin/*: ArqonBus's X-API-Key, or an admin token -------------------------------------------

@pytest.fixture(scope="module")
def admin_daemon(shared_daemon):
    return shared_daemon({"auth": {"enabled": True, "jwt_secret": SECRET},
                          "http": {"admin_api_key": KEY}})


@pytest.mark.parametrize("path", ["/admin/shutdown", "/admin/restart"])
@pytest.mark.parametrize("headers", [
    {},
    {"X-API-Key": "wrong"},
    {"X-API-Key": KEY.upper()},
    {"X-API-Key": ""},
    {"x-api-key": KEY[:-1]},
    bearer("user"),                                # a token, but not an admin's
    {"Authorization": "Bearer not.a.token"},
], ids=["none", "wrong", "case", "empty", "prefix", "user-token", "bad-token"])
def test_admin_endpoints_refuse_without_the_key_as_arqonbus(admin_daemon, path, headers):
    before = metrics_of(admin_daemon)["arqonbus_http_admin_refused_total"]
    reply = http_call(admin_daemon, "POST", path, headers=headers)
    assert (reply.status, reply.json()) == (401, REFUSAL)
    assert metrics_of(admin_daemon)["arqonbus_http_admin_refused_total"] == before + 1
    assert http_call(admin_daemon, "GET", "/health").json()["status"] == "healthy"


def test_admin_endpoints_are_post_only(admin_daemon):
    reply = http_call(admin_daemon, "GET", "/admin/shutdown", headers={"X-API-Key": KEY})
    assert (reply.status, reply.headers["allow"]) == (405, "POST")


def curl_as_nobody(daemon, path: str, *headers: str) -> tuple[int, bytes]:
    if shutil.which("setpriv") is None or os.getuid() != 0:
        pytest.skip("needs root and setpriv to run curl as another uid")
    command = [*AS_NOBODY, "curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST",
               *(arg for header in headers for arg in ("-H", header)),
               f"{daemon.http_url}{path}"]
    done = subprocess.run(command, capture_output=True, timeout=scaled(30), check=True)
    body, _, code = done.stdout.rpartition(b"\n")
    return int(code), body


def test_a_local_user_is_no_admin_over_http(make_daemon):
    # nobody, identified by the kernel on loopback (auth.loopback_identity): a local user,
    # never an admin over TCP; with no key configured not even root opens /admin/*.
    daemon = make_daemon()
    code, body = curl_as_nobody(daemon, "/admin/shutdown")
    assert (code, orjson.loads(body)) == (401, REFUSAL)
    code, body = curl_as_nobody(daemon, "/admin/restart", "X-API-Key: anything")
    assert (code, orjson.loads(body)) == (401, REFUSAL)
    reply = http_call(daemon, "POST", "/admin/shutdown")
    assert (reply.status, reply.json()) == (401, REFUSAL)
    line = daemon.wait_for_line("/admin/shutdown from")
    assert "no X-API-Key and no admin token" in line and "UID=65534" in line
    line = daemon.wait_for_line("/admin/restart from")
    assert "http.admin_api_key is not set" in line
    assert http_call(daemon, "GET", "/health").json()["status"] == "healthy"
    assert daemon.proc.poll() is None


def test_restart_with_the_key_reloads_the_configuration_and_a_new_key(make_daemon):
    daemon = make_daemon({"http": {"admin_api_key": KEY}})
    # The file again, from what /system/config shows (the secrets are not shown), changed.
    config = http_call(daemon, "GET", "/system/config").json()["arqond"]
    sections: dict[str, dict] = {}
    for key, value in config.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = value
    sections["http"] = {"admin_api_key": "the-next-key"}
    sections["server"]["history_size"] = 77
    write_config(daemon.config_path, sections)
    mark = len(daemon.lines)
    reply = http_call(daemon, "POST", "/admin/restart", headers={"X-API-Key": KEY})
    assert (reply.status, reply.json()) == (200, {"status": "restart_initiated",
                                                  "message": "Server restart initiated"})
    audit = daemon.wait_for_line("restart requested over HTTP", start=mark)
    assert "by the admin API key" in audit and "UID=0" in audit
    daemon.wait_for_line("configuration reloaded", start=mark)
    assert http_call(daemon, "GET", "/system/config").json()["arqond"][
        "server.history_size"] == 77
    old = http_call(daemon, "POST", "/admin/restart", headers={"X-API-Key": KEY})
    assert (old.status, old.json()) == (401, REFUSAL)
    assert http_call(daemon, "POST", "/admin/restart",
                     headers={"X-API-Key": "the-next-key"}).status == 200


def test_shutdown_with_an_admin_token_stops_arqond_cleanly(make_daemon):
    daemon = make_daemon({"auth": {"enabled": True, "jwt_secret": SECRET}})
    reply = http_call(daemon, "POST", "/admin/shutdown", headers=bearer("admin"))
    assert (reply.status, reply.json()) == (200, {"status": "shutdown_initiated",
                                                  "message": "Server shutdown initiated"})
    audit = daemon.wait_for_line("shutdown requested over HTTP")
    assert "by an admin token" in audit and "SUB=ops" in audit
    assert daemon.proc.wait(scaled(10)) == 0
    daemon.wait_for_line("arqond stopping")
