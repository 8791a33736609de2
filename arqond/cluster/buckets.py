"""What the cluster's key-value buckets have in common: made once, watched, synced on a beat."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import nats
from nats.aio.client import Client as NATS

from arqond.cluster.link import TRANSIENT, reason
from arqond.log import Throttle

log = logging.getLogger("arqond.cluster")


async def open_bucket(nc: NATS, name: str, replicas: int) -> Any:
    """The bucket ``name``, made (one value per key) when it does not exist yet."""
    js = nc.jetstream()
    try:
        return await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(bucket=name, history=1, replicas=replicas)


async def watch(kv: Any, take: Callable[[Any], None]) -> None:
    """Every entry of ``kv`` (what it holds, then each change) to ``take``, until cancelled."""
    watcher = await kv.watchall()
    try:
        async for entry in watcher:
            if entry is not None:
                take(entry)
    finally:
        try:
            await watcher.stop()
        except TRANSIENT:
            pass


async def beat(step: Callable[[], Awaitable[None]], interval: float, what: str,
               errors: Throttle, after: Callable[[], None]) -> None:
    """``step`` every ``interval`` seconds, then ``after``, until cancelled; a failure of
    ``step`` is logged (once a kind and pause) and the next beat tries again."""
    while True:
        try:
            await step()
        except TRANSIENT as exc:
            loud, count = errors(type(exc).__name__)
            if loud:
                log.warning("cluster: %s not synced: %s (%d time(s) so far); trying again",
                            what, reason(exc), count)
        after()
        await asyncio.sleep(interval)
