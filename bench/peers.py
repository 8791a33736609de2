"""Real brokers in the same run: nats-server and mosquitto for B1/B2 (and NATS for B5)."""
from __future__ import annotations
from typing import Any

def fanout_peers(settings: dict[str, Any], total: int) -> list[list[dict[str, Any]]]:
    return []

def latency_peers(settings: dict[str, Any], total: int) -> list[dict[str, Any]]:
    return []
