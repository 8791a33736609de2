"""One connection to NATS for the whole node, kept up for as long as arqond runs.

nats-py does the connecting and reconnecting on the event loop (no thread): tried forever,
one server of ``cluster.nats_url`` after the other, a second apart. The link says what state
it is in (``connecting`` before it ever got through, ``up``, ``lost`` while it tries again,
``closed`` at stop), logs every change once, and tells its owner each time it is up (the
first time and after every reconnect) or lost.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any, Awaitable, Callable

import nats
from nats.aio.client import Client as NATS

from arqond.log import NOTICE, Throttle, log_event

log = logging.getLogger("arqond.cluster")

RECONNECT_WAIT = 1.0      # seconds between two tries of the same server
CONNECT_TIMEOUT = 2.0     # seconds one try may take
PING_INTERVAL = 5         # seconds between pings: a dead server is noticed within ~10 s
MAX_OUTSTANDING_PINGS = 2
# What nats-py may buffer for us while the connection is down; arqond keeps its own bounded
# buffer (cluster.outage_buffer) and does not publish while the link is not up.
PENDING_SIZE = 8 << 20


# What a NATS or JetStream operation may fail with while NATS comes and goes: logged, and
# tried again (the next beat, the next connection).
TRANSIENT = (nats.errors.Error, asyncio.TimeoutError, OSError)


def reason(exc: BaseException) -> str:
    """What went wrong, for the log and the status (a timeout has no text of its own)."""
    return str(exc) or type(exc).__name__


class Link:
    def __init__(self, settings: Any, node: str, on_up: Callable[[NATS], Awaitable[None]],
                 on_lost: Callable[[], None]) -> None:
        self.settings = settings
        self.node = node
        self.on_up = on_up
        self.on_lost = on_lost
        self.nc = NATS()
        self.state = "connecting"
        self.since = time.time()
        self.task: asyncio.Task[None] | None = None
        self.errors = Throttle()
        # /metrics
        self.connects_total = 0
        self.losses_total = 0
        self.errors_total = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._connect())
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("cluster: joining failed inside arqond", exc_info=task.exception())

    @property
    def up(self) -> bool:
        return self.state == "up"

    @property
    def server(self) -> str | None:
        url = self.nc.connected_url
        return f"{url.scheme}://{url.hostname}:{url.port}" if url is not None else None

    def options(self) -> dict[str, Any]:
        settings = self.settings
        options: dict[str, Any] = {
            "servers": list(settings.nats_url), "name": f"arqond {self.node}",
            "allow_reconnect": True, "max_reconnect_attempts": -1,
            "reconnect_time_wait": RECONNECT_WAIT, "connect_timeout": CONNECT_TIMEOUT,
            "ping_interval": PING_INTERVAL, "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
            # What this node publishes to every node (a room's message) it has delivered.
            "no_echo": True,
            "pending_size": PENDING_SIZE, "error_cb": self._error,
            "disconnected_cb": self._disconnected, "reconnected_cb": self._reconnected,
            "closed_cb": self._closed}
        if settings.user:
            options.update(user=settings.user, password=settings.password)
        if settings.token:
            options["token"] = settings.token
        if settings.creds_file:
            options["user_credentials"] = settings.creds_file
        if settings.tls_ca or settings.tls_cert or any(url.startswith("tls://")
                                                       for url in settings.nats_url):
            context = ssl.create_default_context(cafile=settings.tls_ca or None)
            if settings.tls_cert:
                context.load_cert_chain(settings.tls_cert, settings.tls_key)
            options["tls"] = context
        return options

    async def _connect(self) -> None:
        """Until it gets through (nats-py tries every server, forever), then up."""
        log.info("cluster: connecting to NATS at %s as node %s",
                 ", ".join(self.settings.nats_url), self.node)
        await self.nc.connect(**self.options())
        await self._now_up()

    async def _now_up(self) -> None:
        self._set("up")
        self.connects_total += 1
        log_event(log, NOTICE, "cluster_up", f"cluster: connected to NATS at {self.server}",
                  server=self.server)
        await self.on_up(self.nc)

    async def _reconnected(self) -> None:
        await self._now_up()

    async def _disconnected(self) -> None:
        if self.state != "up":
            return      # a failed try while connecting or reconnecting: the error said why
        self._set("lost")
        self.losses_total += 1
        log_event(log, logging.WARNING, "cluster_lost", "cluster: lost the connection to NATS; "
                  "local delivery goes on, trying again every "
                  f"{RECONNECT_WAIT:g} s", server=self.server)
        self.on_lost()

    async def _closed(self) -> None:
        self._set("closed")

    async def _error(self, exc: Exception) -> None:
        self.errors_total += 1
        loud, count = self.errors(type(exc).__name__)
        if loud:
            log_event(log, logging.WARNING, "cluster_error", f"cluster: NATS: {reason(exc)} "
                      f"({count} error(s) of this kind so far)")

    def _set(self, state: str) -> None:
        self.state = state
        self.since = time.time()

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._set("closed")
        if self.nc.is_connected or self.nc.is_reconnecting:
            try:
                await self.nc.close()
            except (nats.errors.Error, OSError, asyncio.TimeoutError):
                pass

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since, "server": self.server,
                "servers": list(self.settings.nats_url)}
