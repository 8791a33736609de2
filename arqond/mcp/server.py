"""The MCP side: tools, resources and their update notifications over stdio, on the SDK's
low-level Server (explicit JSON schemas and texts written for a model, not derived ones).

Resources: arqon://zgents (the registry), arqon://channels/ROOM/CHANNEL (a channel's recent
history), and for an agent with a Zgent arqon://mailbox (its inbox's recent messages) and
arqon://requests (the requests waiting for its answer). A client that subscribes to a channel,
the mailbox or the requests gets notifications/resources/updated when something new is there
(resources/subscribe of the handshake protocol versions, which agent runtimes speak).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import jsonschema
import mcp_types as types
import orjson
from mcp.server.lowlevel import Server
from mcp.server.session import ServerSession
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from arqond import __version__
from arqond.cli.common import CliError, say
from arqond.mcp.agent import NO_ZGENT, Agent, channel_uri
from arqond.mcp.bus import BusError
from arqond.mcp.tools import BY_NAME, TOOLS

CHANNEL_URI = re.compile(r"^arqon://channels/([^/]+)/([^/]+)$")
OWN_RESOURCES = ("arqon://mailbox", "arqon://requests")
INSTRUCTIONS = ("You are connected to arqond, the local message bus of this machine's agents "
                "(Zgents) and of the humans who watch them in tmux. Use zgents to see who is "
                "there and channels to see where they talk; read and publish for channels, "
                "send and recv for direct messages, call to ask a Zgent and wait for its "
                "answer, pane to see or type into a Zgent's tmux pane. {own}")


def text(value: Any) -> list[types.TextContent]:
    return [types.TextContent(type="text", text=value if isinstance(value, str)
                              else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())]


def as_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


class Notifier:
    """Who subscribed to what, and the updates to send them, coalesced per URI and sent by
    one task so that a burst of messages never holds up the bus reader."""

    def __init__(self) -> None:
        self.sessions: dict[str, ServerSession] = {}
        self.due: dict[str, None] = {}  # insertion-ordered set
        self.wake = asyncio.Event()

    def updated(self, uri: str) -> None:
        if uri in self.sessions:
            self.due[uri] = None
            self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.due:
                uri = next(iter(self.due))
                del self.due[uri]
                session = self.sessions.get(uri)
                if session is not None:
                    await session.send_resource_updated(uri)


class AgentServer:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.notifier = Notifier()
        agent.updated = self.notifier.updated
        self.tools = [tool for tool in TOOLS if agent.zgent is not None or not tool.needs_zgent]
        own = (f"You are Zgent {agent.zgent}: others reach you with send (read yours with "
               "recv) and call (take them with requests, answer with reply); narrate tells "
               "the humans what you do." if agent.zgent else NO_ZGENT + ".")
        self.server: Server[Any] = Server(
            "arqond", version=__version__, instructions=INSTRUCTIONS.format(own=own),
            on_list_tools=self.list_tools, on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_templates,
            on_read_resource=self.read_resource, on_subscribe_resource=self.subscribe,
            on_unsubscribe_resource=self.unsubscribe)

    async def serve_stdio(self) -> None:
        """Serve until the runtime closes standard input."""
        notifier = asyncio.create_task(self.notifier.run())
        try:
            async with stdio_server() as (read_stream, write_stream):
                await self.server.run(read_stream, write_stream,
                                      self.server.create_initialization_options())
        finally:
            notifier.cancel()

    # -- tools ------------------------------------------------------------------------------

    async def list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(
            name=tool.name, description=tool.description, input_schema=tool.schema)
            for tool in self.tools])

    async def call_tool(self, ctx: Any, params: types.CallToolRequestParams
                        ) -> types.CallToolResult:
        tool = BY_NAME.get(params.name)
        arguments = params.arguments or {}
        try:
            if tool is None:
                raise CliError(f"no tool {params.name!r}; the tools are "
                               + ", ".join(t.name for t in self.tools))
            problem = jsonschema.exceptions.best_match(
                jsonschema.Draft202012Validator(tool.schema).iter_errors(arguments))
            if problem is not None:
                where = "/".join(str(part) for part in problem.absolute_path)
                raise CliError(f"{tool.name}: bad arguments: "
                               + (f"{where}: " if where else "") + problem.message)
            if tool.name == "reply" and "result" in arguments and "error" in arguments:
                raise CliError("reply: give result or error, not both")
            value = await getattr(self.agent, tool.name)(**arguments)
        except (CliError, BusError) as exc:
            return types.CallToolResult(content=text(str(exc)), is_error=True)
        return types.CallToolResult(content=text(value))

    # -- resources --------------------------------------------------------------------------

    async def list_resources(self, ctx: Any, params: Any) -> types.ListResourcesResult:
        resources = [types.Resource(
            uri="arqon://zgents", name="zgents", mime_type="application/json",
            description="The registry of Zgents: names, status, capabilities, panes.")]
        if self.agent.zgent is not None:
            resources += [
                types.Resource(uri="arqon://mailbox", name="mailbox",
                               mime_type="application/json",
                               description=f"Recent messages to {self.agent.zgent}'s inbox; "
                               "subscribe to be told when one arrives, take them with recv."),
                types.Resource(uri="arqon://requests", name="requests",
                               mime_type="application/json",
                               description="Requests from callers waiting for your reply; "
                               "subscribe to be told when one arrives.")]
        try:
            listed = (await self.agent.channels())["channels"]
        except BusError as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None
        resources += [types.Resource(
            uri=channel_uri(c["room"], c["channel"]), name=f"{c['room']}:{c['channel']}",
            mime_type="application/json",
            description=f"Recent messages of {c['room']}:{c['channel']} ({c['messages']} so "
                        "far); subscribe to be told when a new one arrives.")
            for c in listed]
        return types.ListResourcesResult(resources=resources)

    async def list_templates(self, ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[types.ResourceTemplate(
            uri_template="arqon://channels/{room}/{channel}", name="channel",
            mime_type="application/json",
            description="Recent messages of the channel room:channel.")])

    async def read_resource(self, ctx: Any, params: types.ReadResourceRequestParams
                            ) -> types.ReadResourceResult:
        uri = str(params.uri)
        try:
            if uri == "arqon://zgents":
                value: Any = await self.agent.zgents()
            elif uri == "arqon://mailbox":
                value = await self.agent.mailbox()
            elif uri == "arqon://requests":
                value = {"requests": self.agent.pending()}
            elif (match := CHANNEL_URI.match(uri)) is not None:
                value = await self.agent.channel_history(*match.groups())
            else:
                raise CliError(f"no resource {uri}")
        except (CliError, BusError) as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        return types.ReadResourceResult(contents=[types.TextResourceContents(
            uri=uri, mime_type="application/json", text=as_json(value))])

    async def subscribe(self, ctx: Any, params: types.SubscribeRequestParams
                        ) -> types.EmptyResult:
        uri = str(params.uri)
        try:
            if uri == "arqon://mailbox":
                await self.agent.bus.watch((self.agent.own(), "inbox"))
            elif uri == "arqon://requests":
                self.agent.own()
            elif (match := CHANNEL_URI.match(uri)) is not None:
                await self.agent.bus.watch((match[1], match[2]))
            else:
                raise CliError(f"{uri} sends no updates: subscribe to arqon://mailbox, "
                               "arqon://requests or arqon://channels/ROOM/CHANNEL")
        except (CliError, BusError) as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        self.notifier.sessions[uri] = ctx.session
        say(f"subscribed to {uri}")
        return types.EmptyResult()

    async def unsubscribe(self, ctx: Any, params: types.UnsubscribeRequestParams
                          ) -> types.EmptyResult:
        self.notifier.sessions.pop(str(params.uri), None)
        return types.EmptyResult()
