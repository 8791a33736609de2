"""What the tools do: one agent on the bus, optionally as a Zgent of its own.

Every failure is a CliError or BusError whose text is what the ``arqon`` command would print
for the same act (who may not do what, which quota, which Zgent is not serving); the MCP layer
(server.py) turns it into a tool error. Waiting is always bounded by the caller's ``wait``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

from arqond import config as configuration
from arqond.cli.call import exit_status
from arqond.cli.common import CliError, login_name, say
from arqond.cli.moo import write_inbox
from arqond.core import jsonrpc
from arqond.core.errors import ErrorCode, RpcCode
from arqond.core.moo.pane import BadParams, asked
from arqond.mcp.bus import BusError, BusLink, Target
from arqond.mcp.cursor import Cursors
from arqond.mcp.zgent import Handler, append_line, ask, narrative_line
from arqond.sdk import ArqonBusClient, ArqonBusSDKError

INBOX = "inbox"
# The read cursor of an agent that names none and has no Zgent.
DEFAULT_CURSOR = "mcp"
NO_ZGENT = ("this agent has no Zgent of its own: start arqon mcp with --zgent NAME to have a "
            "mailbox, a narrative and requests to answer")


class Agent:
    def __init__(self, config: configuration.Config, make_client: Callable[[], ArqonBusClient],
                 *, zgent: str | None, capabilities: list[str], timeout: float,
                 max_requests: int, cursor: str | None = None,
                 relaying_pane: bool = False) -> None:
        self.config = config
        self.zgent = zgent
        self.relaying_pane = relaying_pane
        self.capabilities = capabilities
        self.max_requests = max_requests
        self.bus = BusLink(make_client, timeout, self._message)
        self.cursors = Cursors(cursor or zgent or DEFAULT_CURSOR)
        self.handler: Handler | None = None
        self.registered = False  # by this process, so it unregisters it when it leaves
        self.stopping = asyncio.Lock()
        self.stopped = False
        # Set by the MCP layer: called with a resource's URI when something new is there.
        self.updated: Callable[[str], None] = lambda uri: None

    # -- coming and going -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect; as Zgent NAME, register it unless it is there, and attach as its
        handler. CliError (and nothing left behind) when arqond refuses."""
        await self._connect()
        if self.zgent is None:
            return
        try:
            await self.bus.command("zgent.register", {
                "id": self.zgent, "capabilities": self.capabilities,
                # Whoever registers may serve it too (arqon.serve checks uids and groups).
                "uids": [os.getuid()]})
            self.registered = True
            say(f"registered Zgent {self.zgent}")
        except BusError as exc:
            if exc.code != ErrorCode.ZGENT_EXISTS:
                raise CliError(str(exc)) from None
            if self.capabilities:
                say(f"Zgent {self.zgent} is registered already: it keeps its own "
                    "capabilities, not --capability's")
        self.handler = Handler(self.zgent, self.path(f"{self.zgent}.sock"),
                               limit=self.max_requests, expiry=self.config.moo.handler_timeout,
                               on_request=lambda: self.updated("arqon://requests"),
                               relaying_pane=self.relaying_pane)
        try:
            await self.handler.start()
        except CliError:
            self.handler = None
            await self.stop()
            raise

    async def _connect(self) -> None:
        try:
            await self.bus.connect()
        except Exception as exc:
            raise CliError(str(exc)) from None

    async def stop(self) -> None:
        """Leave as it came: detach, and unregister the Zgent if this process registered it.
        Once: standard input closing and a signal may both ask for it."""
        async with self.stopping:
            if not self.stopped:
                await self._leave()
                self.stopped = True

    async def _leave(self) -> None:
        if self.handler is not None:
            await self.handler.close()
        try:
            await self.cursors.acknowledge_all(self.bus)
        except (BusError, ArqonBusSDKError) as exc:   # given again to its next agent
            say(f"could not move cursor {self.cursors.name}: {exc}")
        if self.registered:
            try:
                await self.bus.command("zgent.unregister", {"id": self.zgent})
                say(f"unregistered Zgent {self.zgent}")
            except BusError as exc:
                say(f"could not unregister Zgent {self.zgent}: {exc}")
        await self.bus.close()

    # -- what arrives -----------------------------------------------------------------------

    def _message(self, target: Target, frame: dict[str, Any]) -> None:
        self.updated(channel_uri(*target))
        if self.zgent is not None and target == (self.zgent, INBOX):
            self.updated("arqon://mailbox")

    # -- the tools --------------------------------------------------------------------------

    def path(self, name: str) -> str:
        return os.path.join(self.config.moo.dir, name)

    def own(self) -> str:
        if self.zgent is None:
            raise CliError(NO_ZGENT)
        return self.zgent

    async def publish(self, room: str, channel: str, payload: Any) -> dict[str, Any]:
        # A channel nobody created yet is created by the publish (charged to this agent's
        # principal: quotas.channels).
        message_id = await self.bus.publish(room, channel, payload)
        return {"published": message_id, "room": room, "channel": channel}

    async def read(self, room: str, channel: str, wait: float = 0,
                   limit: int = 20) -> dict[str, Any]:
        if wait > 0:    # a channel nobody has spoken on yet is there to wait on
            await self.bus.watch((room, channel))
        messages, missed = await self.cursors.unread(self.bus, room, channel, limit, wait)
        shown: dict[str, Any] = {"room": room, "channel": channel, "messages": [
            {"message_id": message["id"], **{key: message.get(key) for key in (
                "type", "sender", "payload", "metadata", "timestamp")}}
            for message in messages]}
        if missed:
            shown["missed"] = f"some messages since your last read are gone: {missed}"
        return shown

    async def send(self, to: str, message: Any) -> dict[str, Any]:
        sender = self.zgent or login_name()
        if isinstance(message, dict):
            message = {"from": sender, **message}
        else:
            message = {"from": sender, "text": message}
        await asyncio.to_thread(write_inbox, self.path(f"{to}-inbox"), to, message)
        return {"sent": to, "message": message}

    async def recv(self, wait: float = 0) -> dict[str, Any]:
        name = self.own()
        answer = await ask(self.path(f"{name}.sock"), {"jsonrpc": "2.0", "id": 1,
                                                       "method": "arqon.recv",
                                                       "params": {"wait": wait}}, wait + 30)
        if "error" in answer:
            raise CliError(answer["error"]["message"], exit_status(answer["error"]))
        return {"message": answer["result"]}

    async def call(self, zgent: str, method: str, params: Any = None,
                   timeout: float = 30) -> dict[str, Any]:
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            request["params"] = params
        answer = await ask(self.path(f"{zgent}.sock"), request, timeout)
        if "error" in answer:
            error = answer["error"]
            raise CliError(f"{zgent} {method}: {error['message']} ({error['code']})\n"
                           f"{jsonrpc.line(error).decode().strip()}")
        return {"result": answer["result"]}

    async def pane(self, zgent: str, lines: int = 0, text: str | None = None,
                   keys: list[str] | None = None, enter: bool = False) -> dict[str, Any]:
        try:
            method, params = asked(lines, text, keys or [], enter)
        except BadParams as exc:
            raise CliError(f"pane: {exc}") from None
        return await self.call(zgent, method, params)

    async def zgents(self, capability: str | None = None) -> dict[str, Any]:
        registry = (await self.bus.command("zgent.list", {}))["zgents"]
        return {"zgents": {name: entry for name, entry in registry.items()
                           if capability is None or capability in entry.get("capabilities", [])}}

    async def channels(self, room: str | None = None) -> dict[str, Any]:
        data = await self.bus.command("list_channels", {"room": room} if room else {})
        listed = [{key: channel.get(key) for key in ("room", "channel", "participants",
                                                     "messages", "last_activity")}
                  for channel in data["channels"]]
        return {"channels": listed, "total": data["total_channels"]}

    async def narrate(self, content: Any, type: str = "narrative",
                      tags: list[str] | None = None) -> dict[str, Any]:
        name = self.own()
        path = os.path.join(self.config.moo.log_dir, f"{name}-narrative.jsonl")
        line = narrative_line(name, content, type, tags or [])
        await asyncio.to_thread(append_line, path, line)
        return {"appended": path, "channel": f"{name}:narrative"}

    async def requests(self, wait: float = 0) -> dict[str, Any]:
        return {"requests": await self._handler().take(wait)}

    async def reply(self, id: Any, result: Any = None,
                    error: dict[str, Any] | None = None) -> dict[str, Any]:
        if error is not None:
            answer = {"error": {"code": RpcCode.HANDLER_FAILED, **error}}
        else:
            answer = {"result": result}
        self._handler().reply(id, answer)
        return {"replied": id}

    def _handler(self) -> Handler:
        self.own()
        assert self.handler is not None
        return self.handler

    # -- resources --------------------------------------------------------------------------

    async def channel_history(self, room: str, channel: str) -> dict[str, Any]:
        return await self.bus.command("history", {"room": room, "channel": channel})

    async def mailbox(self) -> dict[str, Any]:
        name = self.own()
        return await self.channel_history(name, INBOX)

    def pending(self) -> list[dict[str, Any]]:
        return self._handler().pending()


def channel_uri(room: str, channel: str) -> str:
    return f"arqon://channels/{room}/{channel}"
