"""Webhook delivery: HTTP POSTs of routed messages to the endpoints of op.webhook.* rules.

The Bus observer (on_message) only serializes the body and enqueues it; a few worker tasks do the POSTs,
so a slow or dead endpoint never holds up a fan-out. The queue is bounded: when it is full the
delivery is dropped and counted (``dropped_total``). Plain HTTP/1.1 over asyncio streams; https
URLs use the system's default TLS context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any
from urllib.parse import urlsplit

import orjson

from arqond import __version__
from arqond.config import Config
from arqond.core.bus import Bus
from arqond.core.clients import Client
from arqond.core.envelope import serialize
from arqond.core.webhooks import Rule, Webhooks
from arqond.log import log_event

log = logging.getLogger("arqond.webhooks")
QUEUE_SIZE = 1024
WORKERS = 4
STATUS_LINE_LIMIT = 8192


class WebhookDelivery:
    name = "webhooks"

    def __init__(self, webhooks: Webhooks) -> None:
        self.webhooks = webhooks
        self.queue: asyncio.Queue[tuple[Rule, bytes]] = asyncio.Queue(QUEUE_SIZE)
        self.workers: list[asyncio.Task[None]] = []
        self._tls: ssl.SSLContext | None = None
        self.delivered_total = 0
        self.failed_total = 0
        self.dropped_total = 0

    async def start(self) -> None:
        self.workers = [asyncio.create_task(self._work()) for _ in range(WORKERS)]

    async def stop(self) -> None:
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        if not self.queue.empty():
            log.warning("stopping with %d webhook deliveries not sent", self.queue.qsize())

    def reload(self, config: Config) -> None:
        pass  # nothing configurable yet

    def on_message(self, env: dict[str, Any], client: Client | None) -> None:
        if not self.webhooks.rules:
            return
        rules = list(self.webhooks.matching(env.get("room"), env.get("channel")))
        if not rules:
            return
        sender = client.id if client is not None else env.get("sender")
        body = b'{"rule_version":"v1","sender_client_id":' + orjson.dumps(sender) + \
            b',"envelope":' + serialize(env) + b"}"
        for rule in rules:
            try:
                self.queue.put_nowait((rule, body))
            except asyncio.QueueFull:
                self.dropped_total += 1
                # Logged at the 1st, 2nd, 4th, 8th... drop: loud, but never a flood.
                if self.dropped_total & (self.dropped_total - 1) == 0:
                    log_event(log, logging.WARNING, "webhook_dropped",
                              f"webhook queue full ({QUEUE_SIZE}): delivery dropped, "
                              f"{self.dropped_total} so far", rule_id=rule.rule_id,
                              room=env.get("room"), channel=env.get("channel"))

    async def _work(self) -> None:
        while True:
            rule, body = await self.queue.get()
            try:
                status = await self._post(rule, body)
            except (OSError, TimeoutError, ValueError) as exc:
                status, problem = None, f"{type(exc).__name__}: {exc}"
            else:
                problem = None if 200 <= status < 300 else f"HTTP status {status}"
            if problem is None:
                self.delivered_total += 1
            else:
                self.failed_total += 1
                log_event(log, logging.WARNING, "webhook_failed",
                          f"webhook delivery to {rule.url} failed: {problem}",
                          rule_id=rule.rule_id, client_id=rule.owner)

    async def _post(self, rule: Rule, body: bytes) -> int:
        """One POST; returns the response status. Connection: close, one request each."""
        parts = urlsplit(rule.url)
        secure = parts.scheme == "https"
        if secure and self._tls is None:
            self._tls = ssl.create_default_context()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}",
                "Content-Type: application/json", f"Content-Length: {len(body)}",
                "Connection: close", f"User-Agent: arqond/{__version__}"]
        head += [f"{name}: {value}" for name, value in rule.headers.items()]
        async with asyncio.timeout(rule.timeout_seconds):
            reader, writer = await asyncio.open_connection(
                parts.hostname, parts.port or (443 if secure else 80),
                ssl=self._tls if secure else None, limit=STATUS_LINE_LIMIT)
            try:
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        fields = status_line.split()
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
            raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
        return int(fields[1])
