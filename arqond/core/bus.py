"""The Bus: the object every transport talks to, and its delivery engine.

Transports call ``attach`` when a client connects, ``receive`` with each text frame and
``detach`` when it goes; server-side producers (FIFOs, the narrative tailer) call ``publish``.
What a frame means is arqond/core/protocol.py's part of the Bus, how a channel message is
numbered, stored and resumed arqond/core/streaming.py's; this module holds clients, joins,
fan-out and delivery. Everything the Bus has to say goes out through each client's Sink,
synchronously and without waiting, so one slow reader can never hold up a fan-out.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NoReturn, Protocol

from arqond import PROTOCOL_VERSION, __version__
from arqond.core.access import INBOX, Access, Action, Refused
from arqond.core.clients import CLOSE_SLOW_CONSUMER, Client, Sink
from arqond.core.commands import Command, CommandRegistry, builtin_commands
from arqond.core.envelope import SERVER_SENDER, IdGenerator, now_iso, serialize
from arqond.core.errors import ErrorCode
from arqond.core.principal import NOBODY, Principal
from arqond.core.quotas import Charges, Quota, QuotaExceeded, default_limits
from arqond.core.protocol import ArqonProtocol, error_frame
from arqond.core.streaming import StreamPipeline
from arqond.core.history import Entry, History, HistoryLimits
from arqond.core.replay import Replay
from arqond.core.streams import Record, Store, Stream
from arqond.core.timers import Timers
from arqond.core.router import (DEFAULT_HISTORY, WILDCARD, Channel, Router, RoutingError,
                                check_name)

if TYPE_CHECKING:
    from arqond.core.casil import Casil

SCIENCE_ROOM = "science"
SCIENCE_CHANNELS = ("general", "explore", "hypothesize", "design", "execute", "interpret", "share")


@dataclass
class BusSettings:
    default_room: str | None = "science"
    default_channel: str | None = "general"
    history_size: int = DEFAULT_HISTORY.messages
    history_bytes: int = DEFAULT_HISTORY.bytes
    history_total_bytes: int = DEFAULT_HISTORY.total_bytes
    history_default_limit: int = 50
    max_json_depth: int = 64
    max_channels: int = 10000
    client_buffer_bytes: int = 4 << 20
    output_budget_bytes: int = 256 << 20
    max_pending_bytes: int = 64 << 20
    on_full: str = "refuse"

    def history_limits(self) -> HistoryLimits:
        return HistoryLimits(self.history_size, self.history_bytes, self.history_total_bytes)


@dataclass
class Stats:
    connections_total: int = 0
    messages_total: int = 0
    deliveries_total: int = 0
    commands_total: int = 0
    errors_total: int = 0
    slow_consumers_total: int = 0
    policy_blocks_total: int = 0
    channels_refused_total: int = 0
    replies_too_large_total: int = 0
    budget_cuts_total: int = 0
    unrouted_total: int = 0
    store_refused_total: int = 0
    store_behind_total: int = 0
    by_transport: dict[str, int] = field(default_factory=dict)


# A listener hears notable events: ("client_connected", {...}), ("channel_created", {...}), ...
EventListener = Callable[[str, dict[str, Any]], None]
# An observer sees every envelope routed on behalf of a client (None for server publishes).
MessageObserver = Callable[[dict[str, Any], "Client | None"], None]
# An intercept takes over client messages to one room:channel instead of routing them (the
# broadcast log appends before publishing); it raises RoutingError to refuse one.
Intercept = Callable[["Client", dict[str, Any]], None]


class Cluster(Protocol):
    """What the core asks of a cluster's presence (arqond/cluster/presence.py)."""

    node: str

    def whereabouts(self, client_ids: list[str]) -> dict[str, str]:
        """Which of these clients are connected to other nodes: id -> node."""

    def send_private(self, frame: bytes, targets: dict[str, str]) -> None:
        """A private frame to clients of other nodes (``whereabouts``), without waiting."""

    def describe(self) -> dict[str, Any]:
        """The cluster's nodes and their clients, for the status command."""


