"""The telemetry WebSocket: validated ``eventType`` events in, every event out to every watcher.

Valid inbound events go to the other telemetry clients and onto the bus as ``telemetry``
envelopes in integriguard:telemetry-stream; arqond's own events (Bus listeners) go to all
telemetry clients; messages from agent clients (Bus observers) become coalesced
``agent_activity`` envelopes in integriguard:dashboard-events. Each telemetry client has the
same bounded outgoing buffer as a bus client and is cut off (close 4008, counted) when it fills.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from arqond.config import Config
from arqond.core import telemetry
from arqond.core.bus import Bus
from arqond.core.clients import CLOSE_SLOW_CONSUMER, Client
from arqond.core.envelope import client_id, now_iso
from arqond.core.errors import ErrorCode
from arqond.core.metrics import Sample, counter, gauge
from arqond.core.protocol import INTERNAL_ERROR_TEXT
from arqond.log import log_event
from arqond.transports.wsbase import WebSocketSink, WriteBatcher, admit, serve_websocket

log = logging.getLogger("arqond.telemetry")


class TelemetryAdapter:
    name = "telemetry"

    def __init__(self, bus: Bus, config: Config, sock: socket.socket) -> None:
        self.bus = bus
        self.config = config
        self.sock = sock
        self.server: Server | None = None
        self.watchers: dict[str, WebSocketSink] = {}
        self.coalescer = telemetry.ActivityCoalescer()
        self._ticker: asyncio.Task[None] | None = None
        self.connections_total = 0
        self.refused_total = 0
        self.batcher = WriteBatcher()  # one socket write per client per loop iteration
        self.events_total = 0          # valid inbound events
        self.rejected_total = 0        # invalid inbound frames, each answered with an error
        self.server_events_total = 0   # arqond's own events sent out
        self.slow_total = 0            # watchers cut off with a full buffer
        self.subscriptions_total = 0   # ArqonBus subscribe/unsubscribe frames (no filtering)
        self.broadcasts_total = 0      # events sent out to the watchers, theirs and arqond's
        self.broadcast_seconds = 0.0   # time spent sending them (writes are queued, not awaited)
        self.started = time.time()     # made just before it starts listening

    def reload(self, config: Config) -> None:
        self.config = config

    async def start(self) -> None:
        self.server = await serve_websocket(self._handle, self.sock, self.config,
                                            self._process_request)
        self._ticker = asyncio.create_task(self._tick_activity())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self.server is not None:
            self.server.close(close_connections=True)
            await self.server.wait_closed()

    def _process_request(self, connection: ServerConnection,
                         request: Request) -> Response | None:
        refusal, _, _ = admit(connection, request, self.config, len(self.watchers),
                              "telemetry", log)
        if refusal is not None:
            self.refused_total += 1
        return refusal

    async def _handle(self, connection: ServerConnection) -> None:
        sink = WebSocketSink(connection, self.config.server.client_buffer_bytes,
                             self.batcher)
        watcher = client_id()
        self.watchers[watcher] = sink
        self.connections_total += 1
        host, port = self.sock.getsockname()[:2]
        sink.send(telemetry.connected_frame(host, port))
        try:
            async for message in connection:
                try:
                    self._receive(watcher, sink, message)
                except Exception:  # noqa: BLE001 - never a 1011 close for one frame
                    self.bus.internal_error(self.name, f"a frame from watcher {watcher}")
                    self._send(watcher, sink, telemetry.error_frame(
                        [INTERNAL_ERROR_TEXT], ErrorCode.INTERNAL_ERROR))
        except ConnectionClosed:
            pass
        finally:
            self.watchers.pop(watcher, None)
            log.debug("telemetry watcher %s gone (%s)", watcher, connection.close_code)

    def _receive(self, watcher: str, sink: WebSocketSink, message: str | bytes) -> None:
        try:
            if isinstance(message, bytes):
                raise telemetry.TelemetryError(
                    ["binary frames are not supported: send JSON in text frames"])
            data = telemetry.parse_inbound(message, self.bus.settings.max_json_depth)
            if data.get("type") == "ping":
                self._send(watcher, sink, telemetry.pong_frame())
                return
            if telemetry.is_subscription(data):
                self.subscriptions_total += 1
                log.debug("telemetry watcher %s: %s %s (every event is still sent)", watcher,
                          data["type"], data.get("events", []))
                return
            event = telemetry.validate_event(data, watcher)
        except telemetry.TelemetryError as exc:
            self.rejected_total += 1
            log.debug("telemetry frame from %s refused: %s", watcher, exc)
            self._send(watcher, sink, telemetry.error_frame(exc.errors))
            return
        self.events_total += 1
        self._broadcast(telemetry.event_frame(event), exclude=watcher)
        self.bus.publish(telemetry.bus_envelope(event))

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        if self.watchers:
            self.server_events_total += 1
            self._broadcast(telemetry.event_frame(telemetry.server_event(event, fields)))

    def on_message(self, env: dict[str, Any], client: Client | None) -> None:
        report = self.coalescer.observe(env, client)
        if report is not None:
            self.bus.publish(telemetry.activity_envelope(report))

    async def _tick_activity(self) -> None:
        while True:
            await asyncio.sleep(self.config.server.activity_interval)
            for report in self.coalescer.tick():
                self.bus.publish(telemetry.activity_envelope(report))

    def _send(self, watcher: str, sink: WebSocketSink, frame: bytes) -> None:
        if not sink.send(frame):
            self._cut_off(watcher, sink)

    def _broadcast(self, frame: bytes, exclude: str | None = None) -> None:
        began = time.perf_counter()
        slow = [(watcher, sink) for watcher, sink in self.watchers.items()
                if watcher != exclude and not sink.send(frame)]
        self.broadcasts_total += 1
        self.broadcast_seconds += time.perf_counter() - began
        for watcher, sink in slow:
            self._cut_off(watcher, sink)

    def _cut_off(self, watcher: str, sink: WebSocketSink) -> None:
        if self.watchers.pop(watcher, None) is None:
            return
        self.slow_total += 1
        log_event(log, logging.WARNING, "client_slow",
                  "telemetry watcher cut off: outgoing buffer full", client_id=watcher,
                  transport="telemetry")
        sink.close(CLOSE_SLOW_CONSUMER, "slow consumer: outgoing buffer full")
        self.on_event("client_slow", {"client_id": watcher, "transport": "telemetry"})

    def health(self) -> dict[str, Any]:
        """ArqonBus's telemetry health (its /telemetry/stats, and /status's telemetry)."""
        host, port = self.sock.getsockname()[:2]
        return {"status": "healthy", "enabled": True, "host": host, "port": port,
                "active_connections": len(self.watchers),
                "events_broadcast_total": self.broadcasts_total, "timestamp": now_iso()}

    def performance(self) -> dict[str, Any]:
        """ArqonBus's telemetry performance figures (its /telemetry/events). arqond sends each
        event at once, so nothing is ever buffered; a failed send is a watcher cut off."""
        return {"events_broadcast_total": self.broadcasts_total, "events_buffered": 0,
                "active_connections": len(self.watchers),
                "average_broadcast_time_ms": round(
                    self.broadcast_seconds * 1000 / self.broadcasts_total, 2)
                if self.broadcasts_total else 0.0,
                "total_clients_connected": self.connections_total,
                "failed_broadcasts": self.slow_total, "buffer_size": 0,
                "server_running": self.server is not None,
                "uptime_seconds": round(time.time() - self.started, 3)}

    def status(self) -> dict[str, Any]:
        return {"telemetry": {**self.health(), "connections": len(self.watchers),
                              "events": self.events_total, "rejected": self.rejected_total,
                              "agents_tracked": len(self.coalescer.windows)}}

    def samples(self) -> list[Sample]:
        coalescer = self.coalescer
        return [
            gauge("arqonbus_telemetry_connections", "Telemetry WebSocket clients now.",
                  len(self.watchers)),
            counter("arqonbus_telemetry_connections_total", "Telemetry clients ever connected.",
                    self.connections_total),
            counter("arqonbus_telemetry_refused_total", "Telemetry handshakes refused.",
                    self.refused_total),
            counter("arqonbus_telemetry_events_total", "Valid telemetry events received.",
                    self.events_total),
            counter("arqonbus_telemetry_rejected_total",
                    "Invalid telemetry frames received (each answered with an error frame).",
                    self.rejected_total),
            counter("arqonbus_telemetry_subscriptions_total",
                    "subscribe and unsubscribe frames received; as in ArqonBus they filter "
                    "nothing and are not answered.", self.subscriptions_total),
            counter("arqonbus_telemetry_server_events_total",
                    "arqond's own events sent to telemetry clients.", self.server_events_total),
            counter("arqonbus_telemetry_slow_consumers_total",
                    "Telemetry clients cut off because their outgoing buffer was full.",
                    self.slow_total),
            counter("arqonbus_agent_activity_total",
                    "agent_activity events published in integriguard:dashboard-events.",
                    coalescer.events_total),
            counter("arqonbus_agent_activity_coalesced_total",
                    "Agent messages folded into a later agent_activity event.",
                    coalescer.coalesced_total),
        ]
