"""The cluster as a part of arqond: in place of the single node's streams store, first to
start and last to stop (arqond/app.py loads it only when ``cluster.nats_url`` is set).

At start it waits a little for NATS (``JOIN_WAIT``) so that a node whose NATS is up joins
before it says it is ready; when NATS is not there, the node serves its own clients alone
and joins when NATS comes, as it rejoins after every loss.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client as NATS

from arqond.cluster.cursors import SharedCursors
from arqond.cluster.link import TRANSIENT, Link, reason
from arqond.cluster.presence import Presence
from arqond.cluster.zgents import ZgentSharing
from arqond.cluster.store import EPOCH_KEY, MIRROR_FILE, SEQ_KEY, JetStreamStore, Joined
from arqond.config import Config
from arqond.core.bus import Bus
from arqond.core.cursors import Cursors
from arqond.core.envelope import iso_at
from arqond.core.metrics import Sample, counters_of, gauge
from arqond.log import NOTICE, log_event

if TYPE_CHECKING:
    from arqond.moo.layer import MooLayer
    from arqond.streams.adapter import StreamsAdapter

log = logging.getLogger("arqond.cluster")

# Seconds the start waits for NATS before the node goes on alone (it joins later), and for
# reading what the stream holds that this node's copy lacks.
JOIN_WAIT = 5.0
CATCH_UP_WAIT = 30.0

COUNTERS = {
    "connects_total": "Connections made to NATS (the first and every reconnect).",
    "losses_total": "Connections to NATS lost, each logged (MESSAGE_ID cluster_lost).",
    "errors_total": "Errors NATS reported (failed tries, refusals), logged once per kind "
                    "and pause.",
}
STORE_COUNTERS = {
    "published_total": "Messages published to the cluster's JetStream stream from here.",
    "arrived_total": "Messages read from the cluster's stream, from every node.",
    "kept_total": "Messages published while NATS was unreachable, delivered here and kept "
                  "to be shared (cluster.outage_buffer).",
    "unshared_total": "Messages published while NATS was unreachable past "
                      "cluster.outage_buffer: delivered here only, never shared.",
    "publish_errors_total": "Messages JetStream refused (their publishers were told).",
    "mirror_errors_total": "Messages this node's copy of the stream could not keep.",
    "behind_total": "Times reading the stream waited for this node's copy to catch up "
                    "(streams.max_pending_bytes), each logged.",
}

PRESENCE_COUNTERS = {
    "private_sent_total": "Private messages sent to clients of other nodes (one per node).",
    "private_received_total": "Private messages other nodes sent to clients of this one.",
    "room_sent_total": "Messages to a whole room sent to the other nodes.",
    "room_received_total": "Messages to a whole room from other nodes.",
}

ZGENT_COUNTERS = {
    "requests_out_total": "Requests for Zgents other nodes serve, sent there.",
    "requests_in_total": "Requests from other nodes for Zgents served here.",
    "lines_out_total": "Messages for the inboxes of Zgents other nodes serve.",
    "lines_in_total": "Messages from other nodes for the inboxes of Zgents served here.",
    "not_served_total": "Requests answered -32001 and messages not delivered: no node "
                        "served the Zgent, or NATS was unreachable (each message logged).",
}


def node_name(config: Config) -> str:
    return config.cluster.node or socket.gethostname()


class ClusterAdapter:
    """In place of the node's own streams adapter: ``local`` (a StreamsAdapter on
    ``MIRROR_FILE``, made by app.py) keeps this node's copy of the cluster's stream."""

    name = "cluster"
    mirror_file = MIRROR_FILE

    def __init__(self, bus: Bus, config: Config, cursors: Cursors,
                 local: "StreamsAdapter") -> None:
        self.bus = bus
        self.config = config
        self.cursors = cursors
        self.node = node_name(config)
        self.local = local
        self.mirror = local.store
        self.store = JetStreamStore(bus, config, self.node, self.mirror)
        self.presence = Presence(bus, self.node, config.cluster.name, config.cluster.replicas)
        self.store.cursors = self.shared_cursors = SharedCursors(
            cursors, self.mirror, config.cluster.name, config.cluster.replicas)
        self.link = Link(config.cluster, self.node, self._up, self._lost)
        self.sharing: ZgentSharing | None = None
        self.started = False
        self.first: Joined | None = None
        self.found: asyncio.Event | None = None
        self.mirror_epoch: str | None = None
        self.mirror_last = 0

    async def start(self) -> None:
        self.found = asyncio.Event()
        self.link.start()
        try:
            await asyncio.wait_for(self.found.wait(), JOIN_WAIT)
        except asyncio.TimeoutError:
            log.warning("cluster: NATS (%s) not reachable within %g s; node %s serves its own "
                        "clients alone and joins when it can", ", ".join(
                            self.config.cluster.nats_url), JOIN_WAIT, self.node)
        streams = self.local.open()
        epoch, last = self.mirror.noted(EPOCH_KEY), int(self.mirror.noted(SEQ_KEY) or 0)
        first = self.first
        if first is not None and epoch is not None and \
                (epoch != first.epoch or last < first.first - 1):
            self.store.set_aside()
            streams = self.local.open()
            epoch, last = None, 0
        self.mirror_epoch, self.mirror_last = epoch, last
        if epoch is not None:
            self.bus.router.epoch = epoch
        restored = self.local.take_over(streams, self.store)
        self.bus.store = self.store
        self.bus.cluster = self.presence
        log.info("cluster: node %s, %d stream(s) restored from %s", self.node, restored,
                 self.mirror.path)
        self.started = True
        if first is not None and self.link.up:
            await self._join(self.link.nc, first)
            try:    # what the stream had at start is history here before anyone connects
                await asyncio.wait_for(self.store.caught_up.wait(), CATCH_UP_WAIT)
            except asyncio.TimeoutError:
                log.warning("cluster: not caught up with the stream (seq %d of %d) within %g s;"
                            " the rest is kept as it comes", self.store.handed_seq,
                            self.store.target, CATCH_UP_WAIT)

    async def _up(self, nc: NATS) -> None:
        """NATS is up (the first time, or again): JetStream's stream, then join it."""
        try:
            info = await self.store.stream_info(nc)
        except TRANSIENT as exc:
            self.store.setup_error = f"JetStream is not available: {reason(exc)}"
            log_event(log, logging.WARNING, "cluster_error", f"cluster: {self.store.setup_error}"
                      "; trying again")
            asyncio.get_running_loop().call_later(2.0, self._retry, nc)
            return
        joined = self.store.position(info)
        if not self.started:
            self.first = joined
            assert self.found is not None
            self.found.set()
            return
        await self._join(nc, joined)

    def _retry(self, nc: NATS) -> None:
        if self.link.up and not self.store.joined and self.store.diverged is None:
            asyncio.get_running_loop().create_task(self._up(nc))

    def share_zgents(self, moo: "MooLayer") -> ZgentSharing:
        """The part that shares the MOO layer's Zgents: an adapter to start after it."""
        self.sharing = ZgentSharing(moo, self.presence, self.config, self.node)
        return self.sharing

    def _lost(self) -> None:
        self.store.lost()
        self.presence.lost()
        self.shared_cursors.lost()
        if self.sharing is not None:
            self.sharing.lost()

    async def _join(self, nc: NATS, joined: Joined) -> None:
        await self.store.join(nc, joined, self.mirror_epoch, self.mirror_last)
        if self.store.joined:
            await self.presence.join(nc)
            await self.shared_cursors.join(nc)
            if self.sharing is not None:
                await self.sharing.join(nc)
            log_event(log, NOTICE, "cluster_up", f"cluster: node {self.node} shares cluster "
                      f"{self.config.cluster.name} (epoch {self.store.epoch}, stream at seq "
                      f"{joined.last}, {len(self.store.unshared)} message(s) of the outage to "
                      "share)", server=self.link.server)

    async def stop(self) -> None:
        await self.presence.stop()
        self.shared_cursors.lost()
        await self.store.stop()
        await self.link.stop()
        await self.local.stop()

    def reload(self, config: Config) -> None:
        self.config = self.store.config = config
        self.local.reload(config)

    # -- reporting -------------------------------------------------------------------------

    def faults(self) -> list[str]:
        store, link = self.store, self.link
        if store.diverged is not None:
            return [f"cluster: {store.diverged}; not sharing until arqond is restarted"]
        if not link.up:
            return [f"cluster: NATS unreachable since {iso_at(link.since)} ({link.state}); "
                    f"serving this node's clients alone, {len(store.unshared)} message(s) "
                    "kept to share"]
        if not store.joined:
            return [f"cluster: {store.setup_error or 'joining'}"]
        return []

    def status(self) -> dict[str, Any]:
        store = self.store
        return {"cluster": {
            "node": self.node, "name": self.config.cluster.name, **self.link.status(),
            "since": iso_at(self.link.since), "joined": store.joined,
            "stream": store.subjects.stream, "epoch": store.epoch, "last_seq": store.last_seq,
            "in_flight": len(store.inflight), "outage_kept": len(store.unshared),
            "outage_buffer": self.config.cluster.outage_buffer,
            "unshared_total": store.unshared_total,
            "nodes": self.presence.describe()["nodes"]}}

    def samples(self) -> list[Sample]:
        store = self.store
        return [gauge("arqonbus_cluster_connected", "1 while connected to NATS.",
                      int(self.link.up)),
                gauge("arqonbus_cluster_joined", "1 while sharing the cluster's stream.",
                      int(store.joined)),
                gauge("arqonbus_cluster_in_flight", "Messages published from here that wait "
                      "for their numbered copy.", len(store.inflight)),
                gauge("arqonbus_cluster_outage_kept", "Messages delivered here while NATS was "
                      "unreachable, kept to be shared (cluster.outage_buffer).",
                      len(store.unshared)),
                gauge("arqonbus_cluster_last_seq", "The last seq of the cluster's stream "
                      "this node has.", store.last_seq),
                *counters_of(self.link, "arqonbus_cluster", COUNTERS),
                *counters_of(store, "arqonbus_cluster", STORE_COUNTERS),
                *counters_of(self.presence, "arqonbus_cluster", PRESENCE_COUNTERS),
                *(counters_of(self.sharing, "arqonbus_cluster", ZGENT_COUNTERS)
                  if self.sharing is not None else ()),
                *self.local.samples()]
