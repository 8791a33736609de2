"""The Bus: the object every transport talks to, and its delivery engine.

Transports call ``attach`` when a client connects, ``receive`` with each text frame and
``detach`` when it goes; server-side producers (FIFOs, the narrative tailer) call ``publish``.
What a frame means is arqond/core/protocol.py's part of the Bus; this module holds clients,
joins, fan-out and delivery. Everything the Bus has to say goes out through each client's Sink,
synchronously and without waiting, so one slow reader can never hold up a fan-out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from arqond import PROTOCOL_VERSION, __version__
from arqond.core.clients import CLOSE_SLOW_CONSUMER, Client, Sink
from arqond.core.commands import Command, CommandRegistry, builtin_commands
from arqond.core.envelope import SERVER_SENDER, IdGenerator, now_iso, serialize
from arqond.core.errors import ErrorCode
from arqond.core.protocol import ArqonProtocol, error_frame
from arqond.core.router import Router

if TYPE_CHECKING:
    from arqond.core.casil import Casil

SCIENCE_ROOM = "science"
SCIENCE_CHANNELS = ("general", "explore", "hypothesize", "design", "execute", "interpret", "share")


@dataclass
class BusSettings:
    default_room: str | None = "science"
    default_channel: str | None = "general"
    history_size: int = 500
    history_default_limit: int = 50
    max_json_depth: int = 64


@dataclass
class Stats:
    connections_total: int = 0
    messages_total: int = 0
    deliveries_total: int = 0
    commands_total: int = 0
    errors_total: int = 0
    slow_consumers_total: int = 0
    policy_blocks_total: int = 0
    by_transport: dict[str, int] = field(default_factory=dict)


# A listener hears notable events: ("client_connected", {...}), ("channel_created", {...}), ...
EventListener = Callable[[str, dict[str, Any]], None]
# An observer sees every envelope routed on behalf of a client (None for server publishes).
MessageObserver = Callable[[dict[str, Any], "Client | None"], None]
# An intercept takes over client messages to one room:channel instead of routing them (the
# broadcast log appends before publishing); it raises RoutingError to refuse one.
Intercept = Callable[["Client", dict[str, Any]], None]


class Bus(ArqonProtocol):
    def __init__(self, settings: BusSettings | None = None, router: Router | None = None) -> None:
        self.settings = settings or BusSettings()
        self.router = router or Router(self.settings.history_size)
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
        for name in SCIENCE_CHANNELS:
            self.router.ensure_channel(SCIENCE_ROOM, name, kind="general", hardcoded=True)

    # -- life cycle of a client --------------------------------------------------------

    def attach(self, sink: Sink, transport: str, *, admin: bool = False,
               claims: dict[str, Any] | None = None, identity: dict[str, Any] | None = None,
               peer: str = "", welcome: bool = True, join_default: bool = True) -> Client:
        """Register a new client, send its welcome frame and join it to the default channel.

        Transports with their own framing (an HTTP stream, a JSON-RPC socket) may skip the
        welcome frame or the default channel.
        """
        client = Client(sink, transport, admin=admin, claims=claims, peer=peer)
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
        if join_default and room and channel:
            self.join(client, room, channel, created_by=SERVER_SENDER)
            client.room, client.channel = room, channel
        self.emit("client_connected", client_id=client.id, transport=transport,
                  client_type=client.type, peer=peer)
        return client

    def join(self, client: Client, room: str, channel: str, *,
             created_by: str | None = None) -> bool:
        """Subscribe ``client`` to room:channel ('*' wildcards allowed), creating a concrete
        channel that does not exist yet and announcing it; True when it was created."""
        creator = created_by or client.id
        created = self.router.join(client, room, channel, created_by=creator)
        if created:
            self.emit("channel_created", room=room, channel=channel, created_by=creator)
        return created

    def detach(self, client: Client, reason: str = "closed") -> None:
        if self.clients.pop(client.id, None) is None:
            return
        client.open = False
        self.router.drop(client)
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

    def emit(self, event: str, **fields: Any) -> None:
        for listener in self.listeners:
            listener(event, fields)

    # -- frames out -----------------------------------------------------------------------

    def publish(self, env: dict[str, Any], *, exclude: Client | None = None,
                create: bool = True) -> int:
        """Publish a server-side envelope (FIFO line, narrative line, telemetry...).

        The target channel is created when missing if ``create``; returns the delivery count.
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
        recipients = self.router.recipients(room, channel)
        delivered = self._fanout(env, recipients, exclude=exclude)
        for observer in self.observers:
            observer(env, None)
        return delivered

    def _fanout(self, env: dict[str, Any], recipients: Iterable[Client],
                exclude: Client | None) -> int:
        """Record and deliver one routed envelope: serialized once, pushed to every sink.

        Serialized before it is recorded, so history never holds what cannot be sent.
        """
        frame = serialize(env)
        self.stats.messages_total += 1
        self.router.record(env["room"], env.get("channel"), env)
        return self._deliver(recipients, frame, exclude)

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
        if client.open and not client.sink.send(self.encode(env)):
            self.cut_off(client)

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
