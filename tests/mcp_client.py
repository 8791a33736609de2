"""Driving `arqon mcp` as an agent runtime does: the MCP SDK's own client (ClientSession over
stdio), the server a subprocess talking to a real arqond."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import mcp_types as types
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.conftest import ROOT, DaemonProcess


def mcp_environment(daemon: DaemonProcess) -> dict[str, str]:
    """What a runtime would pass: the daemon's configuration file, and nothing that points
    at its WebSocket port, so the bus socket is used."""
    return {**daemon.env, "ARQONBUS_CONFIG": str(daemon.config_path)}


class Agent:
    """One MCP session with `arqon mcp`, and the resource updates it was sent."""

    def __init__(self, session: ClientSession, stderr: Path) -> None:
        self.session = session
        self.stderr = stderr
        self.updates: asyncio.Queue[str] = asyncio.Queue()

    async def on_message(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updates.put_nowait(str(message.params.uri))

    async def tool(self, name: str, **arguments: Any) -> Any:
        """A tool's answer, which must not be an error, as JSON."""
        result = await self.session.call_tool(name, arguments)
        assert not result.is_error, result.content[0].text
        return json.loads(result.content[0].text)

    async def refused(self, name: str, **arguments: Any) -> str:
        """A tool's error text (the call must fail as a tool error)."""
        result = await self.session.call_tool(name, arguments)
        assert result.is_error, result.content
        return result.content[0].text

    async def update(self, timeout: float = 10.0) -> str:
        return await asyncio.wait_for(self.updates.get(), timeout)


@contextlib.asynccontextmanager
async def mcp_agent(daemon: DaemonProcess, *args: str, prefix: tuple[str, ...] = (),
                    env: dict[str, str] | None = None,
                    launcher: list[str] | None = None) -> AsyncIterator[Agent]:
    """`arqon mcp ARGS` started by the SDK's stdio client, initialized; ``prefix`` runs it
    through another command (setpriv); ``launcher`` is a whole command line instead."""
    stderr = daemon.tmp / f"mcp-{len(list(daemon.tmp.glob('mcp-*.log')))}.log"
    command = launcher or [*prefix, sys.executable, "-m", "arqond.cli", "mcp", *args]
    parameters = StdioServerParameters(command=command[0], args=command[1:],
                                       env=env or mcp_environment(daemon), cwd=str(ROOT))
    with open(stderr, "w") as errlog:
        async with stdio_client(parameters, errlog=errlog) as (reader, writer):
            agent: Agent | None = None

            async def deliver(message: Any) -> None:
                if agent is not None:
                    await agent.on_message(message)

            async with ClientSession(reader, writer, message_handler=deliver) as session:
                agent = Agent(session, stderr)
                await session.initialize()
                yield agent
