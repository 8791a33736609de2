"""Command dispatch and the built-in commands.

A handler takes a CommandContext and returns ``(message, data)``, or raises CommandError; it may
instead return a future-like object (``add_done_callback``) whose result is that pair, for
commands whose answer comes later (a Zgent handler's reply, for instance). Other layers add
their commands with ``CommandRegistry.register``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

from arqond import __version__
from arqond.core.access import Action
from arqond.core.envelope import iso_at, json_type, now_iso
from arqond.core.history import Entry
from arqond.core.errors import ErrorCode
from arqond.core.router import RoutingError, split_target
from arqond.core.streams import Retention, check_since

if TYPE_CHECKING:
    from arqond.core.bus import Bus
    from arqond.core.clients import Client

HISTORY_GET_MAX = 1000
# Channels in one list_channels reply: about 300 bytes each, well inside any client's buffer.
LIST_CHANNELS_PAGE = 1000
HISTORY_REPLAY_MAX = 5000


class CommandError(Exception):
    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data or {}


@dataclass
class CommandContext:
    bus: "Bus"
    client: "Client"
    envelope: dict[str, Any]
    name: str
    args: dict[str, Any]
    # What runs once the reply is sent (a resumed join's replay follows its response).
    after_reply: list[Callable[[], None]] = field(default_factory=list)

    def arg(self, key: str, kind: type | tuple[type, ...], default: Any = None, *,
            required: bool = False) -> Any:
        value = self.args.get(key)
        if value is None:
            if required:
                raise CommandError(ErrorCode.VALIDATION_ERROR,
                                   f"{self.name} requires argument {key!r}")
            return default
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            expected = kind.__name__ if isinstance(kind, type) else "/".join(
                k.__name__ for k in kind)
            raise CommandError(ErrorCode.VALIDATION_ERROR,
                               f"argument {key!r} must be {expected}, not {json_type(value)}")
        return value

    def limit(self, default: int, maximum: int) -> int:
        value = self.arg("limit", int, default)
        if not 0 < value <= maximum:
            raise CommandError(ErrorCode.VALIDATION_ERROR, f"limit must be between 1 and {maximum}")
        return value

    def target(self, *, channel_required: bool) -> tuple[str, str | None]:
        """room/channel from args: {room, channel}, "room:channel" in either, or the current."""
        room = self.arg("room", str)
        channel = self.arg("channel", str) or self.arg("name", str)
        room, channel = split_target(room, channel)
        if room is None:
            room = self.client.room
            if channel is None and channel_required:
                channel = self.client.channel
        if room is None or (channel_required and channel is None):
            raise CommandError(ErrorCode.VALIDATION_ERROR, f"{self.name} requires room and channel "
                               "(as {\"room\": R, \"channel\": C} or \"R:C\")")
        return room, channel

    def require(self, action: Action, zgent: str | None = None) -> None:
        """Refused (AUTHORIZATION_ERROR naming the rule, logged) unless this client's
        principal may ``action`` (arqond/core/access.py)."""
        if not self.bus.access.allows(self.client.principal, action, zgent):
            self.bus.refuse(self.client, action, zgent)

    def require_admin(self) -> None:
        if not self.client.admin:
            raise CommandError(ErrorCode.AUTHORIZATION_ERROR,
                               f"{self.name} is for admin clients only")


def owned_item(ctx: CommandContext, table: dict[str, Any], id_arg: str, what: str,
               action: str) -> tuple[str, Any]:
    """The item named by argument ``id_arg`` in ``table``, if this client may ``action`` it:
    its owner or an admin (items carry an ``owner`` client id)."""
    item_id = ctx.arg(id_arg, str, required=True)
    item = table.get(item_id)
    if item is None:
        raise CommandError(ErrorCode.NOT_FOUND, f"no {what} {item_id!r}", {id_arg: item_id})
    if item.owner != ctx.client.id and not ctx.client.admin:
        raise CommandError(ErrorCode.AUTHORIZATION_ERROR,
                           f"only the {what}'s owner or an admin may {action} it")
    return item_id, item


class Later:
    """A command's reply that comes later (a read that waits for a message), as the core
    makes it without an event loop: what ``ArqonProtocol`` waits on, like an asyncio task."""

    def __init__(self) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._done = False
        self._callbacks: list[Callable[["Later"], None]] = []

    def add_done_callback(self, callback: Callable[["Later"], None]) -> None:
        if self._done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._value, self._error, self._done = value, error, True
        for callback in self._callbacks:
            callback(self)

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def exception(self) -> BaseException | None:
        return self._error

    def result(self) -> Any:
        return self._value


Handler = Callable[[CommandContext], Any]


class Command(NamedTuple):
    handler: Handler
    admin: bool
    summary: str


class CommandRegistry:
    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def register(self, name: str, handler: Handler, *, admin: bool = False,
                 summary: str = "") -> None:
        self._commands[name] = Command(handler, admin, summary)

    def add(self, commands: Mapping[str, Command]) -> None:
        self._commands.update(commands)

    def names(self) -> list[str]:
        return sorted(self._commands)

    def describe(self) -> list[dict[str, Any]]:
        return [{"command": name, "admin": cmd.admin, "summary": cmd.summary}
                for name, cmd in sorted(self._commands.items())]

    def run(self, context: CommandContext) -> Any:
        command = self._commands.get(context.name)
        if command is None:
            raise CommandError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {context.name!r}; "
                               "the help command lists them")
        if command.admin:
            context.require_admin()
        try:
            return command.handler(context)
        except RoutingError as exc:
            raise CommandError(exc.code, exc.message) from None


# -- the built-in commands -----------------------------------------------------------------

def _status(ctx: CommandContext) -> tuple[str, dict[str, Any]]:
    data = ctx.bus.snapshot()
    data["server"] = {"status": "running", "uptime": data["uptime_seconds"],
                      "version": __version__}
    data["client"] = ctx.client.describe()
    if ctx.bus.cluster is not None:
        data["cluster"] = ctx.bus.cluster.describe()
    return "Server status", data


def _ping(ctx: CommandContext) -> tuple[str, dict[str, Any]]:
    return "pong", {"pong": True, "client_id": ctx.client.id, "timestamp": now_iso()}


def _create_channel(ctx: CommandContext) -> tuple[str, dict[str, Any]]:
    """Create room:channel; ``retention`` ({"messages", "bytes", "age"}, each optional) is
    what its stream keeps instead of the [streams] defaults."""
    room, channel = ctx.target(channel_required=True)
    kind = ctx.arg("type", str, "general")
    description = ctx.arg("description", str, "")
    try:
        retention = Retention.of(ctx.args.get("retention"), ctx.bus.router.retention)
    except ValueError as exc:
        raise CommandError(ErrorCode.VALIDATION_ERROR, str(exc)) from None
    created = ctx.bus.router.create_channel(room, channel, created_by=ctx.client.id, kind=kind,
                                            description=description)
    created.stream.retention = retention
    ctx.bus.emit("channel_created", room=room, channel=channel, created_by=ctx.client.id,
                 **ctx.client.principal.log_fields())
    answer = f"Channel {room}:{channel} created", created.summary()
    store = ctx.bus.store
    if store is None:
        return answer
    # Answered once its stream is stored: a restart restores it, with its retention, even
    # before its first message.
    later = Later()

    def stored(failure: str | None) -> None:
        if failure is None:
            later.resolve(answer)
        else:
            later.resolve(error=CommandError(ErrorCode.STORE_FAILED, f"channel {room}:{channel} "
                                             f"is created but not stored ({failure}); it is "
                                             "kept once a message of it is"))
    store.keep(created.stream, stored)
    return later


def _delete_channel(ctx: CommandContext) -> tuple[str, dict[str, Any]]:
    room, channel = ctx.target(channel_required=True)
    deleted = ctx.bus.router.delete_channel(room, channel)
    ctx.bus.channel_deleted(deleted)
    ctx.bus.emit("channel_deleted", room=room, channel=channel, deleted_by=ctx.client.id,
                 **ctx.client.principal.log_fields())
    data = deleted.summary()
    data.update(deleted_by=ctx.client.id, deleted_at=now_iso())
    return f"Channel {room}:{channel} deleted", data


def _join_channel(ctx: CommandContext) -> tuple[str, dict[str, Any]]:
    """Join room:channel; with ``since`` ({"seq", "epoch"} of the last message seen), every
    message after it first (arqond/core/replay.py), then the live ones."""
    room, channel = ctx.target(channel_required=True)
    router, client = ctx.bus.router, ctx.client
    since = ctx.args.get("since")
    resume = None
    if since is None:
        created = ctx.bus.join(client, room, channel)
    else:
        try:
            seq, epoch = check_since(since)
        except ValueError as exc:
            raise CommandError(ErrorCode.VALIDATION_ERROR, str(exc)) from None
        created, resume, replay = ctx.bus.resume(client, room, channel, seq, epoch)
        ctx.after_reply.append(replay.step)
    data: dict[str, Any] = {"room": room, "channel": channel, "joined_by": client.id,
                            "joined_at": now_iso(), "created": created,
                            "wildcard": "*" in (room, channel)}
    if not data["wildcard"]:
        client.room, client.channel = room, channel
        data.update(router.require_channel(room, channel).summary())
    if resume is not None:
        data["resume"] = resume
    return f"Joined {room}:{channel}", data


def _leave_channel(ctx: CommandContext) -> tuple[str, dict[str, Any]]:
    room, channel = ctx.target(channel_required=True)
    client = ctx.client
    ctx.bus.router.leave(client, room, channel)
    if (client.room, client.channel) == (room, channel):
        concrete = sorted(s for s in client.subscriptions if "*" not in s)
        client.room, client.channel = concrete[0] if concrete else (None, None)
    return f"Left {room}:{channel}", {"room": room, "channel": channel, "left_by": client.id,
                                      "left_at": now_iso()}


def _list_channels(ctx: CommandContext) -> tuple[str, dict[str, Any]]:
    """One page of channels (``limit``, ``offset``): a reply stays small however many there
    are; ``next_offset`` says where the next page starts (null after the last)."""
    router = ctx.bus.router
    room = ctx.arg("room", str)
    if room is not None:
        room = split_target(room, None)[0]
        rooms = [router.require_room(room)]
    else:
        rooms = list(router.rooms.values())
    limit = ctx.limit(LIST_CHANNELS_PAGE, LIST_CHANNELS_PAGE)
    offset = ctx.arg("offset", int, 0)
    if offset < 0:
        raise CommandError(ErrorCode.VALIDATION_ERROR, "offset must be 0 or more")
    every = [channel for r in rooms for channel in r.channels.values()]
    page = [channel.summary() for channel in every[offset:offset + limit]]
    following = offset + limit
    return f"{len(page)} channel(s)", {
        "room": room, "channels": page, "total_channels": len(every), "offset": offset,
        "next_offset": following if following < len(every) else None}


def _channel_info(ctx: CommandContext) -> tuple[str, dict[str, Any]]:
    room, channel = ctx.target(channel_required=True)
    found = ctx.bus.router.require_channel(room, channel)
    data = found.summary()
    node = {"node": ctx.bus.cluster.node} if ctx.bus.cluster is not None else {}
    data["participants"] = [{"client_id": c.id, "type": c.type, "screen_name": c.screen_name,
                             **node} for c in found.members] + \
        [{"client_id": client_id, **member} for client_id, member in found.remote.items()]
    data["metadata"] = found.metadata()
    return f"Channel {room}:{channel}", data


def _history(ctx: CommandContext) -> tuple[str, dict[str, Any]]:
    room, channel = ctx.target(channel_required=False)
    limit = ctx.limit(ctx.bus.settings.history_default_limit, ctx.bus.settings.history_size)
    since = _timestamp_arg(ctx, "since")
    entries = ctx.bus.history_for(ctx.client, room, channel)
    if since is not None:  # when arqond received them, not what senders wrote
        entries = [entry for entry in entries if entry.received > since]
    total = len(entries)
    history = [{"message_id": e["id"], "type": e["type"], "sender": e.get("sender"),
                "room": e["room"], "channel": e.get("channel"), "payload": e.get("payload"),
                "metadata": e.get("metadata") or {}, "timestamp": e["timestamp"]}
               for e in (entry.envelope() for entry in entries[-limit:])]
    return f"{len(history)} message(s)", {"room": room, "channel": channel, "limit": limit,
                                         "total_messages": total, "history": history}


def _history_window(ctx: CommandContext, since_key: str, until_key: str, *, required: bool,
                    default_limit: int, maximum: int) -> dict[str, Any]:
    room = ctx.arg("room", str)
    channel = ctx.arg("channel", str)
    room, channel = split_target(room, channel)
    if room is None and not ctx.client.admin:
        raise CommandError(ErrorCode.AUTHORIZATION_ERROR,
                           "Only admin clients can query global history; provide 'room'")
    since = _timestamp_arg(ctx, since_key, required=required)
    until = _timestamp_arg(ctx, until_key, required=required)
    if since is not None and until is not None and until < since:
        raise CommandError(ErrorCode.VALIDATION_ERROR, f"{until_key} is before {since_key}")
    limit = ctx.limit(default_limit, maximum)
    router = ctx.bus.router
    if room is not None:
        entries = ctx.bus.history_for(ctx.client, room, channel)
    else:  # admins only: nothing is hidden from them
        entries = sorted(entry for name in router.rooms for entry in router.entries(name, None))
    # The window is in arqond's receipt time, never in the timestamps senders wrote.
    kept = [entry for entry in entries
            if (since is None or entry.received >= since)
            and (until is None or entry.received <= until)]
    return {"room": room, "channel": channel, "limit": limit, "entries": kept}


def _stored(entry: Entry) -> dict[str, Any]:
    return {"envelope": entry.envelope(), "stored_at": iso_at(entry.received),
            "storage_metadata": {}}


def _history_get(ctx: CommandContext) -> tuple[str, dict[str, Any]]:
    window = _history_window(ctx, "since", "until", required=False, default_limit=100,
                             maximum=HISTORY_GET_MAX)
    entries = list(reversed(window["entries"]))[:window["limit"]]
    window["entries"] = [_stored(entry) for entry in entries]
    window.update(count=len(entries), since=ctx.args.get("since"), until=ctx.args.get("until"))
    return "History retrieved", window


def _history_replay(ctx: CommandContext) -> tuple[str, dict[str, Any]]:
    window = _history_window(ctx, "from_ts", "to_ts", required=True, default_limit=1000,
                             maximum=HISTORY_REPLAY_MAX)
    strict = ctx.arg("strict_sequence", bool, True)
    entries = [_stored(entry) for entry in window["entries"][:window["limit"]]]
    if strict:
        last = 0
        for stored in entries:
            sequence = (stored["envelope"].get("metadata") or {}).get("sequence")
            if isinstance(sequence, int):
                if sequence < last:
                    raise CommandError(ErrorCode.VALIDATION_ERROR,
                                       "Sequence regression detected in replay window")
                last = sequence
    window["entries"] = entries
    window.update(count=len(entries), from_ts=ctx.args["from_ts"], to_ts=ctx.args["to_ts"],
                  strict_sequence=strict)
    return "History replayed", window


def _parse_time(value: str) -> float:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        # Naive stamps are UTC, as the ones arqond itself writes.
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _timestamp_arg(ctx: CommandContext, key: str, *, required: bool = False) -> float | None:
    value = ctx.arg(key, str, required=required)
    if value is None:
        return None
    try:
        return _parse_time(value)
    except ValueError:
        raise CommandError(ErrorCode.VALIDATION_ERROR, f"{key} {value!r} is not ISO 8601") from None


def _help(ctx: CommandContext) -> tuple[str, dict[str, Any]]:
    commands = ctx.bus.commands.describe()
    return f"{len(commands)} command(s)", {"commands": commands}


def _identify(ctx: CommandContext) -> tuple[str, dict[str, Any]]:
    problems = ctx.client.identify(ctx.args)
    if problems:
        raise CommandError(ErrorCode.VALIDATION_ERROR, "; ".join(problems))
    return "Identity updated", ctx.client.describe()


def builtin_commands() -> CommandRegistry:
    registry = CommandRegistry()
    register = registry.register
    register("status", _status, summary="server statistics and this client's identity")
    register("ping", _ping, summary="answers pong")
    register("help", _help, summary="lists the commands")
    register("identify", _identify, summary="set type, screen_name, personality, avatar")
    register("hello", _identify, summary="alias of identify")
    register("create_channel", _create_channel, admin=True, summary="create room:channel")
    register("delete_channel", _delete_channel, admin=True,
             summary="delete an empty, not hard-coded channel")
    register("join_channel", _join_channel,
             summary="join room:channel (created if missing; '*' wildcards allowed)")
    register("leave_channel", _leave_channel, summary="leave room:channel")
    register("list_channels", _list_channels, summary="channels with participant counts")
    register("channel_info", _channel_info, summary="participants and metadata of a channel")
    register("history", _history, summary="recent messages of a room or channel (last 50)")
    for prefix in ("", "op."):
        register(f"{prefix}history.get", _history_get, summary="history, newest first")
        register(f"{prefix}history.replay", _history_replay,
                 summary="history between from_ts and to_ts, oldest first")
    return registry
