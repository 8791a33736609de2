"""ArqonBus's HTTP monitoring bodies without sockets (arqond/transports/monitoring.py): which
/metrics form a client gets, the request statistics, the JSON metrics read from the samples
the text renders, and what /system/config never shows."""

from __future__ import annotations

import orjson
import pytest

from arqond import config as configuration
from arqond.core.metrics import counter, gauge
from arqond.transports import monitoring

PROMETHEUS_SCRAPER = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                      "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize("accept, json", [
    (None, False),                               # curl without -H, Python's http.client
    ("", False),
    ("*/*", False),                              # requests, aiohttp, curl: text stays
    (PROMETHEUS_SCRAPER, False),
    (BROWSER, False),
    ("text/plain", False),
    ("application/json", True),
    ("Application/JSON", True),
    ("application/json, text/plain;q=0.5", True),
    ("text/plain;q=0.4, application/json;q=0.9", True),
    ("application/*", True),
    ("application/json;q=0.5, text/plain;q=0.5", False),   # a tie keeps the default
    ("application/json;q=0", False),
    ("application/json;q=oops", False),
    ("image/png", False),
])
def test_metrics_answers_json_only_to_a_client_that_ranks_it_above_text(accept, json):
    assert monitoring.prefers_json(accept) is json


def test_request_statistics_have_arqonbus_s_shape():
    stats = monitoring.RequestStats()
    assert stats.report(1.5) == {"total_requests": 0, "requests_by_endpoint": {},
                                 "average_response_time_ms": 0.0, "error_count": 0,
                                 "uptime_seconds": 1.5}
    stats.record("/health", 2.0, False)
    stats.record("/health", 4.0, False)
    stats.record("/v1/publish", 3.0, True)
    report = stats.report(9.0)
    assert report == {"total_requests": 3, "requests_by_endpoint": {
        "/health": {"count": 2, "total_time_ms": 6.0, "errors": 0},
        "/v1/publish": {"count": 1, "total_time_ms": 3.0, "errors": 1}},
        "average_response_time_ms": 3.0, "error_count": 1, "uptime_seconds": 9.0}
    report["requests_by_endpoint"]["/health"]["count"] = 99   # a copy: the stats stay
    assert stats.by_endpoint["/health"]["count"] == 2


def test_json_metrics_are_the_text_s_samples_in_arqonbus_s_keys():
    samples = [counter("arqonbus_messages_total", "m", 5),
               counter("arqonbus_http_responses_total", "r", 3, code="200"),
               counter("arqonbus_http_responses_total", "r", 1, code="404"),
               gauge("arqonbus_uptime_seconds", "u", 12.5)]
    body = monitoring.metrics_json(samples, started=0.0, active_connections=2, messages=5,
                                   commands=3, errors=2, http_server={"total_requests": 4})
    assert list(body) == ["system", "commands", "performance", "raw_metrics", "timestamp",
                          "http_server"]
    system = body["system"]
    assert system["start_time"] == "1970-01-01T00:00:00+00:00"
    assert (system["uptime_seconds"], system["active_connections"], system["total_messages"],
            system["total_commands"], system["error_rate"]) == (12.5, 2, 5, 3, 0.25)
    # Summed over labels, named without the prefix, as ArqonBus's collector keeps them.
    assert system["counters"] == {"messages_total": 5, "http_responses_total": 4}
    assert system["gauges"] == {"uptime_seconds": 12.5}
    assert [(entry["value"], entry["labels"]) for entry in
            body["raw_metrics"]["http_responses_total"]["counter"]] == \
        [(3, {"code": "200"}), (1, {"code": "404"})]
    assert body["commands"] == {}
    assert body["performance"] == {name: {"count": 0} for name in monitoring.UNTIMED}
    assert body["http_server"] == {"total_requests": 4}
    orjson.dumps(body)  # all of it JSON


def test_system_config_never_shows_a_secret_and_says_which_it_left_out():
    config = configuration.load("/dev/null", environ={
        "ARQONBUS_AUTH_ENABLED": "true", "ARQONBUS_AUTH_JWT_SECRET": "jwt-s3cret",
        "ARQONBUS_HTTP_ADMIN_API_KEY": "k3y-s3cret"})
    body = monitoring.system_config(config, {"http": "127.0.0.1:8080",
                                             "telemetry": "[::1]:9101"})
    assert body["redacted"] == ["auth.jwt_secret", "http.admin_api_key"]
    text = orjson.dumps(body)
    assert b"jwt-s3cret" not in text and b"k3y-s3cret" not in text
    assert not set(body["redacted"]) & set(body["arqond"])
    assert set(body["arqond"]) == set(configuration.OPTIONS) - set(body["redacted"])
    assert body["arqond"]["auth.enabled"] is True
    assert body["server"] == {"host": "127.0.0.1", "port": 8080, "enabled": True}
    assert body["telemetry"] == {"enabled": True, "host": "::1", "port": 9101}
    assert body["features"] == {"cors": [], "rate_limiting": False}


@pytest.mark.parametrize("address, parts", [
    ("127.0.0.1:9100", ("127.0.0.1", 9100)),
    ("[::1]:8080", ("::1", 8080)),
    ("/run/arqond/bus.sock", ("/run/arqond/bus.sock", None)),
    (None, (None, None)),
])
def test_listener_addresses_as_host_and_port(address, parts):
    assert monitoring.host_port(address) == parts
