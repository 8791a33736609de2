"""Webhook delivery: HTTP POSTs of routed messages to the endpoints of op.webhook.* rules.

The Bus observer (on_message) only serializes the body and enqueues it; a few worker tasks do
the POSTs, so a slow or dead endpoint never holds up a fan-out. The queue is bounded
(webhooks.queue_size): when it is full the delivery is dropped and counted (``dropped_total``).
Before each POST the host is resolved and every address checked against
webhooks.allowed_destinations, and the connection goes to the address that was checked.
Every POST carries X-Arqond-Webhook-Hops; a message published through /v1/publish with that
header is not sent to webhooks again once it has made webhooks.max_hops hops, so a rule that
points at arqond itself cannot loop. Plain HTTP/1.1 over asyncio streams; https URLs use the
system's default TLS context.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from typing import Any
from urllib.parse import SplitResult, urlsplit

import orjson

from arqond import __version__
from arqond.config import Config
from arqond.core.clients import Client
from arqond.core.destinations import refusal
from arqond.core.envelope import serialize
from arqond.core.webhooks import HOPS, HOPS_HEADER, Rule, Webhooks
from arqond.log import Throttle, log_event

log = logging.getLogger("arqond.webhooks")
WORKERS = 4
STATUS_LINE_LIMIT = 8192


class DestinationRefused(Exception):
    """The rule's host resolves to an address webhooks.allowed_destinations does not allow."""


class WebhookDelivery:
    name = "webhooks"

    def __init__(self, webhooks: Webhooks, settings: Any) -> None:
        """``settings``: the [webhooks] section (queue_size, max_hops, ...)."""
        self.webhooks = webhooks
        self.settings = settings
        self.queue: asyncio.Queue[tuple[Rule, bytes, int]] = \
            asyncio.Queue(settings.queue_size)
        self.workers: list[asyncio.Task[None]] = []
        self._tls: ssl.SSLContext | None = None
        self.delivered_total = 0
        self.failed_total = 0
        self.dropped_total = 0
        self.refused_total = 0
        self.loops_total = 0
        self.dropped = Throttle()

    async def start(self) -> None:
        self.workers = [asyncio.create_task(self._work()) for _ in range(WORKERS)]

    async def stop(self) -> None:
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        if not self.queue.empty():
            log.warning("stopping with %d webhook deliveries not sent", self.queue.qsize())

    def reload(self, config: Config) -> None:
        self.settings = config.webhooks  # the queue keeps the size it was made with

    def on_message(self, env: dict[str, Any], client: Client | None) -> None:
        if not self.webhooks.rules:
            return
        rules = list(self.webhooks.matching(env.get("room"), env.get("channel")))
        if not rules:
            return
        hops = env.get(HOPS, 0)
        if hops >= self.settings.max_hops:
            self.loops_total += 1
            return
        sender = client.id if client is not None else env.get("sender")
        body = b'{"rule_version":"v1","sender_client_id":' + orjson.dumps(sender) + \
            b',"envelope":' + serialize(env) + b"}"
        for rule in rules:
            try:
                self.queue.put_nowait((rule, body, hops + 1))
            except asyncio.QueueFull:
                self.dropped_total += 1
                due, count = self.dropped("queue")
                if due:  # loud, but never a flood
                    log_event(log, logging.WARNING, "webhook_dropped",
                              f"webhook queue full (webhooks.queue_size "
                              f"{self.queue.maxsize}): delivery dropped, {count} so far",
                              rule_id=rule.rule_id, room=env.get("room"),
                              channel=env.get("channel"))

    async def _work(self) -> None:
        while True:
            rule, body, hops = await self.queue.get()
            try:
                status = await self._post(rule, body, hops)
            except DestinationRefused as exc:
                self.refused_total += 1
                status, problem = None, str(exc)
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

    async def _address(self, parts: SplitResult, port: int) -> str:
        """An address of the rule's host that webhooks.allowed_destinations allows now."""
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port, type=socket.SOCK_STREAM)
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        problem = refusal(parts, addresses, self.settings.allowed_destinations)
        if problem is not None:
            raise DestinationRefused(problem)
        return str(addresses[0])

    async def _post(self, rule: Rule, body: bytes, hops: int) -> int:
        """One POST; returns the response status. Connection: close, one request each."""
        parts = urlsplit(rule.url)
        secure = parts.scheme == "https"
        if secure and self._tls is None:
            self._tls = ssl.create_default_context()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}",
                "Content-Type: application/json", f"Content-Length: {len(body)}",
                "Connection: close", f"User-Agent: arqond/{__version__}",
                f"{HOPS_HEADER}: {hops}"]
        head += [f"{name}: {value}" for name, value in rule.headers.items()]
        port = parts.port or (443 if secure else 80)
        async with asyncio.timeout(rule.timeout_seconds):
            address = await self._address(parts, port)
            reader, writer = await asyncio.open_connection(
                address, port, ssl=self._tls if secure else None,
                server_hostname=parts.hostname if secure else None, limit=STATUS_LINE_LIMIT)
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
