"""ArqonBus's HTTP monitoring answers, built from what arqond has (no I/O here).

ArqonBus's monitor server (src/arqonbus/transport/http_server.py upstream) serves JSON at
/metrics, Prometheus text at /metrics/prometheus, request counts in /status, and /system,
/storage and /telemetry views; its clients read those keys. arqond keeps Prometheus text as
/metrics' default (what scrapers ask for) and answers JSON to a client that prefers it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from arqond import SERVICE_NAME, __version__
from arqond.config import SCHEMA, Config
from arqond.core.metrics import Sample

JSON = "application/json"
PROMETHEUS_TEXT = "text/plain"
# The timings ArqonBus's /metrics JSON lists; it never records them (its bus does not call the
# recorders), so it shows {"count": 0} for each, and so does arqond, which does not time them.
UNTIMED = ("message_routing_latency", "command_execution_latency",
           "websocket_connection_time", "storage_operation_time")
METRIC_PREFIX = "arqonbus_"
# Configuration keys /system/config never shows.
SECRET_KEYS = tuple(option.key for option in SCHEMA if option.secret)


class RequestStats:
    """ArqonBus's request statistics: per endpoint (a route's path) count, time and errors.

    Bounded by the routes: a path that is no route is not counted here (it is a 404 in
    arqonbus_http_responses_total), as ArqonBus counts only its routes."""

    def __init__(self) -> None:
        self.by_endpoint: dict[str, dict[str, float]] = {}
        self.total = 0
        self.errors = 0
        self.total_time_ms = 0.0

    def record(self, endpoint: str, elapsed_ms: float, error: bool) -> None:
        entry = self.by_endpoint.setdefault(endpoint,
                                            {"count": 0, "total_time_ms": 0.0, "errors": 0})
        entry["count"] += 1
        entry["total_time_ms"] += elapsed_ms
        entry["errors"] += error
        self.total += 1
        self.errors += error
        self.total_time_ms += elapsed_ms

    def report(self, uptime_seconds: float) -> dict[str, Any]:
        """ArqonBus's ``requests`` object of /status (and ``http_server`` of /metrics)."""
        return {"total_requests": self.total,
                "requests_by_endpoint": {path: dict(entry)
                                         for path, entry in self.by_endpoint.items()},
                "average_response_time_ms": round(self.total_time_ms / self.total, 2)
                if self.total else 0.0,
                "error_count": self.errors, "uptime_seconds": uptime_seconds}


def _quality(accept: str, media_type: str) -> float:
    """The q the Accept header gives ``media_type``: its most specific match wins."""
    kind = media_type.split("/", 1)[0]
    best, specificity = 0.0, -1
    for item in accept.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        name = name.lower()
        rank = 2 if name == media_type else 1 if name == f"{kind}/*" else \
            0 if name == "*/*" else -1
        if rank <= specificity:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best, specificity = q, rank
    return best


def prefers_json(accept: str | None) -> bool:
    """Whether /metrics answers JSON: only for a client that ranks application/json above
    Prometheus text. No Accept, ``*/*``, a browser's or a Prometheus scraper's header: text."""
    if not accept:
        return False
    return _quality(accept, JSON) > _quality(accept, PROMETHEUS_TEXT)


def _short(name: str) -> str:
    """ArqonBus's names have no prefix: arqonbus_http_requests_total is http_requests_total."""
    return name[len(METRIC_PREFIX):] if name.startswith(METRIC_PREFIX) else name


def metrics_json(samples: Iterable[Sample], *, started: float, active_connections: int,
                 messages: int, commands: int, errors: int,
                 http_server: dict[str, Any]) -> dict[str, Any]:
    """ArqonBus's /metrics JSON from the samples /metrics renders as text.

    ``system.counters``/``gauges`` hold each metric summed over its labels, ``raw_metrics``
    each labelled value; ``commands`` is empty (arqond counts commands in all, not by name)."""
    counters: dict[str, float] = {}
    gauges: dict[str, float] = {}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    now = datetime.now(timezone.utc).isoformat()
    for sample in samples:
        name = _short(sample.name)
        totals = counters if sample.kind == "counter" else gauges
        totals[name] = totals.get(name, 0) + sample.value
        raw.setdefault(name, {}).setdefault(sample.kind, []).append(
            {"value": sample.value, "timestamp": now, "labels": dict(sample.labels)})
    handled = messages + commands
    return {
        "system": {
            "start_time": datetime.fromtimestamp(started, timezone.utc).isoformat(),
            "uptime_seconds": gauges.get("uptime_seconds", 0),
            "active_connections": active_connections, "total_messages": messages,
            "total_commands": commands,
            "error_rate": round(errors / handled, 6) if handled else 0.0,
            "counters": counters, "gauges": gauges},
        "commands": {},
        "performance": {name: {"count": 0} for name in UNTIMED},
        "raw_metrics": raw,
        "timestamp": now,
        "http_server": http_server,
    }


def host_port(address: str | None) -> tuple[str | None, int | None]:
    """"127.0.0.1:9100" or "[::1]:9100" as (host, port); a Unix path has no port."""
    if not address or address.startswith("/"):
        return address, None
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else None


def system_info(config: Config, listeners: dict[str, str]) -> dict[str, Any]:
    """ArqonBus's /system/info, with arqond's listeners and features."""
    durable = config.streams.durability != "memory"
    endpoints = {"websocket": f"ws://{listeners.get('ws')}",
                 "http": f"http://{listeners.get('http')}",
                 "telemetry": f"ws://{listeners.get('telemetry')}"}
    # Beyond ArqonBus's three: arqond's Unix sockets, when they listen.
    endpoints.update({name: listeners[name] for name in ("bus", "control") if name in listeners})
    return {
        "service": SERVICE_NAME, "version": __version__,
        "description": "arqond: an ArqonBus-compatible message bus joined with the tmuxMOO "
                       "agent conventions",
        "architecture": {
            "transport": "WebSocket", "protocol": "JSON envelopes (ArqonBus protocol 1.0)",
            "storage": f"SQLite streams (streams.durability = {config.streams.durability})"
            if durable else "memory (streams.durability = memory)",
            "telemetry": "WebSocket", "monitoring": "HTTP Endpoints"},
        "features": {
            "real_time_messaging": True, "room_routing": True, "channel_routing": True,
            "message_history": True, "command_system": True, "telemetry": True,
            "persistence": durable,
            # arqond's own, beyond ArqonBus's list:
            "authentication": config.auth.enabled, "content_inspection": config.casil.enabled,
            "tier_omega": config.omega.enabled, "moo_zgents": True,
            "narrative_bridge": config.narrative.enabled},
        "endpoints": endpoints,
    }


def system_config(config: Config, listeners: dict[str, str]) -> dict[str, Any]:
    """ArqonBus's /system/config (its four sections), and ``arqond``: every configuration key
    and its effective value, but the secrets (``redacted`` names them, set or not)."""
    http_host, http_port = host_port(listeners.get("http"))
    telemetry_host, telemetry_port = host_port(listeners.get("telemetry"))
    return {
        "server": {"host": http_host, "port": http_port, "enabled": True},
        "storage": {"type": "sqlite" if config.streams.durability != "memory" else "memory",
                    "available": True},
        "telemetry": {"enabled": True, "host": telemetry_host, "port": telemetry_port},
        # arqond sends no CORS headers and limits by quotas, not by request rate.
        "features": {"cors": [], "rate_limiting": False},
        "arqond": {key: list(value) if isinstance(value, tuple) else value
                   for key, value in config.values.items() if key not in SECRET_KEYS},
        "redacted": list(SECRET_KEYS),
    }
