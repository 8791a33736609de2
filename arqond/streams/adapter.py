"""The streams' store as a part of arqond: opened first at start (the channels it kept exist
before anyone connects), closed last at stop (what is queued is stored)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arqond.config import Config
from arqond.core.bus import Bus
from arqond.core.cursors import Cursors, Position
from arqond.core.metrics import Sample, counters_of, gauge
from arqond.core.store import Store
from arqond.core.streams import Retention, Stream
from arqond.streams.sqlite import FILE_NAME, Limits, SqliteStore, StoreError
from arqond.unix import ListenerError

log = logging.getLogger("arqond.streams")

COUNTERS = {
    "commits_total": "Transactions that stored messages (group commits).",
    "stored_total": "Messages stored.",
    "trimmed_total": "Stored messages dropped by retention (count, bytes, age, total).",
    "write_errors_total": "Store writes that failed (disk full, I/O error), each logged.",
    "set_aside_total": "Unreadable stores set aside at start (every stream got a new epoch).",
}


def retention_of(config: Config) -> Retention:
    streams = config.streams
    return Retention(streams.max_messages, streams.max_bytes, streams.max_age)


class StreamsAdapter:
    """The node's own store; a cluster's adapter (arqond/cluster) keeps one as the node's
    copy of the cluster's stream, given to it by app.py, and drives it through ``open``
    and ``take_over`` in its own start."""

    name = "streams"

    def __init__(self, bus: Bus, config: Config, cursors: Cursors,
                 file_name: str = FILE_NAME) -> None:
        self.bus = bus
        self.config = config
        self.cursors = cursors
        self.store = SqliteStore(config.server.state_dir, config.streams.durability,
                                 Limits(config.streams.total_bytes), file_name=file_name)

    def open(self) -> list[Stream]:
        """The streams the store holds, opened; a store that cannot be opened stops the
        start."""
        try:
            return self.store.open()
        except StoreError as exc:
            raise ListenerError(str(exc)) from None

    def take_over(self, streams: list[Stream], listener: Any) -> int:
        """Channels and cursors again for what the store kept, before anyone connects, and
        its writer started (``listener`` hears what it stored: the Bus, or a store built on
        this one); how many streams it restored."""
        bus, store = self.bus, self.store
        left_out = bus.restore(streams)
        if left_out:
            log.warning("%d stored stream(s) not restored: server.max_channels (%d) reached",
                        left_out, bus.settings.max_channels)
        store.start(listener, asyncio.get_running_loop())
        names = {stream.stored_id: (stream.room, stream.channel) for stream in streams}
        self.cursors.restore({(principal, name, *names[stream_id]): Position(seq, epoch)
                              for (principal, name, stream_id), (seq, epoch)
                              in store.cursors().items() if stream_id in names})
        return len(streams) - left_out

    async def start(self) -> None:
        restored = self.take_over(self.open(), self.bus)
        self.bus.store = self.store
        log.info("streams: %d restored from %s (durability %s)", restored, self.store.path,
                 self.store.durability)

    async def stop(self) -> None:
        self.bus.store = None
        self.store.close_reader()
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)

    def reload(self, config: Config) -> None:
        self.config = config
        self.store.limits = Limits(config.streams.total_bytes)

    def samples(self) -> list[Sample]:
        bus = self.bus
        return [gauge("arqonbus_streams_pending", "Messages waiting to be stored.",
                      len(bus.pending)),
                gauge("arqonbus_streams_pending_bytes", "Bytes of messages waiting to be "
                      "stored (streams.max_pending_bytes).", bus.pending_bytes),
                *counters_of(self.store, "arqonbus_streams", COUNTERS)]


def storage_health(bus: Bus, backend: str) -> dict[str, Any]:
    """/status's ``storage``: the streams store's state ("unhealthy" once it went on in
    memory after a write error, streams.on_full = "memory") and kind (``backend``: sqlite,
    jetstream or memory)."""
    health: dict[str, Any] = {"status": "unhealthy" if bus.store_lost else "healthy",
                              "backend_type": backend}
    if bus.store_lost:
        health["error"] = bus.store_lost
    return health


def storage_report(bus: Bus, config: Config, store: SqliteStore | None, backend: str,
                   kv: Store) -> dict[str, Any]:
    """/storage/stats, in the shape of ArqonBus's stream backend (backend_type, configuration,
    stats), for arqond's streams store (a cluster's: the node's copy), the in-memory history
    windows and op.store."""
    streams, server = config.streams, config.server
    stats: dict[str, Any] = {"pending": len(bus.pending), "pending_bytes": bus.pending_bytes,
                             "channels": bus.router.channel_count(),
                             "history_bytes": bus.router.histories.bytes,
                             "history_evicted_total": bus.router.histories.evicted_total,
                             "lost": bus.store_lost}
    if store is not None:
        stats.update({counter: getattr(store, counter) for counter in COUNTERS})
    return {
        **storage_health(bus, backend),
        "configuration": {
            "path": store.path if store is not None else None,
            "durability": streams.durability, "on_full": streams.on_full,
            "max_messages": streams.max_messages, "max_bytes": streams.max_bytes,
            "max_age": streams.max_age, "total_bytes": streams.total_bytes,
            "max_pending_bytes": streams.max_pending_bytes,
            "history_size": server.history_size, "history_bytes": server.history_bytes,
            "history_total_bytes": server.history_total_bytes},
        "stats": stats,
        "op_store": {"keys": kv.keys, "bytes": kv.bytes, "refused_total": kv.refused_total,
                     "max_keys": config.store.max_keys, "max_bytes": config.store.max_bytes,
                     "max_value_bytes": config.store.max_value_bytes},
    }
