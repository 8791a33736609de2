"""Zgents across the nodes of a cluster: a Zgent registered on one node is asked, written to
and listed on every node.

The cluster's registry is the key-value bucket ``<cluster>-zgents``: one key per Zgent, its
registry.json entry with the node that serves it, put by that node whenever the entry changes
(synced every ``SYNC_INTERVAL``). Every node watches it, and for each Zgent another node
serves it makes NAME-inbox and NAME.sock in its own MOO dir and lists NAME in its
registry.json (the seed's schema, plus ``node``), so the seed's ``jq`` queries, ``arqon call``,
``arqon send-to`` and ``socat`` work on any node. What comes in through those files goes to
the serving node over NATS request/reply: a request for the handler on
``<cluster>.rpc.<NAME>``, a message for its inbox (a FIFO line, a reply routed by
``replyTo``) on ``<cluster>.inbox.<NAME>``; only the serving node subscribes to them, so when
no node serves NAME, NATS says so at once and the asker gets ``-32001 not serving`` at once.
Its inbox, mailbox and handler stay on its node: ``arqon.recv`` and ``arqon.serve`` are
refused elsewhere, naming the node. A node not heard of for ``moo.stale_after`` seconds
(presence) has its Zgents shown offline everywhere.
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
from arqond.cluster.names import encode
from arqond.core import jsonrpc
from arqond.core.errors import RpcCode
from arqond.core.moo.names import ZgentError
from arqond.core.moo.registry import CLUSTER, NODE_KEY, Spec, Status, parse_iso
from arqond.log import Throttle
from arqond.unix import NotOurs

if TYPE_CHECKING:
    from arqond.cluster.presence import Presence
    from arqond.config import Config
    from arqond.moo.layer import MooLayer

log = logging.getLogger("arqond.cluster")

SYNC_INTERVAL = 1.0
# A message for another node's inbox is given this long to be taken (it is one hop).
LINE_TIMEOUT = 5.0
# Beyond moo.handler_timeout: the asker's own deadline (-32002) always comes first.
REQUEST_MARGIN = 1.0
NODE_HEADER = "Arqond-Node"


class Remote:
    """A Zgent another node serves, as this node's calls and inbox see it (the core's
    Elsewhere)."""

    __slots__ = ("sharing", "zgent", "node", "peer")

    def __init__(self, sharing: "ZgentSharing", zgent: str, node: str) -> None:
        self.sharing = sharing
        self.zgent = zgent
        self.node = node
        self.peer = f"node {node}"      # how a refusal names the handler it already has

    def write(self, obj: dict[str, Any]) -> None:
        self.sharing.ask(self, obj)

    def line(self, message: dict[str, Any]) -> None:
        self.sharing.pass_line(self, message)


class ZgentSharing:
    """An adapter of its own, started after the MOO layer (which makes the files)."""

    name = "cluster-zgents"

    def __init__(self, moo: "MooLayer", presence: "Presence", config: "Config",
                 node: str) -> None:
        self.moo = moo
        self.zgents = moo.zgents
        self.presence = presence
        self.config = config
        self.me = node
        self.prefix = config.cluster.name
        self.bucket = f"{self.prefix}-zgents"
        self.nc: NATS | None = None
        self.kv: Any = None
        self.joined = False
        self.started = False
        self.published: dict[str, bytes] = {}      # own Zgents' entries as put
        self.holders: dict[str, str] = {}          # name -> the node whose entry it is
        self.served_here: dict[str, list[Any]] = {}   # own Zgents' subscriptions
        self.tasks: list[asyncio.Task[None]] = []
        self.conflicts: set[str] = set()
        self.sync_errors = Throttle()
        # /metrics
        self.requests_out_total = 0
        self.requests_in_total = 0
        self.lines_out_total = 0
        self.lines_in_total = 0
        self.not_served_total = 0

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self.started = True
        if self.nc is not None:
            await self.join(self.nc)

    async def join(self, nc: NATS) -> None:
        self.nc = nc
        if not self.started:
            return      # the MOO layer is not up yet: ``start`` joins
        if self.kv is None:
            self.kv = await open_bucket(nc, self.bucket, self.config.cluster.replicas)
        self.joined = True
        self.published.clear()
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(watch(self.kv, self._watched)), loop.create_task(
            beat(self._sync, SYNC_INTERVAL, "the Zgent registry", self.sync_errors,
                 self._offline_where_gone))]

    def lost(self) -> None:
        self.joined = False
        for task in self.tasks:
            task.cancel()
        self.tasks = []

    async def stop(self) -> None:
        """This node's Zgents offline in the cluster's registry, then nothing more."""
        joined = self.joined
        self.lost()
        if not joined:
            return
        for name in list(self.published):
            served = self.zgents.served.get(name)
            if served is None:
                continue
            entry = {**served.zgent.entry(), "status": Status.OFFLINE.value,
                     NODE_KEY: self.me}
            try:
                await self.kv.put(name, orjson.dumps(entry))
            except TRANSIENT:
                return

    def reload(self, config: "Config") -> None:
        self.config = config

    # -- this node's Zgents, to the cluster --------------------------------------------------

    async def _sync(self) -> None:
        zgents = self.zgents
        entries = zgents.registry.entries()
        changed = False
        for name, served in zgents.served.items():
            if served.elsewhere is None and served.zgent.node != self.me:
                served.zgent.node = self.me
                changed = True
        if changed:
            zgents.changed()
        own = {name for name, served in zgents.served.items() if served.elsewhere is None}
        for name in own:
            if name not in self.served_here:
                await self._serve(name)
        for name in [n for n in self.served_here if n not in own]:
            for sub in self.served_here.pop(name):
                await sub.unsubscribe()
        # Own entries: the served ones, and the ones unregistered here (offline until purged).
        for name, entry in entries.items():
            if name not in own and name not in self.published:
                continue
            if self.holders.get(name, self.me) != self.me:
                continue        # another node's Zgent of the same name: its entry stands
            value = orjson.dumps({**entry, NODE_KEY: self.me})
            if self.published.get(name) != value:
                await self.kv.put(name, value)
                self.published[name] = value
        for name in [n for n in self.published if n not in entries]:
            await self.kv.delete(name)          # purged here
            del self.published[name]

    async def _serve(self, name: str) -> None:
        assert self.nc is not None
        token = encode(name)

        async def request(msg: Msg) -> None:
            await self._request_in(name, msg)

        async def line(msg: Msg) -> None:
            await self._line_in(name, msg)
        self.served_here[name] = [
            await self.nc.subscribe(f"{self.prefix}.rpc.{token}", cb=request),
            await self.nc.subscribe(f"{self.prefix}.inbox.{token}", cb=line)]

    def _offline_where_gone(self) -> None:
        """Zgents of a node not heard of for moo.stale_after seconds: offline here."""
        window = self.config.moo.stale_after
        now = time.time()
        changed = False
        for name, served in self.zgents.served.items():
            elsewhere = served.elsewhere
            if elsewhere is None:
                continue
            seen = self.presence.seen.get(elsewhere.node)
            if (seen is None or now - seen > window) and \
                    now - served.zgent.last_seen > window:
                changed |= self.zgents.registry.set_offline(name)
        if changed:
            self.zgents.changed()

    # -- the other nodes' Zgents, from the cluster -------------------------------------------

    def _watched(self, entry: Any) -> None:
        try:
            self._entry(entry.key, entry.value, entry.operation)
        except (ZgentError, NotOurs, ValueError, KeyError) as exc:
            log.warning("cluster: Zgent %s of the cluster's registry not served here: %s",
                        entry.key, exc)

    def _entry(self, name: str, value: bytes | None, operation: str | None) -> None:
        served = self.zgents.served.get(name)
        if operation in ("DEL", "PURGE") or not value:
            self.holders.pop(name, None)
            if served is not None and served.elsewhere is not None:
                self.moo.unregister(name)
            return
        entry = orjson.loads(value)
        node = entry[NODE_KEY]
        self.holders[name] = node
        if node == self.me:
            return
        if served is not None and served.elsewhere is None:
            if name not in self.conflicts:
                self.conflicts.add(name)
                log.warning("cluster: Zgent %s is registered on this node and on node %s; "
                            "each node's requests go to its own", name, node)
            return
        if served is None:
            spec = Spec.from_table(name, {key: entry[key] for key in
                                          ("name", "session", "pane", "capabilities")}, CLUSTER)
            served = self.moo.register_elsewhere(spec, Remote(self, name, node))
        assert served.elsewhere is not None
        served.elsewhere.node = served.zgent.node = node
        served.zgent.spec.capabilities = list(entry["capabilities"])
        served.zgent.status = Status(entry["status"])
        served.zgent.last_seen = parse_iso(entry["lastSeen"])
        self.zgents.changed()

    # -- requests and messages between nodes ---------------------------------------------------

    def ask(self, remote: Remote, obj: dict[str, Any]) -> None:
        """A request (or notification) for the handler of a Zgent another node serves."""
        self.requests_out_total += 1
        if not self.joined or self.nc is None:
            self._not_served(remote, obj, "NATS is unreachable from this node")
            return
        asyncio.get_running_loop().create_task(self._ask(remote, obj))

    async def _ask(self, remote: Remote, obj: dict[str, Any]) -> None:
        assert self.nc is not None
        subject = f"{self.prefix}.rpc.{encode(remote.zgent)}"
        data = orjson.dumps(obj)
        headers = {NODE_HEADER: self.me}
        try:
            if "id" not in obj:
                await self.nc.publish(subject, data, headers=headers)
                return
            msg = await self.nc.request(subject, data, headers=headers,
                                        timeout=self.config.moo.handler_timeout + REQUEST_MARGIN)
        except nats.errors.NoRespondersError:
            self._not_served(remote, obj, f"no node serves it now (node {remote.node} is gone, "
                             "or it was unregistered there)")
            return
        except nats.errors.TimeoutError:
            return      # the asker's deadline answers -32002
        except (nats.errors.Error, OSError) as exc:
            self._not_served(remote, obj, f"NATS: {exc}")
            return
        try:
            answer = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            answer = None
        if isinstance(answer, dict):
            self.zgents.calls.answer(remote, answer)

    def _not_served(self, remote: Remote, obj: dict[str, Any], why: str) -> None:
        self.not_served_total += 1
        if "id" in obj:
            self.zgents.calls.answer(remote, jsonrpc.error(
                obj["id"], RpcCode.NOT_SERVING, f"{remote.zgent} is not serving: {why}"))

    async def _request_in(self, name: str, msg: Msg) -> None:
        """A request from another node for a Zgent served here: to its handler, as if asked
        on its socket; the answer goes back to the asking node."""
        self.requests_in_total += 1
        node = (msg.headers or {}).get(NODE_HEADER, "?")
        try:
            obj = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        served = self.zgents.served.get(name)
        reply = (lambda answer: self._respond(msg.reply, answer)) if "id" in obj else None
        if served is None or served.elsewhere is not None:
            if reply is not None:
                reply(jsonrpc.error(obj.get("id"), RpcCode.NOT_SERVING,
                                    f"{name} is not registered on node {self.me}"))
            return
        self.zgents.calls.forward(name, served.handler, obj, reply, ("node", node),
                                  self.config.moo.handler_timeout)

    def _respond(self, reply_to: str, answer: dict[str, Any]) -> None:
        assert self.nc is not None
        asyncio.get_running_loop().create_task(self.nc.publish(reply_to, orjson.dumps(answer)))

    def pass_line(self, remote: Remote, message: dict[str, Any]) -> None:
        """A message for a Zgent another node serves: to its inbox there."""
        self.lines_out_total += 1
        if not self.joined:
            self._line_lost(remote, "NATS is unreachable from this node")
            return
        asyncio.get_running_loop().create_task(self._pass_line(remote, message))

    async def _pass_line(self, remote: Remote, message: dict[str, Any]) -> None:
        assert self.nc is not None
        try:
            await self.nc.request(f"{self.prefix}.inbox.{encode(remote.zgent)}",
                                  orjson.dumps(message), timeout=LINE_TIMEOUT,
                                  headers={NODE_HEADER: self.me})
        except nats.errors.NoRespondersError:
            self._line_lost(remote, f"no node serves it now (node {remote.node} is gone)")
        except (nats.errors.Error, OSError) as exc:
            self._line_lost(remote, f"NATS: {exc}")

    def _line_lost(self, remote: Remote, why: str) -> None:
        self.not_served_total += 1
        log.warning("cluster: a message to Zgent %s (served on node %s) was not delivered: %s",
                    remote.zgent, remote.node, why)

    async def _line_in(self, name: str, msg: Msg) -> None:
        self.lines_in_total += 1
        try:
            message = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        if isinstance(message, dict):
            self.zgents.inbox_line(name, message)
        if msg.reply:
            await msg.respond(b"")