class Bus(ArqonProtocol, StreamPipeline):
    def __init__(self, settings: BusSettings | None = None, router: Router | None = None,
                 charges: Charges | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or BusSettings()
        # When arqond received what it records (history time windows): injected for tests.
        self.clock = clock
        # What each principal holds against its quotas (arqond/core/quotas.py).
        self.charges = charges or Charges(default_limits())
        self.charges.on_refused = self._quota_refused
        self.router = router or Router(History(self.settings.history_limits()))
        self.ids = IdGenerator()
        self.clients: dict[str, Client] = {}
        self.commands: CommandRegistry = builtin_commands()
        self.stats = Stats()
        self.started = time.time()
        self.listeners: list[EventListener] = []
        self.intercepts: dict[tuple[str, str], Intercept] = {}
        self.observers: list[MessageObserver] = []
        # Content inspection of client frames (CASIL), when plugged in.
        self.inspector: "Casil | None" = None
        # Who may do what (arqond/core/access.py); the MOO layer keeps its Zgent owners.
        self.access = Access()
        # Where streams are kept (None: in memory only), and what it has not stored yet,
        # oldest first, with its bytes: bounded by streams.max_pending_bytes.
        self.store: Store | None = None
        self.store_lost: str | None = None     # why it went on in memory (on_full)
        self.pending: deque[Record] = deque()
        self.pending_bytes = 0
        # Clients catching up on a channel (arqond/core/replay.py), and the timers they
        # wait on while their buffer is full.
        self.replays: set[Replay] = set()
        self.timers: Timers | None = None
        # Readers waiting for a stream's next message (cursor.read with wait), woken once.
        self.waiting: dict[Stream, list[Callable[[], None]]] = {}
        # The other nodes of a cluster (arqond/cluster/presence.py), when there are: this
        # node's name, where clients of other nodes are, what presence says of them.
        self.cluster: "Cluster | None" = None
        for name in SCIENCE_CHANNELS:
            self.router.ensure_channel(SCIENCE_ROOM, name, kind="general", hardcoded=True)

    # -- life cycle of a client --------------------------------------------------------

    def attach(self, sink: Sink, transport: str, principal: Principal = NOBODY, *,
               identity: dict[str, Any] | None = None, peer: str = "", welcome: bool = True,
               join_default: bool = True) -> Client:
        """Register a new client, send its welcome frame and join it to the default channel.

        Transports with their own framing (an HTTP stream, a JSON-RPC socket) may skip the
        welcome frame or the default channel.
        """
        self.charges.charge(principal, Quota.CONNECTIONS)  # QuotaExceeded: not attached
        client = Client(sink, transport, principal, peer=peer)
        self.clients[client.id] = client
        self.stats.connections_total += 1
        self.stats.by_transport[transport] = self.stats.by_transport.get(transport, 0) + 1
        if welcome:
            self.send(client, {"type": "message", "sender": SERVER_SENDER, "payload": {
                "welcome": "Connected to ArqonBus", "client_id": client.id}})
        problems = client.identify(identity) if identity else []
        if problems:
            self.send_error(client, ErrorCode.VALIDATION_ERROR, "; ".join(problems),
                            errors=problems)
        room, channel = self.settings.default_room, self.settings.default_channel
        # Its welcome or an identity error may already have cut it off (and announced that):
        # then it joins nothing and is not announced as connected.
        if not client.open:
            return client
        if join_default and room and channel:
            self.join(client, room, channel, created_by=SERVER_SENDER)
            client.room, client.channel = room, channel
        self.emit("client_connected", client_id=client.id, transport=transport,
                  client_type=client.type, peer=peer)
        return client

    def join(self, client: Client, room: str, channel: str, *,
             created_by: str | None = None) -> bool:
        """Subscribe ``client`` to room:channel ('*' wildcards allowed), creating a concrete
        channel that does not exist yet and announcing it; True when it was created.

        A Zgent's inbox is joined only by those who may read it; a wildcard is joined by
        anyone, and filtered for each message at delivery."""
        if not self.access.may_read(client.principal, room, channel):
            self.refuse(client, Action.READ_INBOX, room)
        check_name("room", room, wildcard=True)
        check_name("channel", channel, wildcard=True)
        new = WILDCARD not in (room, channel) and self.router.channel(room, channel) is None
        if new:
            self.create_channel_for(client, room, channel, created_by=created_by)
        self.router.join(client, room, channel)
        return new

    def create_channel_for(self, client: Client, room: str, channel: str, *,
                           created_by: str | None = None) -> Channel:
        """A channel a client brings into being (joining or publishing to it), charged to its
        principal, and announced."""
        self.make_room_for_channel(client)
        creator = created_by or client.id
        try:
            created = self.router.create_channel(room, channel, created_by=creator)
        except RoutingError:
            self.charges.release(client.principal, Quota.CHANNELS)
            raise
        created.owner = client.principal
        self.emit("channel_created", room=room, channel=channel, created_by=creator,
                  **client.principal.log_fields())
        return created

    def make_room_for_channel(self, client: Client) -> None:
        """A client is about to create a channel: within server.max_channels and its
        quotas.channels, or refused (arqond's own publishing is bounded elsewhere)."""
        limit = self.settings.max_channels
        if self.router.channel_count() >= limit:
            self.stats.channels_refused_total += 1
            self.emit("limit_reached", limit="server.max_channels", value=limit,
                      client_id=client.id)
            raise RoutingError(ErrorCode.LIMIT_EXCEEDED, f"server.max_channels ({limit}) "
                               "channels exist already; no more can be created")
        try:
            self.charges.charge(client.principal, Quota.CHANNELS)
        except QuotaExceeded as exc:
            raise RoutingError(ErrorCode.LIMIT_EXCEEDED, str(exc)) from None

    def _quota_refused(self, exc: QuotaExceeded, principal: Principal) -> None:
        self.emit("limit_reached", limit=f"quotas.{exc.quota.value}", value=exc.limit,
                  **principal.log_fields())

    def channel_deleted(self, channel: Channel) -> None:
        if channel.owner is not None:
            self.charges.release(channel.owner, Quota.CHANNELS)
        if self.store is not None:
            self.store.forget(channel.stream)

    def detach(self, client: Client, reason: str = "closed") -> None:
        if self.clients.pop(client.id, None) is None:
            return
        self.charges.release(client.principal, Quota.CONNECTIONS)
        client.open = False
        self.router.drop(client)
        for replay in [r for r in self.replays if r.client is client]:
            replay.stop()
        self.emit("client_disconnected", client_id=client.id, transport=client.transport,
                  reason=reason)

    def plug(self, *, commands: Mapping[str, Command] | None = None,
             on_event: EventListener | None = None, on_message: MessageObserver | None = None,
             intercepts: Mapping[tuple[str, str], Intercept] | None = None,
             inspector: "Casil | None" = None) -> None:
        """Add a part to the Bus: its commands, its listener of bus events, its observer of
        routed messages, the targets it takes over, the content inspector. app.py is the
        only caller, so one place shows everything that plugs into the Bus."""
        self.commands.add(commands or {})
        if on_event is not None:
            self.listeners.append(on_event)
        if on_message is not None:
            self.observers.append(on_message)
        self.intercepts.update(intercepts or {})
        if inspector is not None:
            self.inspector = inspector

    def refuse(self, client: Client, action: Action, zgent: str | None = None) -> NoReturn:
        """Refuse ``action`` to ``client`` under the policy's rule: logged with who it was."""
        refused = Refused(action, self.access.rules[action], zgent)
        self.refused(client.principal, refused, client_id=client.id)
        raise RoutingError(ErrorCode.AUTHORIZATION_ERROR, str(refused))

    def refused(self, principal: Principal, refused: Refused, **fields: Any) -> None:
        """Log a refusal with who it was (UID=, SUB=, and what else the caller knows)."""
        self.emit("access_refused", text=str(refused), **fields, **principal.log_fields())

    def audit(self, principal: Principal, text: str, **fields: Any) -> None:
        """Log an administrative act with who did it (register, serve, webhooks, cron,
        channels created or deleted, ...)."""
        self.emit("audit", text=text, **fields, **principal.log_fields())

    def history_for(self, client: Client, room: str, channel: str | None) -> list[Entry]:
        """What ``client`` may see of room:channel's history (or the whole room's), oldest
        first; nothing for a room or channel that does not exist, as in ArqonBus. A Zgent's
        inbox only for those who may read it, refused when asked for by name."""
        if channel is not None:
            if not self.access.may_read(client.principal, room, channel):
                self.refuse(client, Action.READ_INBOX, room)
            found = self.router.channel(room, channel)
            if found is None:
                return []
            self.complete_history(found)
            return list(found.history)
        room_obj = self.router.rooms.get(room)
        if room_obj is None:
            return []
        for found in room_obj.channels.values():
            self.complete_history(found)
        if self.access.may_read(client.principal, room, INBOX):
            return self.router.entries(room, None)
        inbox = self.router.channel(room, INBOX)
        hidden = {id(entry) for entry in inbox.history} if inbox is not None else set()
        return [entry for entry in self.router.entries(room, None) if id(entry) not in hidden]

    def emit(self, event: str, **fields: Any) -> None:
        for listener in self.listeners:
            listener(event, fields)

    # -- frames out -----------------------------------------------------------------------

    def publish(self, env: dict[str, Any], *, exclude: Client | None = None,
                create: bool = True, then: Callable[[str | None], None] | None = None) -> None:
        """Publish a server-side envelope (FIFO line, narrative line, telemetry...).

        The target channel is created when missing if ``create``. ``then`` hears once the
        message is delivered (None), or why it was not (the store failed).
        """
        env.setdefault("id", None)
        if not env["id"]:
            env["id"] = self.ids.next()
        if not env.get("timestamp"):
            env["timestamp"] = now_iso()
        env.setdefault("type", "event")
        room, channel = env["room"], env.get("channel")
        if channel is not None and create:
            _, created = self.router.ensure_channel(room, channel,
                                                    created_by=env.get("sender") or SERVER_SENDER)
            if created:
                self.emit("channel_created", room=room, channel=channel,
                          created_by=env.get("sender") or SERVER_SENDER)
        self._fanout(env, exclude, then)
        self.observe(env, None)

    def observe(self, env: dict[str, Any], client: Client | None) -> None:
        """Show a routed message to the observers (telemetry activity, webhooks). The message
        is on its way already: an observer that fails is logged and counted, never answered
        to its sender as if the message had failed."""
        for observer in self.observers:
            try:
                observer(env, client)
            except Exception:  # noqa: BLE001 - one observer's bug must not touch the message
                self.internal_error("observer", f"an observer of {env.get('room')}:"
                                    f"{env.get('channel')}")

    def _deliver(self, recipients: Iterable[Client], frame: bytes,
                 exclude: Client | None) -> int:
        delivered = 0
        slow = []
        for client in recipients:
            if client is exclude:
                continue
            if client.sink.send(frame):
                delivered += 1
            else:
                slow.append(client)
        self.stats.deliveries_total += delivered
        for client in slow:
            self.cut_off(client)
        return delivered

    def cut_off(self, client: Client) -> None:
        """A client whose outgoing buffer is full is disconnected, never waited for."""
        if not client.open:
            return
        self.stats.slow_consumers_total += 1
        self.emit("client_slow", client_id=client.id, transport=client.transport)
        client.sink.close(CLOSE_SLOW_CONSUMER, "slow consumer: outgoing buffer full")
        self.detach(client, reason="slow consumer")

    def send(self, client: Client, env: dict[str, Any]) -> None:
        """One frame to one client (replies, errors, welcome)."""
        self.send_frame(client, self.encode(env))

    def send_frame(self, client: Client, frame: bytes) -> None:
        if client.open and not client.sink.send(frame):
            self.cut_off(client)

    def trim_output(self) -> int:
        """server.output_budget_bytes: when what waits for all clients together passes it,
        the largest consumers are cut off first until it holds; returns how many were."""
        budget = self.settings.output_budget_bytes
        waiting = [(client.sink.buffered(), client) for client in self.clients.values()]
        total = sum(size for size, _ in waiting)
        if total <= budget:
            return 0
        waiting.sort(key=lambda item: item[0], reverse=True)
        cut = 0
        for size, client in waiting:
            if total <= budget:
                break
            self.stats.budget_cuts_total += 1
            self.emit("limit_reached", limit="server.output_budget_bytes", value=budget,
                      client_id=client.id)
            self.cut_off(client)
            total -= size
            cut += 1
        return cut

    def encode(self, env: dict[str, Any]) -> bytes:
        """A frame of arqond's own (a reply, an error) as it goes on the wire: given an id
        and a timestamp when it has none."""
        if not env.get("id"):
            env["id"] = self.ids.next()
        env.setdefault("timestamp", now_iso())
        return serialize(env)

    def send_error(self, client: Client, code: str, message: str, *,
                   request_id: str | None = None, errors: list[str] | None = None) -> None:
        self.stats.errors_total += 1
        self.send(client, error_frame(code, message, request_id=request_id, errors=errors))

    # -- introspection ------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        by_type: dict[str, int] = {}
        for client in self.clients.values():
            by_type[client.type] = by_type.get(client.type, 0) + 1
        return {
            "service": "arqonbus",
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "uptime_seconds": round(time.time() - self.started, 3),
            "connections": {"active": len(self.clients),
                            "total": self.stats.connections_total,
                            "by_transport": dict(self.stats.by_transport),
                            "by_type": by_type},
            "rooms": len(self.router.rooms),
            "channels": self.router.channel_count(),
            "messages": {"total": self.stats.messages_total,
                         "deliveries": self.stats.deliveries_total,
                         "commands": self.stats.commands_total,
                         "errors": self.stats.errors_total,
                         "policy_blocks": self.stats.policy_blocks_total,
                         "slow_consumers": self.stats.slow_consumers_total},
        }
