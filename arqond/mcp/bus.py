"""The MCP server's one bus connection, shared by every tool call at once.

The SDK's ArqonBusClient answers one command at a time; an agent's runtime may run several
tools together, and the channels this process watches deliver frames meanwhile. So one reader
task takes every frame and hands each to whoever waits for it: a command's response by its
request id, a message's acknowledgement by the message id, and a message routed to a watched
channel to ``on_message``. When arqond closes the connection (a restart), the waiters get the
reason, and the next call connects again and joins the watched channels again.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from arqond.cli.common import CliError, say
from arqond.cli.serve import attach_again
from arqond.core.envelope import IdGenerator
from arqond.sdk import ArqonBusClient, ArqonBusSDKError

Target = tuple[str, str]


class BusError(Exception):
    """A bus command or message that failed; ``str()`` is the text to show (as arqon's),
    ``code`` arqond's error code when it answered with one."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.code = code


class BusLink:
    def __init__(self, make_client: Callable[[], ArqonBusClient], timeout: float,
                 on_message: Callable[[Target, dict[str, Any]], None]) -> None:
        self.make_client = make_client
        self.timeout = timeout
        self.on_message = on_message
        self.client: ArqonBusClient | None = None
        self.reader: asyncio.Task[None] | None = None
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.watched: set[Target] = set()
        self.ids = IdGenerator()
        self.connecting = asyncio.Lock()
        self.reconnecting: asyncio.Task[None] | None = None
        self.closing = False

    async def connect(self) -> ArqonBusClient:
        """The connection of the moment, opened (and the watched channels joined) if none."""
        async with self.connecting:
            if self.client is not None:
                return self.client
            client = self.make_client()
            await client.connect()
            self.client = client
            self.reader = asyncio.create_task(self._read(client))
            for room, channel in sorted(self.watched):
                await self.command("join_channel", {"room": room, "channel": channel})
            return client

    async def close(self) -> None:
        self.closing = True
        client, self.client = self.client, None
        for task in (self.reader, self.reconnecting):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if client is not None:
            await client.close()

    async def _connect_again(self) -> None:
        """After arqond closed the connection (it restarted): connect again, as arqon serve
        attaches again, so that watched channels go on reaching ``on_message``."""
        async def attempt() -> ArqonBusClient:
            try:
                return await self.connect()
            except (ArqonBusSDKError, BusError) as exc:
                raise CliError(str(exc)) from None
        await attach_again("the bus connection", attempt)
        say("connected to arqond again")

    async def _read(self, client: ArqonBusClient) -> None:
        reason = "arqond closed the connection"
        try:
            while True:
                self._dispatch(await client.recv_json())
        except ArqonBusSDKError as exc:
            reason = f"arqond closed the connection ({exc})"
        finally:
            if self.client is client:
                self.client = None
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(BusError(f"{reason}; try again"))
            self.waiting.clear()
            if not self.closing:
                self.reconnecting = asyncio.create_task(self._connect_again())

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("response", "error") and frame.get("request_id") in self.waiting:
            future = self.waiting.pop(frame["request_id"])
        elif kind == "message_response" and frame.get("id") in self.waiting:
            future = self.waiting.pop(frame["id"])
        else:
            room, channel = frame.get("room"), frame.get("channel")
            if kind in ("message", "event") and (room, channel) in self.watched:
                self.on_message((room, channel), frame)
            return
        if not future.done():
            future.set_result(frame)

    async def _exchange(self, frame: dict[str, Any], what: str,
                        timeout: float | None = None) -> dict[str, Any]:
        """Send ``frame`` and wait for its answer (a response, an acknowledgement or an
        error), up to ``timeout`` (default: the link's); BusError with the error's text and
        code."""
        if self.client is None:
            await self.connect()
        assert self.client is not None
        timeout = timeout or self.timeout
        future = asyncio.get_running_loop().create_future()
        self.waiting[frame["id"]] = future
        try:
            await self.client.send_json(frame)
            answer = await asyncio.wait_for(future, timeout)
        except ArqonBusSDKError as exc:
            raise BusError(f"{what}: {exc}") from None
        except TimeoutError:
            raise BusError(f"{what}: no answer from arqond within {timeout:g}s") from None
        finally:
            self.waiting.pop(frame["id"], None)
        if answer.get("type") == "error" or answer.get("status") == "error":
            raise BusError(f"{what}: {answer.get('error')} ({answer.get('error_code')})",
                           answer.get("error_code"))
        return answer

    async def command(self, name: str, args: dict[str, Any], *,
                      timeout: float | None = None) -> dict[str, Any]:
        """A command's data; BusError "NAME: error (CODE)", the text arqon prints. A command
        that may wait before answering (a read with ``wait``) gives its own ``timeout``."""
        answer = await self._exchange({"type": "command", "id": self.ids.next(),
                                       "command": name, "args": args}, name, timeout)
        return answer["payload"]["data"]

    async def publish(self, room: str, channel: str, payload: Any) -> str:
        """Publish a message and wait for arqond to take it; its id."""
        message_id = self.ids.next()
        await self._exchange({"type": "message", "id": message_id, "room": room,
                              "channel": channel, "payload": payload},
                             f"publish to {room}:{channel}")
        return message_id

    async def watch(self, target: Target) -> None:
        """Join room:channel (once) so its messages reach ``on_message``."""
        if target in self.watched:
            return
        await self.command("join_channel", {"room": target[0], "channel": target[1]})
        self.watched.add(target)
