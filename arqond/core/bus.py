"""The Bus: the protocol object every transport talks to.

Transports call ``attach`` when a client connects, ``receive`` with each text frame and
``detach`` when it goes; server-side producers (FIFOs, the narrative tailer) call ``publish``.
Everything the Bus has to say goes out through each client's Sink, synchronously and without
waiting, so one slow reader can never hold up a fan-out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from arqond import PROTOCOL_VERSION, __version__
from arqond.core import envelope as envelopes
from arqond.core.clients import CLOSE_SLOW_CONSUMER, Client, Sink
from arqond.core.commands import (Command, CommandContext, CommandError, CommandRegistry,
                                  builtin_commands)
from arqond.core.envelope import SERVER_SENDER, EnvelopeError, IdGenerator, now_iso, serialize
from arqond.core.errors import ErrorCode
from arqond.core.router import Router, RoutingError, check_name, split_target

if TYPE_CHECKING:
    from arqond.core.casil import Casil, Verdict

SCIENCE_ROOM = "science"
SCIENCE_CHANNELS = ("general", "explore", "hypothesize", "design", "execute", "interpret", "share")
TELEMETRY_TARGET = ("integriguard", "telemetry-stream")
# Frame types that content inspection (CASIL) looks at.
INSPECTED_TYPES = frozenset({"message", "event", "command"})
PM_CHANNEL = "pm"


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


class Bus:
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
            self.router.join(client, room, channel, created_by=SERVER_SENDER)
            client.room, client.channel = room, channel
        self.emit("client_connected", client_id=client.id, transport=transport,
                  client_type=client.type, peer=peer)
        return client

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

    # -- frames in ------------------------------------------------------------------------

    def receive(self, client: Client, raw: str | bytes) -> None:
        client.last_active = time.time()
        try:
            env = envelopes.parse(raw, self.settings.max_json_depth)
        except EnvelopeError as exc:
            self.send_error(client, exc.code, exc.message, request_id=exc.request_id,
                            errors=exc.errors)
            return
        self.handle(client, env)

    def reject(self, client: Client, code: str, message: str) -> None:
        """A frame the transport could not even hand over (binary, oversize, ...)."""
        self.send_error(client, code, message)

    def handle(self, client: Client, env: dict[str, Any]) -> None:
        """Dispatch one validated envelope from a client."""
        if not env.get("id"):
            env["id"] = self.ids.next()
        if not env.get("timestamp"):
            env["timestamp"] = now_iso()
        env["version"] = PROTOCOL_VERSION
        env["sender"] = client.id
        kind = env["type"]
        try:
            inspector = self.inspector
            if inspector is not None and inspector.enabled and kind in INSPECTED_TYPES \
                    and not self._inspect(client, env):
                return
            if kind in ("message", "event"):
                self._route(client, env)
            elif kind == "command":
                self._command(client, env)
            elif kind == "private":
                self._private(client, env)
            elif kind == "system":
                self._system(client, env)
            elif kind == "telemetry":
                self._telemetry(client, env)
            # "response" and "error" frames from clients have no addressee; ignored as ArqonBus
            # does.
        except RoutingError as exc:
            self.send_error(client, exc.code, exc.message, request_id=env["id"])

    def _inspect(self, client: Client, env: dict[str, Any]) -> bool:
        """Apply the inspector's verdict; False when the frame is refused (nothing routed)."""
        if env["type"] != "command":  # a message is inspected at the target it will reach
            env["room"], env["channel"] = self._target(client, env)
        verdict = self.screen(env, client.id)
        if verdict is None:
            return True
        if verdict.blocked:
            self.stats.errors_total += 1
            self.send(client, {"type": "error", "sender": SERVER_SENDER, "request_id": env["id"],
                               "error": "CASIL blocked message", "error_code": verdict.reason,
                               "payload": {"reason": verdict.reason},
                               "room": env.get("room"), "channel": env.get("channel")})
            return False
        if verdict.replace_payload:
            env["payload"] = verdict.payload
        if verdict.metadata is not None:
            env["metadata"] = {**(env.get("metadata") or {}), "casil": verdict.metadata}
        return True

    def screen(self, env: dict[str, Any], client_id: str) -> "Verdict | None":
        """The inspector's verdict on ``env`` (None if not inspected), its events emitted.

        Commands that publish later on a client's behalf (op.cron) screen their payload too.
        """
        inspector = self.inspector
        if inspector is None or not inspector.enabled:
            return None
        verdict = inspector.inspect(env, client_id)
        if verdict is not None:
            for event, fields in verdict.events:
                self.emit(event, **fields)
            if verdict.blocked:
                self.stats.policy_blocks_total += 1
        return verdict

    def _target(self, client: Client, env: dict[str, Any]) -> tuple[str, str | None]:
        room, channel = split_target(env.get("room"), env.get("channel"))
        if room is None:
            if channel is None:
                room, channel = client.room, client.channel
            else:
                room = client.room
        if room is None:
            raise RoutingError(ErrorCode.VALIDATION_ERROR,
                               "the message names no room and the client has no current room; "
                               "set room (or \"room:channel\") or join a channel first")
        check_name("room", room)
        if channel is not None:
            check_name("channel", channel)
            # An intercepted target (moo:broadcast) is served even before it has a channel.
            if channel != PM_CHANNEL and (room, channel) not in self.intercepts:
                self.router.require_channel(room, channel)
        else:
            self.router.require_room(room)
        return room, channel

    def _route(self, client: Client, env: dict[str, Any]) -> None:
        room, channel = self._target(client, env)
        if channel == PM_CHANNEL:
            self._private(client, env)
            return
        env["room"], env["channel"] = room, channel
        intercept = self.intercepts.get((room, channel))
        if intercept is not None:
            intercept(client, env)
            self._ack(client, env)
            return
        self._fanout(env, self.router.recipients(room, channel), exclude=client)
        self._ack(client, env)
        for observer in self.observers:
            observer(env, client)

    def _private(self, client: Client, env: dict[str, Any]) -> None:
        payload = env.get("payload")
        targets = payload.get("target") if isinstance(payload, dict) else None
        targets = targets or env.get("to_client")
        if isinstance(targets, str):
            targets = [targets]
        if not targets or not all(isinstance(t, str) for t in targets):
            raise RoutingError(ErrorCode.VALIDATION_ERROR,
                               "a private message needs payload.target or "
                               "to_client: a client id or a list of client ids")
        missing = [t for t in targets if t not in self.clients]
        if missing:
            raise RoutingError(ErrorCode.TARGET_NOT_FOUND,
                               f"no connected client with id {', '.join(missing)}")
        env["type"] = "private"
        recipients = {self.clients[t]: None for t in targets}
        frame = serialize(env)
        self.stats.messages_total += 1
        self._deliver(recipients, frame, exclude=client)
        self._ack(client, env)

    def _system(self, client: Client, env: dict[str, Any]) -> None:
        if not client.admin:
            raise RoutingError(ErrorCode.AUTHORIZATION_ERROR,
                               "only arqond itself and admin clients "
                               "may send system messages")
        if env.get("room") or env.get("channel"):
            room, channel = self._target(client, env)
            env["room"], env["channel"] = room, channel
            self._fanout(env, self.router.recipients(room, channel), exclude=client)
        else:
            self.stats.messages_total += 1
            self._deliver(self.clients.values(), serialize(env), exclude=client)
        self._ack(client, env)

    def _telemetry(self, client: Client, env: dict[str, Any]) -> None:
        if not env.get("room") and not env.get("channel"):
            env["room"], env["channel"] = TELEMETRY_TARGET
            self.router.ensure_channel(*TELEMETRY_TARGET, kind="system")
        room, channel = self._target(client, env)
        env["room"], env["channel"] = room, channel
        self._fanout(env, self.router.recipients(room, channel), exclude=client)

    def _command(self, client: Client, env: dict[str, Any]) -> None:
        name, args = envelopes.command_of(env)
        self.stats.commands_total += 1
        context = CommandContext(self, client, env, name, args)
        try:
            result = self.commands.run(context)
        except CommandError as exc:
            self._command_reply(context, error=exc)
            return
        if callable(getattr(result, "add_done_callback", None)):
            result.add_done_callback(lambda done: self._command_done(context, done))
        else:
            self._command_reply(context, result=result)

    def _command_done(self, context: CommandContext, done: Any) -> None:
        if done.cancelled():
            self._command_reply(context, error=CommandError(ErrorCode.EXECUTION_ERROR, "cancelled"))
            return
        exc = done.exception()
        if isinstance(exc, CommandError):
            self._command_reply(context, error=exc)
        elif exc is not None:
            self._command_reply(context, error=CommandError(ErrorCode.EXECUTION_ERROR,
                                                            f"Execution error: {exc}"))
        else:
            self._command_reply(context, result=done.result())

    def _command_reply(self, context: CommandContext, *, result: Any = None,
                       error: CommandError | None = None) -> None:
        client, env = context.client, context.envelope
        if not client.open:
            return
        response: dict[str, Any] = {"type": "response", "sender": SERVER_SENDER,
                                    "request_id": env["id"], "command": context.name}
        if error is None:
            message, data = result
            response.update(status="success", payload={"message": message, "data": data})
        else:
            self.stats.errors_total += 1
            response.update(status="error", error=error.message, error_code=error.code,
                            payload={"message": error.message, "data": error.data})
        self.send(client, response)
        payload = env.get("payload")
        ack = {"id": env["id"], "type": "command_response", "sender": SERVER_SENDER,
               "payload": {"result": "ok"}, "request_id": env["id"]}
        if not (isinstance(payload, dict) and payload):
            ack["command"] = context.name
        else:
            ack["command"] = payload.get("command")
        self.send(client, ack)

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
        env.setdefault("id", None)
        if not env["id"]:
            env["id"] = self.ids.next()
        env.setdefault("timestamp", now_iso())
        if client.open and not client.sink.send(serialize(env)):
            self.cut_off(client)

    def send_error(self, client: Client, code: str, message: str, *,
                   request_id: str | None = None, errors: list[str] | None = None) -> None:
        self.stats.errors_total += 1
        self.send(client, {"type": "error", "sender": SERVER_SENDER, "error": message,
                           "error_code": code, "request_id": request_id,
                           "payload": {"errors": errors or [message]}})

    def _ack(self, client: Client, env: dict[str, Any]) -> None:
        self.send(client, {"id": env["id"], "type": "message_response", "sender": SERVER_SENDER,
                           "payload": env.get("payload")})

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
