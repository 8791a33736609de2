"""Named cursors shared by the nodes of a cluster: a reader that acks on one node reads on
from there on any other (arqond/core/cursors.py says what a cursor is).

Every position acknowledged on a node goes, besides its copy of the streams, into the
key-value bucket ``<cluster>-cursors`` (key: principal, cursor, room and channel, each encoded
as one token); every node watches the bucket and takes what another node acknowledged. Seqs
and epochs are the cluster's, the same on every node, so a position means the same message
everywhere. The last acknowledgement wins. While NATS is unreachable, positions are kept on the
node and put into the bucket when it returns.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable

import orjson
from nats.aio.client import Client as NATS

from arqond.cluster.buckets import open_bucket, watch
from arqond.cluster.link import reason
from arqond.cluster.names import decode, encode
from arqond.core.cursors import Cursors, Key, Position
from arqond.core.envelope import SERVER_SENDER

if TYPE_CHECKING:
    from arqond.streams.sqlite import SqliteStore

log = logging.getLogger("arqond.cluster")


def key_of(key: Key) -> str:
    return ".".join(encode(part) for part in key)


def cursor_key(text: str) -> Key:
    principal, name, room, channel = (decode(part) for part in text.split("."))
    return principal, name, room, channel


class SharedCursors:
    def __init__(self, cursors: Cursors, mirror: "SqliteStore", cluster: str,
                 replicas: int) -> None:
        self.cursors = cursors
        self.mirror = mirror
        self.bucket = f"{cluster}-cursors"
        self.replicas = replicas
        self.kv: Any = None
        self.task: asyncio.Task[None] | None = None
        # Acknowledged here while NATS was away, to be put when it returns.
        self.waiting: dict[Key, Position] = {}

    async def join(self, nc: NATS) -> None:
        if self.kv is None:
            self.kv = await open_bucket(nc, self.bucket, self.replicas)
        self.task = asyncio.get_running_loop().create_task(watch(self.kv, self._take))
        waiting, self.waiting = self.waiting, {}
        for key, position in waiting.items():
            self.put(key, position, self._logged)

    def lost(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def put(self, key: Key, position: Position, then: Callable[[str | None], None]) -> None:
        """``position`` into the bucket: ``then`` hears None once it is there, or why not.
        While NATS is away it waits for ``join`` (``then`` hears None at once: the node's
        copy keeps it meanwhile)."""
        if self.kv is None or self.task is None:
            self.waiting[key] = position
            then(None)
            return
        task = asyncio.get_running_loop().create_task(
            self.kv.put(key_of(key), orjson.dumps(position._asdict())))

        def put(done: asyncio.Task[int]) -> None:
            if done.cancelled():
                then("the cluster's cursors bucket did not take it: arqond is stopping")
            elif (error := done.exception()) is not None:
                then(f"the cluster's cursors bucket did not take it: {reason(error)}")
            else:
                then(None)
        task.add_done_callback(put)

    @staticmethod
    def _logged(failure: str | None) -> None:
        """What no client waits for (shared later, kept from another node): logged."""
        if failure is not None:
            log.warning("cluster: a cursor was not shared or kept: %s", failure)

    def _take(self, entry: Any) -> None:
        if not entry.value or entry.operation is not None:
            return
        key = cursor_key(entry.key)
        position = Position(**orjson.loads(entry.value))
        if self.cursors.positions.get(key) == position:
            return
        self.cursors.positions[key] = position
        principal, name, room, channel = key
        found, _ = self.cursors.bus.router.ensure_channel(room, channel,
                                                          created_by=SERVER_SENDER)
        self.mirror.save_cursor(principal, name, found.stream, position.seq, self._logged)
