"""What ``read`` returns: the messages of a channel this agent has not read yet.

STAND-IN, to be replaced by the server-side cursors of durable channels (issue 15, DESIGN.md
§9): until they land, the cursor is the id of the last message this process returned per
channel, kept here in memory, and "unread" is what the ``history`` window holds after it.
``unread`` is the only function that knows; switching to the named cursor of the principal
(``join_channel`` with ``since`` {seq, epoch}) changes this module alone. The stand-in's
limits: the cursor dies with the process, and a channel that moved on by more than the
history window (server.history_size) since the last read says ``missed``.
"""

from __future__ import annotations

from typing import Any

from arqond.mcp.bus import BusLink


class Cursors:
    def __init__(self, window: int) -> None:
        self.window = window  # messages a history command may return (server.history_size)
        self.last_read: dict[tuple[str, str], str] = {}

    async def unread(self, bus: BusLink, room: str, channel: str,
                     limit: int) -> tuple[list[dict[str, Any]], bool]:
        """At most ``limit`` messages of room:channel after this agent's cursor, oldest
        first, and whether some may have been missed; the cursor moves past them. The first
        read of a channel starts from its ``limit`` most recent messages."""
        history = (await bus.command("history", {"room": room, "channel": channel,
                                                 "limit": self.window}))["history"]
        last = self.last_read.get((room, channel))
        ids = [message["message_id"] for message in history]
        if last is None:
            start, missed = max(0, len(history) - limit), False
        elif last in ids:
            start, missed = ids.index(last) + 1, False
        else:  # the cursor left the window: everything there is new, and maybe more was
            start, missed = 0, bool(history)
        messages = history[start:start + limit]
        if messages:
            self.last_read[(room, channel)] = messages[-1]["message_id"]
        return messages, missed
