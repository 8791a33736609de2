"""Rooms, channels, memberships, wildcard subscriptions and per-channel history windows.

Router is the one routing interface of arqond: the Bus asks it who receives a message and
records history through it, so a NATS-backed router can replace it without touching the rest.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Iterable

from arqond.core.clients import Client
from arqond.core.envelope import MAX_NAME_LENGTH, iso_at, now_iso
from arqond.core.history import Entry, History, HistoryLimits, Window
from arqond.core.errors import ErrorCode
from arqond.core.streams import Retention, Stream, new_epoch

# What arqond.conf(5) gives server.history_size, history_bytes and history_total_bytes.
DEFAULT_HISTORY = HistoryLimits(500, 8 << 20, 256 << 20)
# ... and streams.max_messages, max_bytes and max_age.
DEFAULT_RETENTION = Retention(10000, 64 << 20, 0.0)
WILDCARD = "*"


class RoutingError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def check_name(kind: str, name: str, *, wildcard: bool = False) -> str:
    """A room or channel name: any string ArqonBus accepts (``team/alpha``, ``alice@lab``,
    ``Lab Room``, ``_private``), within 1 to 128 characters, without control characters, and
    without ':' (it separates room from channel in the "room:channel" shorthand). ``*`` alone is
    the wildcard, allowed only where ``wildcard`` is. Where a name must be spelled otherwise
    (a NATS subject, a file name) it is encoded there, never restricted here."""
    if wildcard and name == WILDCARD:
        return name
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH or ":" in name \
            or name == WILDCARD or any(unicodedata.category(c) == "Cc" for c in name):
        raise RoutingError(ErrorCode.VALIDATION_ERROR,
                           f"invalid {kind} name {name!r}: 1 to {MAX_NAME_LENGTH} characters, no "
                           "control characters, no ':' (it separates room from channel), "
                           "and not '*' alone (the wildcard)")
    return name


def split_target(room: str | None, channel: str | None) -> tuple[str | None, str | None]:
    """Resolve the "room:channel" shorthand given in either field. A room "a:b" together
    with another channel is refused, never read as one of them: ':' is no part of a name."""
    if room and ":" in room:
        room, _, in_room_channel = room.partition(":")
        if channel and in_room_channel and channel != in_room_channel:
            raise RoutingError(ErrorCode.VALIDATION_ERROR, f"room {room}:{in_room_channel!s} "
                               f"names channel {in_room_channel!r} and channel names "
                               f"{channel!r}: ':' separates room from channel, so give one")
        channel = channel or in_room_channel or None
    elif channel and ":" in channel:
        room, _, channel = channel.partition(":")
    return room or None, channel or None


class Channel:
    __slots__ = ("room", "name", "created_at", "created_by", "type", "hardcoded", "members",
                 "history", "message_count", "last_activity", "description", "owner", "stream",
                 "remote")

    def __init__(self, room: str, name: str, *, created_by: str, kind: str, hardcoded: bool,
                 history: Window, stream: Stream, description: str = "") -> None:
        self.room = room
        self.name = name
        self.created_at = now_iso()
        self.created_by = created_by
        self.type = kind
        self.hardcoded = hardcoded
        self.description = description
        # dict, not set: insertion order keeps fan-out order and listings deterministic.
        self.members: dict[Client, None] = {}
        self.history = history
        self.message_count = 0
        self.last_activity: float | None = None
        # The principal charged for it (quotas.channels), when a client created it.
        self.owner: Any = None
        # Its messages in order (arqond/core/streams.py): seq, epoch, retention.
        self.stream = stream
        # Its members on other nodes of a cluster (arqond/cluster/presence.py), for presence
        # only: client id -> {"node", "type", "screen_name"}. Never delivered to from here.
        self.remote: dict[str, dict[str, Any]] = {}

    def metadata(self) -> dict[str, Any]:
        return {"created_at": self.created_at, "created_by": self.created_by, "type": self.type,
                "hardcoded": self.hardcoded, "description": self.description}

    def summary(self) -> dict[str, Any]:
        count = len(self.members) + len(self.remote)
        return {"room": self.room, "channel": self.name, "name": self.name,
                "participants": count, "member_count": count,
                "messages": self.message_count,
                "last_activity": None if self.last_activity is None
                else iso_at(self.last_activity), **self.metadata(),
                "stream": self.stream.describe()}


class Room:
    __slots__ = ("name", "created_at", "channels", "history")

    def __init__(self, name: str, history: Window) -> None:
        self.name = name
        self.created_at = now_iso()
        self.channels: dict[str, Channel] = {}
        # Messages sent to the room as a whole (no channel).
        self.history = history


class Router:
    def __init__(self, history: History | None = None,
                 retention: Retention = DEFAULT_RETENTION) -> None:
        self.histories = history or History(DEFAULT_HISTORY)
        # What a new channel's stream keeps unless it was created with its own.
        self.retention = retention
        # The epoch every new stream takes when the store gives one (a cluster's: the same on
        # every node); None: each new stream a new epoch of its own.
        self.epoch: str | None = None
        self.rooms: dict[str, Room] = {}
        # (room or "*", channel or "*") -> subscribers; only for subscriptions with a wildcard.
        self.patterns: dict[tuple[str, str], dict[Client, None]] = {}

    # -- rooms and channels --------------------------------------------------------------

    def channel(self, room: str, channel: str) -> Channel | None:
        found = self.rooms.get(room)
        return found.channels.get(channel) if found else None

    def require_channel(self, room: str, channel: str) -> Channel:
        found = self.channel(room, channel)
        if found is None:
            raise RoutingError(ErrorCode.NOT_FOUND, f"channel {room}:{channel} does not exist")
        return found

    def require_room(self, room: str) -> Room:
        found = self.rooms.get(room)
        if found is None:
            raise RoutingError(ErrorCode.NOT_FOUND, f"room {room} does not exist")
        return found

    def ensure_channel(self, room: str, channel: str, *, created_by: str = "arqonbus",
                       kind: str = "general", hardcoded: bool = False,
                       description: str = "", stream: Stream | None = None
                       ) -> tuple[Channel, bool]:
        """The channel, created if missing; the flag says whether it was created now."""
        found = self.channel(room, channel)
        if found is not None:
            return found, False
        check_name("room", room)
        check_name("channel", channel)
        room_obj = self.rooms.get(room)
        if room_obj is None:
            room_obj = self.rooms[room] = Room(room, self.histories.window())
        if stream is None:
            stream = Stream(room, channel, self.epoch or new_epoch(), self.retention, details={
                "type": kind, "description": description, "created_by": created_by})
        # A stream restored from the store has a past its window has not read back yet.
        created = Channel(room, channel, created_by=created_by, kind=kind, hardcoded=hardcoded,
                          history=self.histories.window(complete=stream.last_seq == 0),
                          description=description, stream=stream)
        room_obj.channels[channel] = created
        return created, True

    def create_channel(self, room: str, channel: str, **kwargs: Any) -> Channel:
        created, is_new = self.ensure_channel(room, channel, **kwargs)
        if not is_new:
            raise RoutingError(ErrorCode.CHANNEL_EXISTS, f"channel {room}:{channel} already exists")
        return created

    def delete_channel(self, room: str, channel: str) -> Channel:
        found = self.require_channel(room, channel)
        if found.hardcoded:
            raise RoutingError(ErrorCode.CHANNEL_PROTECTED,
                               f"channel {room}:{channel} is hard-coded and cannot be deleted")
        if found.members or found.remote:
            raise RoutingError(ErrorCode.CHANNEL_NOT_EMPTY,
                               f"channel {room}:{channel} still has "
                               f"{len(found.members) + len(found.remote)} participant(s); it "
                               "can be deleted only when empty")
        room_obj = self.rooms[room]
        del room_obj.channels[channel]
        self.histories.forget(found.history)
        if not room_obj.channels:
            self.histories.forget(room_obj.history)
            del self.rooms[room]
        return found

    def channel_count(self) -> int:
        return sum(len(room.channels) for room in self.rooms.values())

    # -- memberships ---------------------------------------------------------------------

    def join(self, client: Client, room: str, channel: str, *,
             created_by: str | None = None) -> bool:
        """Subscribe; a concrete channel is auto-created. Returns whether it was created."""
        check_name("room", room, wildcard=True)
        check_name("channel", channel, wildcard=True)
        created = False
        if WILDCARD in (room, channel):
            self.patterns.setdefault((room, channel), {})[client] = None
        else:
            found, created = self.ensure_channel(room, channel,
                                                 created_by=created_by or client.id)
            found.members[client] = None
        client.subscriptions.add((room, channel))
        return created

    def leave(self, client: Client, room: str, channel: str) -> None:
        if (room, channel) not in client.subscriptions:
            raise RoutingError(ErrorCode.NOT_A_MEMBER, f"client is not in {room}:{channel}")
        client.subscriptions.discard((room, channel))
        if WILDCARD in (room, channel):
            subscribers = self.patterns.get((room, channel), {})
            subscribers.pop(client, None)
            if not subscribers:
                self.patterns.pop((room, channel), None)
        else:
            found = self.channel(room, channel)
            if found is not None:
                found.members.pop(client, None)

    def drop(self, client: Client) -> None:
        for room, channel in list(client.subscriptions):
            self.leave(client, room, channel)

    # -- delivery ------------------------------------------------------------------------

    def recipients(self, room: str, channel: str | None) -> Iterable[Client]:
        """Every subscriber of room:channel (or of the whole room), each exactly once."""
        room_obj = self.rooms.get(room)
        if channel is not None:
            found = room_obj.channels.get(channel) if room_obj else None
            members = found.members if found is not None else {}
            if not self.patterns:
                return members
            merged = dict(members)
            for (pattern_room, pattern_channel), subscribers in self.patterns.items():
                if pattern_room in (WILDCARD, room) and pattern_channel in (WILDCARD, channel):
                    merged.update(subscribers)
            return merged
        merged = {}
        if room_obj is not None:
            for found in room_obj.channels.values():
                merged.update(found.members)
        for (pattern_room, _), subscribers in self.patterns.items():
            if pattern_room in (WILDCARD, room):
                merged.update(subscribers)
        return merged

    def record(self, room: str, channel: str | None, received: float, frame: bytes,
               seq: int = 0) -> None:
        room_obj = self.rooms.get(room)
        if room_obj is None:
            return
        if channel is None:
            self.histories.record(room_obj.history, received, frame)
            return
        found = room_obj.channels.get(channel)
        if found is not None:
            self.histories.record(found.history, received, frame, seq)
            found.message_count += 1
            found.last_activity = received

    def entries(self, room: str, channel: str | None) -> list[Entry]:
        """What is kept, oldest first: one channel, or the whole room merged in order."""
        room_obj = self.require_room(room)
        if channel is not None:
            return list(self.require_channel(room, channel).history)
        entries = list(room_obj.history)
        for found in room_obj.channels.values():
            entries.extend(found.history)
        entries.sort()
        return entries

    def history(self, room: str, channel: str | None) -> list[dict[str, Any]]:
        """The kept envelopes, oldest first (see ``entries``)."""
        return [entry.envelope() for entry in self.entries(room, channel)]
