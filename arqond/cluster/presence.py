"""Who is where in the cluster, and what travels between nodes outside the channels' stream:
private messages to a client of another node, and messages to a whole room.

Presence is a JetStream key-value bucket (``<cluster>-presence``): each node keeps one key per
client of its own (``<node>.<client id>``: type, screen name, the channels it joined) and one
for itself (``<node>``: when it was last heard of), synced every ``SYNC_INTERVAL``. Every node
watches the bucket and keeps a view of the other nodes' clients: channels list their remote
members (list_channels counts and channel_info show the cluster, each client with its node),
and a private message finds the node of its target. A node not heard of for ``NODE_STALE``
seconds (killed, cut off) is gone: its clients leave every view; at its next start it removes
what it left behind. While NATS is unreachable the view is empty: this node knows no one else.

Private messages go to ``<cluster>.node.<node>.pm`` with their targets in a header; a message
to a whole room goes to ``<cluster>.room.<room>`` for every node to deliver to its members.
Both are core NATS (at most once, as a private message or a room message is on one node).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import nats
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from arqond.cluster.buckets import beat, open_bucket, watch
from arqond.cluster.link import TRANSIENT
from arqond.cluster.names import decode, encode
from arqond.core.clients import Client
from arqond.core.envelope import iso_at, serialize
from arqond.core.router import WILDCARD
from arqond.log import Throttle

if TYPE_CHECKING:
    from arqond.core.bus import Bus

log = logging.getLogger("arqond.cluster")

SYNC_INTERVAL = 1.0     # seconds between two syncs of this node's clients to the bucket
NODE_STALE = 10.0       # seconds without a word from a node before it counts as gone
TARGETS_HEADER = "Arqond-Targets"


class Presence:
    def __init__(self, bus: "Bus", node: str, cluster: str, replicas: int) -> None:
        self.bus = bus
        self.node = node
        self.me = encode(node)
        self.prefix = cluster
        self.bucket = f"{cluster}-presence"
        self.replicas = replicas
        self.nc: NATS | None = None
        self.kv: Any = None
        self.joined = False
        self.relaying = False          # a room message from another node is being delivered
        self.published: dict[str, bytes] = {}               # own client id -> value in bucket
        self.clients: dict[str, tuple[str, dict[str, Any]]] = {}  # other nodes' clients
        self.seen: dict[str, float] = {}                    # node -> when it last said so
        self.tasks: list[asyncio.Task[None]] = []
        self.subscribed = False
        self.sync_errors = Throttle()
        # /metrics
        self.private_sent_total = 0
        self.private_received_total = 0
        self.room_sent_total = 0
        self.room_received_total = 0

    # -- joining -----------------------------------------------------------------------------

    async def join(self, nc: NATS) -> None:
        self.nc = nc
        if self.kv is None:
            self.kv = await open_bucket(nc, self.bucket, self.replicas)
            # What an earlier life of this node left (killed: it could not say goodbye).
            for key in await self._keys():
                if key.startswith(self.me + ".") and key[len(self.me) + 1:] not in \
                        self.bus.clients:
                    await self.kv.delete(key)
        if not self.subscribed:
            await nc.subscribe(f"{self.prefix}.room.*", cb=self._room_message)
            await nc.subscribe(f"{self.prefix}.node.{self.me}.pm", cb=self._private_message)
            self.subscribed = True
        self.published.clear()        # put again: the bucket may have lost them meanwhile
        self.joined = True
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(watch(self.kv, self._entry)), loop.create_task(
            beat(self._sync, SYNC_INTERVAL, "presence", self.sync_errors, self._drop_stale))]

    async def _keys(self) -> list[str]:
        try:
            return await self.kv.keys()
        except nats.js.errors.NoKeysError:
            return []

    def lost(self) -> None:
        """NATS is away: nobody else is known until it returns."""
        self.joined = False
        for task in self.tasks:
            task.cancel()
        self.tasks = []
        for client_id in list(self.clients):
            self._forget(client_id)
        self.seen.clear()

    async def stop(self) -> None:
        joined = self.joined
        self.lost()
        if joined and self.kv is not None:
            for key in [self.me, *(f"{self.me}.{client_id}" for client_id in self.published)]:
                try:
                    await self.kv.delete(key)
                except TRANSIENT:
                    return

    # -- this node's clients, to the bucket ----------------------------------------------------

    async def _sync(self) -> None:
        kv = self.kv
        await kv.put(self.me, orjson.dumps({"seen": time.time()}))
        current = {client.id: self._value(client) for client in self.bus.clients.values()}
        for client_id, value in current.items():
            if self.published.get(client_id) != value:
                await kv.put(f"{self.me}.{client_id}", value)
                self.published[client_id] = value
        for client_id in [c for c in self.published if c not in current]:
            await kv.delete(f"{self.me}.{client_id}")
            del self.published[client_id]

    @staticmethod
    def _value(client: Client) -> bytes:
        return orjson.dumps({"type": client.type, "screen_name": client.screen_name,
                             "channels": sorted(s for s in client.subscriptions
                                                if WILDCARD not in s)})

    # -- the other nodes' clients, from the bucket ---------------------------------------------

    def _entry(self, entry: Any) -> None:
        key, value, operation = entry.key, entry.value, entry.operation
        node_token, _, client_id = key.partition(".")
        if node_token == self.me:
            return
        node = decode(node_token)
        gone = operation in ("DEL", "PURGE") or not value
        if not client_id:
            if gone:
                self.seen.pop(node, None)
            else:
                self.seen[node] = orjson.loads(value)["seen"]
            return
        if gone:
            self._forget(client_id)
            return
        info = orjson.loads(value)
        self._forget(client_id)
        self.clients[client_id] = (node, info)
        member = {"node": node, "type": info["type"], "screen_name": info["screen_name"]}
        router = self.bus.router
        for room, channel in info["channels"]:
            found, created = router.ensure_channel(room, channel, created_by=client_id)
            if created:
                self.bus.emit("channel_created", room=room, channel=channel,
                              created_by=client_id)
            found.remote[client_id] = member

    def _forget(self, client_id: str) -> None:
        known = self.clients.pop(client_id, None)
        if known is None:
            return
        for room, channel in known[1]["channels"]:
            found = self.bus.router.channel(room, channel)
            if found is not None:
                found.remote.pop(client_id, None)

    def _drop_stale(self) -> None:
        now = time.time()
        gone = {node for node, seen in self.seen.items() if now - seen > NODE_STALE}
        for node in gone:
            log.warning("cluster: node %s not heard of for %g s: its clients leave presence",
                        node, NODE_STALE)
            del self.seen[node]
        for client_id, (node, _) in list(self.clients.items()):
            if node in gone or node not in self.seen:
                self._forget(client_id)

    # -- what the core asks (Bus.cluster) --------------------------------------------------

    def whereabouts(self, client_ids: list[str]) -> dict[str, str]:
        return {client_id: self.clients[client_id][0] for client_id in client_ids
                if client_id in self.clients}

    def send_private(self, frame: bytes, targets: dict[str, str]) -> None:
        by_node: dict[str, list[str]] = {}
        for client_id, node in targets.items():
            by_node.setdefault(node, []).append(client_id)
        for node, ids in by_node.items():
            self.private_sent_total += 1
            self._send(f"{self.prefix}.node.{encode(node)}.pm", frame,
                       {TARGETS_HEADER: ",".join(ids)})

    def describe(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for node, _ in self.clients.values():
            counts[node] = counts.get(node, 0) + 1
        nodes = [{"node": self.node, "clients": len(self.bus.clients), "self": True}]
        nodes += [{"node": node, "clients": counts.get(node, 0), "last_seen": iso_at(seen)}
                  for node, seen in sorted(self.seen.items())]
        return {"node": self.node, "joined": self.joined, "nodes": nodes}

    def _send(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> None:
        assert self.nc is not None
        task = asyncio.get_running_loop().create_task(
            self.nc.publish(subject, payload, headers=headers))
        task.add_done_callback(self._sent)

    @staticmethod
    def _sent(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("cluster: a message to another node was not sent: %s",
                        task.exception())

    # -- messages to a whole room, and private ones ------------------------------------------

    def on_message(self, env: dict[str, Any], client: Client | None) -> None:
        """A message this node routed: to a whole room, every other node delivers it too."""
        if self.relaying or not self.joined or env.get("channel") is not None \
                or not env.get("room"):
            return
        self.room_sent_total += 1
        self._send(f"{self.prefix}.room.{encode(env['room'])}", serialize(env), None)

    async def _room_message(self, msg: Msg) -> None:
        self.room_received_total += 1
        self.relaying = True
        try:
            self.bus.publish(orjson.loads(msg.data), create=False)
        except Exception:  # noqa: BLE001 - one message's failure must not stop the rest
            self.bus.internal_error("cluster", f"a room message from {msg.subject}")
        finally:
            self.relaying = False

    async def _private_message(self, msg: Msg) -> None:
        self.private_received_total += 1
        targets = (msg.headers or {}).get(TARGETS_HEADER, "")
        for client_id in targets.split(","):
            client = self.bus.clients.get(client_id)
            if client is not None:
                self.bus.send_frame(client, msg.data)
