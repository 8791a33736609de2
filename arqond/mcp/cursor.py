"""What ``read`` returns: the messages of a channel this agent has not read yet, after its
server-side cursor (``cursor.read`` and ``cursor.ack``, DESIGN.md §9), which arqond keeps
across restarts of the agent and of itself: an agent that starts again catches up.

The cursor belongs to the agent's user and is named after the agent (``arqon mcp --cursor``,
else its Zgent, else "mcp"). A read first acknowledges what the previous read of the channel
handed over, then reads what follows: the cursor moves past a batch only once the agent has
been given it and came back for more, or stops, so an agent stopped in between is given the
same batch again rather than losing it. A cursor never used starts at the channel's ``limit``
most recent messages, as a person opening a channel sees it, not at its oldest.
"""

from __future__ import annotations

from typing import Any

from arqond.core.errors import ErrorCode
from arqond.mcp.bus import BusError, BusLink, Target


class Cursors:
    def __init__(self, name: str) -> None:
        self.name = name
        self.handed: dict[Target, tuple[int, str]] = {}   # the last message given, unacked

    async def unread(self, bus: BusLink, room: str, channel: str, limit: int,
                     wait: float) -> tuple[list[dict[str, Any]], str | None]:
        """At most ``limit`` messages of room:channel after this agent's cursor, oldest
        first, waiting up to ``wait`` seconds for the first when there is none; and, when
        some were lost since the last read (retention, an epoch gone), why."""
        cursor = {"room": room, "channel": channel, "cursor": self.name}
        await self._acknowledge(bus, (room, channel))
        try:
            data = await bus.command("cursor.read", {**cursor, "limit": limit, "wait": wait},
                                     timeout=wait + bus.timeout)
        except BusError as exc:
            if exc.code != ErrorCode.NOT_FOUND:
                raise
            return [], None      # nobody has spoken there yet
        messages = data["messages"]
        fresh = data["position"] is None
        if fresh and len(messages) == limit and messages[-1]["metadata"]["seq"] < \
                data["last_seq"]:
            await bus.command("cursor.ack", {**cursor, "seq": data["last_seq"] - limit,
                                             "epoch": data["epoch"]})
            data = await bus.command("cursor.read", {**cursor, "limit": limit})
            messages = data["messages"]
        if messages:
            last = messages[-1]["metadata"]
            self.handed[(room, channel)] = (last["seq"], last["epoch"])
        return messages, None if fresh or data["recovered"] else data["reason"]

    async def acknowledge_all(self, bus: BusLink) -> None:
        """The agent is leaving: what it was given is read."""
        for target in list(self.handed):
            await self._acknowledge(bus, target)

    async def _acknowledge(self, bus: BusLink, target: Target) -> None:
        handed = self.handed.pop(target, None)
        if handed is not None:
            await bus.command("cursor.ack", {"room": target[0], "channel": target[1],
                                             "cursor": self.name, "seq": handed[0],
                                             "epoch": handed[1]})
