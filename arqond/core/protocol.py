"""ArqonBus frame semantics: what each inbound frame means and what is answered.

``ArqonProtocol`` is the half of the Bus that reads frames: validation, content inspection,
routing of messages, private, system and telemetry frames, commands and their two-frame
replies. It decides and returns replies; the delivery engine (arqond/core/bus.py) carries
them out. Connections call ``receive``; request/response surfaces that have no connection
(an HTTP POST) call ``publish_as`` and get the reply back instead.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from arqond import PROTOCOL_VERSION
from arqond.core import envelope as envelopes
from arqond.core.access import Refused
from arqond.core.clients import Client
from arqond.core.commands import CommandContext, CommandError
from arqond.core.envelope import SERVER_SENDER, EnvelopeError, now_iso, serialize
from arqond.core.errors import ErrorCode
from arqond.core.router import RoutingError, check_name, split_target

if TYPE_CHECKING:
    from arqond.core.bus import Bus
    from arqond.core.casil import Verdict

TELEMETRY_TARGET = ("integriguard", "telemetry-stream")
# Frame types that content inspection (CASIL) looks at.
INSPECTED_TYPES = frozenset({"message", "event", "command"})
PM_CHANNEL = "pm"
# What a client is told when arqond itself failed on its frame; the log has the traceback.
INTERNAL_ERROR_TEXT = ("internal error in arqond while handling this frame; it was logged, "
                       "and the connection stays open")
Reply = dict[str, Any]
# Where a reply that comes later goes (the ack of a message, once it is stored).
Respond = Callable[[Reply], None]


def error_frame(code: str, message: str, *, request_id: str | None = None,
                errors: list[str] | None = None) -> Reply:
    return {"type": "error", "sender": SERVER_SENDER, "error": message, "error_code": code,
            "request_id": request_id, "payload": {"errors": errors or [message]}}


def ack_frame(env: dict[str, Any]) -> Reply:
    """The acknowledgement of a message; its metadata says where it stands in its stream
    (seq, epoch) when it went into one."""
    ack = {"id": env["id"], "type": "message_response", "sender": SERVER_SENDER,
           "payload": env.get("payload")}
    metadata = env.get("metadata")
    if metadata and "seq" in metadata:
        ack["metadata"] = {"seq": metadata["seq"], "epoch": metadata["epoch"]}
    return ack


class ArqonProtocol:
    """Mixed into Bus; every method runs synchronously and never waits on a client."""

    # -- frames in --------------------------------------------------------------------------

    def receive(self: "Bus", client: Client, raw: str | bytes) -> None:
        client.last_active = time.time()
        try:
            env = envelopes.parse(raw, self.settings.max_json_depth)
        except EnvelopeError as exc:
            self.send_error(client, exc.code, exc.message, request_id=exc.request_id,
                            errors=exc.errors)
            return
        try:
            self.handle(client, env)
        except Exception:  # noqa: BLE001 - one frame's failure must not end the connection
            self.internal_error(client.transport, f"a {env['type']} frame", client,
                                request_id=env.get("id"))

    def internal_error(self: "Bus", component: str, where: str, client: Client | None = None,
                       *, request_id: str | None = None) -> None:
        """A failure inside arqond (a bug) while handling one record, reported from the
        ``except`` block that caught it: the ``internal_error`` event (app.py logs it with
        the traceback and counts it by component) and, to a client, an INTERNAL_ERROR frame.
        The record is lost; the connection and everyone else carry on."""
        self.emit("internal_error", component=component, where=where,
                  client_id=client.id if client is not None else None)
        if client is not None and client.open:
            self.send_error(client, ErrorCode.INTERNAL_ERROR, INTERNAL_ERROR_TEXT,
                            request_id=request_id)

    def reject(self: "Bus", client: Client, code: str, message: str) -> None:
        """A frame the transport could not even hand over (binary, oversize, ...)."""
        self.send_error(client, code, message)

    def handle(self: "Bus", client: Client, env: dict[str, Any]) -> None:
        """Dispatch one validated envelope from a connected client; the reply goes to it."""
        def respond(reply: Reply) -> None:
            self.send(client, reply)
        reply = self._dispatch(client, env, respond)
        if reply is not None:
            respond(reply)

    def publish_as(self: "Bus", sender: Client, env: dict[str, Any], respond: Respond) -> None:
        """Route one validated message or event for a sender that is not a connection (an
        HTTP POST), under the same rules as a client's frame. The reply (the ack once the
        message is stored, or the error) goes to ``respond``, at once or later; nothing
        counts as a connection."""
        if env["type"] not in ("message", "event"):
            raise ValueError(f"publish_as routes messages and events, not {env['type']!r}")
        reply = self._dispatch(sender, env, respond)
        if reply is not None:
            respond(reply)

    def _dispatch(self: "Bus", client: Client, env: dict[str, Any],
                  respond: Respond) -> Reply | None:
        """The reply to ``env`` when it is known at once, else None: then ``respond`` gets
        it (a message's ack once the message is stored)."""
        if not env.get("id"):
            env["id"] = self.ids.next()
        if not env.get("timestamp"):
            env["timestamp"] = now_iso()
        env["version"] = PROTOCOL_VERSION
        env["sender"] = client.id
        metadata = env.get("metadata")
        if metadata and ("seq" in metadata or "epoch" in metadata):
            # arqond's to set (a stream's numbering); a client's own would be taken for it
            # where no stream sets them (a private message, a whole room).
            env["metadata"] = {k: v for k, v in metadata.items() if k not in ("seq", "epoch")}
        kind = env["type"]
        try:
            inspector = self.inspector
            if inspector is not None and inspector.enabled and kind in INSPECTED_TYPES:
                refusal = self._inspect(client, env)
                if refusal is not None:
                    return refusal
            if kind in ("message", "event"):
                return self._route(client, env, respond)
            if kind == "command":
                self._command(client, env)
            elif kind == "private":
                return self._private(client, env)
            elif kind == "system":
                return self._system(client, env, respond)
            elif kind == "telemetry":
                self._telemetry(client, env)
            # "response" and "error" frames from clients have no addressee; ignored as
            # ArqonBus does.
            return None
        except RoutingError as exc:
            self.stats.errors_total += 1
            return error_frame(exc.code, exc.message, request_id=env["id"])

    def _inspect(self: "Bus", client: Client, env: dict[str, Any]) -> Reply | None:
        """Apply the inspector's verdict; the refusal to answer when the frame is blocked."""
        if env["type"] != "command":  # a message is inspected at the target it will reach
            env["room"], env["channel"] = self._target(client, env)
        verdict = self.screen(env, client.id)
        if verdict is None:
            return None
        if verdict.blocked:
            self.stats.errors_total += 1
            return {"type": "error", "sender": SERVER_SENDER, "request_id": env["id"],
                    "error": "CASIL blocked message", "error_code": verdict.reason,
                    "payload": {"reason": verdict.reason},
                    "room": env.get("room"), "channel": env.get("channel")}
        if verdict.replace_payload:
            env["payload"] = verdict.payload
        if verdict.metadata is not None:
            env["metadata"] = {**(env.get("metadata") or {}), "casil": verdict.metadata}
        return None

    def screen(self: "Bus", env: dict[str, Any], client_id: str) -> "Verdict | None":
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

    # -- routing ----------------------------------------------------------------------------

    def _target(self: "Bus", client: Client,
                env: dict[str, Any]) -> tuple[str | None, str | None]:
        """room:channel as named (explicit, "room:channel" in either field, or the client's
        current room), checked as names; the room is None when nothing names one."""
        room, channel = split_target(env.get("room"), env.get("channel"))
        if room is None:
            if channel is None:
                room, channel = client.room, client.channel
            else:
                room = client.room
        if room is not None:
            check_name("room", room)
        if channel is not None:
            check_name("channel", channel)
        return room, channel

    def _reachable(self: "Bus", client: Client, room: str | None, channel: str | None) -> bool:
        """Whether a message to room:channel goes anywhere: a channel nobody created yet is
        created for its first publisher (as in ArqonBus, within the publisher's quotas); a
        message that names no room, or a whole room that does not exist, goes nowhere and is
        still acknowledged, as ArqonBus does."""
        if room is None:
            return False
        if channel is None:
            return room in self.router.rooms
        # An intercepted target (moo:broadcast) is served even before it has a channel.
        if channel != PM_CHANNEL and (room, channel) not in self.intercepts \
                and self.router.channel(room, channel) is None:
            self.create_channel_for(client, room, channel)
        return True

    def _checked_target(self: "Bus", client: Client,
                        env: dict[str, Any]) -> tuple[str | None, str | None]:
        """The target of a client's frame, which it may publish to (or a refusal)."""
        room, channel = self._target(client, env)
        env["room"], env["channel"] = room, channel
        if room is not None:
            try:
                self.access.check_publish(client.principal, room, channel)
            except Refused as refused:
                self.refuse(client, refused.action, refused.zgent)
        return room, channel

    def _route(self: "Bus", client: Client, env: dict[str, Any],
               respond: Respond) -> Reply | None:
        room, channel = self._checked_target(client, env)
        if channel == PM_CHANNEL:
            return self._private(client, env)
        if not self._reachable(client, room, channel):
            self.stats.unrouted_total += 1
            return ack_frame(env)
        intercept = self.intercepts.get((room, channel))
        if intercept is not None:
            intercept(client, env)
            return ack_frame(env)
        self._fanout(env, client, self._acknowledge(env, respond))
        self.observe(env, client)
        return None

    def _acknowledge(self: "Bus", env: dict[str, Any],
                     respond: Respond) -> Callable[[str | None], None]:
        """What answers a message once it is delivered: its ack, or why it was not."""
        def done(refused: str | None) -> None:
            if refused is not None:
                respond(error_frame(ErrorCode.STORE_FAILED, refused, request_id=env["id"]))
                return
            ack = ack_frame(env)
            if "metadata" in ack:   # the truth about it: kept in a store, or in memory only
                ack["metadata"]["stored"] = self.store is not None
            respond(ack)
        return done

    def _private(self: "Bus", client: Client, env: dict[str, Any]) -> Reply:
        payload = env.get("payload")
        targets = payload.get("target") if isinstance(payload, dict) else None
        targets = targets or env.get("to_client")
        if isinstance(targets, str):
            targets = [targets]
        if not targets or not isinstance(targets, list) or \
                not all(isinstance(t, str) for t in targets):
            raise RoutingError(ErrorCode.VALIDATION_ERROR, "a private message needs "
                               "payload.target or to_client: a client id or a list of "
                               "client ids")
        missing = [t for t in targets if t not in self.clients]
        # Clients of other nodes of a cluster: their node delivers (arqond/cluster).
        elsewhere = self.cluster.whereabouts(missing) if missing and self.cluster else {}
        missing = [t for t in missing if t not in elsewhere]
        if missing:
            raise RoutingError(ErrorCode.TARGET_NOT_FOUND,
                               f"no connected client with id {', '.join(missing)}")
        env["type"] = "private"
        recipients = {self.clients[t]: None for t in targets if t not in elsewhere}
        frame = serialize(env)
        self.stats.messages_total += 1
        self._deliver(recipients, frame, exclude=client)
        if elsewhere:
            self.cluster.send_private(frame, elsewhere)
        return ack_frame(env)

    def _system(self: "Bus", client: Client, env: dict[str, Any],
                respond: Respond) -> Reply | None:
        if not client.admin:
            raise RoutingError(ErrorCode.AUTHORIZATION_ERROR, "only arqond itself and admin "
                               "clients may send system messages")
        if env.get("room") or env.get("channel"):
            room, channel = self._checked_target(client, env)
            if self._reachable(client, room, channel):
                self._fanout(env, client, self._acknowledge(env, respond))
                return None
        else:  # to every client: a Zgent's inbox traffic never travels this way
            self.stats.messages_total += 1
            self._deliver(self.clients.values(), serialize(env), exclude=client)
        return ack_frame(env)

    def _telemetry(self: "Bus", client: Client, env: dict[str, Any]) -> None:
        if not env.get("room") and not env.get("channel"):
            env["room"], env["channel"] = TELEMETRY_TARGET
            self.router.ensure_channel(*TELEMETRY_TARGET, kind="system")
        room, channel = self._checked_target(client, env)
        if self._reachable(client, room, channel):
            self._fanout(env, client, None)

    # -- commands ---------------------------------------------------------------------------

    def _command(self: "Bus", client: Client, env: dict[str, Any]) -> None:
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

    def _command_done(self: "Bus", context: CommandContext, done: Any) -> None:
        # A callback of the loop: no adapter is on the stack to catch what fails here.
        try:
            self._command_completed(context, done)
        except Exception:  # noqa: BLE001 - the client still gets its answer
            self.internal_error(context.client.transport, f"the reply to {context.name}",
                                context.client, request_id=context.envelope["id"])

    def _command_completed(self: "Bus", context: CommandContext, done: Any) -> None:
        if done.cancelled():
            self._command_reply(context, error=CommandError(ErrorCode.EXECUTION_ERROR,
                                                            "cancelled"))
            return
        exc = done.exception()
        if isinstance(exc, CommandError):
            self._command_reply(context, error=exc)
        elif exc is not None:
            self._command_reply(context, error=CommandError(ErrorCode.EXECUTION_ERROR,
                                                            f"Execution error: {exc}"))
        else:
            self._command_reply(context, result=done.result())

    def _command_reply(self: "Bus", context: CommandContext, *, result: Any = None,
                       error: CommandError | None = None) -> None:
        """A ``response`` frame, then the legacy ``command_response`` ack, as ArqonBus sends
        them (wire facts: every command gets both, even when it failed). A command in the
        legacy shape (payload.command) is answered first with a ``message`` frame of the same
        content instead: ArqonBus answers its built-in commands with a ``message``, and the
        clients and tests written against it (its load test, its end-to-end tests) accept
        only ``message``, ``command_response`` or ``error`` there."""
        client, env = context.client, context.envelope
        if not client.open:
            return
        legacy = not env.get("command")
        response: Reply = {"type": "message" if legacy else "response",
                           "sender": SERVER_SENDER, "request_id": env["id"],
                           "command": context.name}
        if error is None:
            message, data = result
            response.update(status="success", payload={"message": message, "data": data})
            frame = self.encode(response)
            # An answer too large for the client's buffer to take in one piece is refused:
            # asking too much never makes a slow consumer.
            limit = self.settings.client_buffer_bytes // 2
            if len(frame) > limit:
                self.stats.replies_too_large_total += 1
                self.emit("limit_reached", limit="server.client_buffer_bytes",
                          value=limit * 2, client_id=client.id)
                error = CommandError(ErrorCode.LIMIT_EXCEEDED, (
                    f"the reply would be {len(frame)} bytes, more than half of "
                    f"server.client_buffer_bytes ({limit * 2}); ask for less (limit, offset)"))
        if error is not None:
            self.stats.errors_total += 1
            response.update(status="error", error=error.message, error_code=error.code,
                            payload={"message": error.message, "data": error.data})
            frame = self.encode(response)
        self.send_frame(client, frame)
        payload = env.get("payload")
        ack = {"id": env["id"], "type": "command_response", "sender": SERVER_SENDER,
               "payload": {"result": "ok"}, "request_id": env["id"]}
        if not (isinstance(payload, dict) and payload):
            ack["command"] = context.name
        else:
            ack["command"] = payload.get("command")
        self.send(client, ack)
        if error is None:
            for then in context.after_reply:
                then()
