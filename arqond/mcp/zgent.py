"""The agent's Zgent, through the wire of arqond-moo(7) only: its socket (arqon.serve,
arqon.recv), other Zgents' sockets (a call), inboxes (a FIFO line) and its narrative log.

``Handler`` is the connection that serves the Zgent: arqond forwards each request for it
there, the handler keeps it until the agent takes it (the ``requests`` tool) and writes the
agent's answer back (``reply``). A request waits at most ``moo.handler_timeout`` seconds,
after which arqond has answered the caller itself, so older ones are dropped; and at most
``limit`` wait at once, past which a caller is told at once that the agent is busy. Pane
requests never reach the agent: tmux carries them out (with ``--relay-pane``, arqond/cli/pane.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import orjson

from arqond.cli.call import answer_of, connection_error
from arqond.cli.common import CliError, say
from arqond.cli.narrative import open_shared_log
from arqond.cli.pane import reply_to as pane_reply
from arqond.cli.serve import LINE_LIMIT, attach_again, attach_handler, requests_of
from arqond.core import jsonrpc
from arqond.core.errors import RpcCode
from arqond.core.moo import pane


async def ask(path: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request to the socket at ``path`` on a connection of its own, and its answer.
    Going away (a cancelled call) closes the connection, so arqond keeps what it had not
    given yet (a mailbox message waited for) for the next reader. CliError as arqon call."""
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=LINE_LIMIT)
    except OSError as exc:
        raise connection_error(path, exc) from None
    try:
        writer.write(jsonrpc.line(request))
        try:
            raw = await asyncio.wait_for(reader.readline(), timeout)
        except TimeoutError:
            raise CliError(f"no answer from {path} within {timeout:g}s") from None
        except (OSError, ValueError):
            raw = b""
    finally:
        writer.close()
    return answer_of(path, raw)


def narrative_line(name: str, content: Any, kind: str, tags: list[str]) -> bytes:
    """One line of the seed's narrative schema (arqond-moo(7)), from ``name``."""
    line: dict[str, Any] = {"ts": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "from": name, "type": kind, "content": content}
    if tags:
        line["tags"] = tags
    return orjson.dumps(line) + b"\n"


def append_line(path: str, line: bytes) -> None:
    """Append one line with a single write (concurrent writers never interleave)."""
    try:
        fd = open_shared_log(path)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:
        raise CliError(f"cannot append to {path}: {exc.strerror}") from None


@dataclass
class Request:
    """A request for the Zgent, as arqond forwarded it (``id`` is arqond's own; None for a
    notification, which wants no reply)."""

    id: Any
    method: str
    params: Any
    received: float = field(default_factory=time.monotonic)
    taken: bool = False

    def shown(self) -> dict[str, Any]:
        return {"id": self.id, "method": self.method, "params": self.params}


class Handler:
    """The connection that serves Zgent ``name``, and the requests waiting for the agent."""

    def __init__(self, name: str, path: str, *, limit: int, expiry: float,
                 on_request: Callable[[], None], relaying_pane: bool = False) -> None:
        self.name = name
        self.path = path
        self.limit = limit
        self.expiry = expiry
        self.on_request = on_request
        self.relaying_pane = relaying_pane
        self.relays: set[asyncio.Task[None]] = set()
        self.waiting: dict[Any, Request] = {}
        self.arrived = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def attach(self) -> asyncio.StreamReader:
        """Attach as the Zgent's handler; CliError "cannot serve NAME: ..." when refused."""
        reader, self.writer = await attach_handler(self.path, self.name)
        say(f"serving Zgent {self.name} for the agent")
        return reader

    async def start(self) -> None:
        reader = await self.attach()  # a first refusal is the user's to see at once
        self.task = asyncio.create_task(self._serve(reader))

    async def close(self) -> None:
        tasks = [task for task in (self.task, *self.relays) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.writer is not None:
            self.writer.close()

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        """Take requests until arqond closes the socket, then attach again (arqond
        restarted), as arqon serve does."""
        while True:
            await self._take_lines(reader)
            self.waiting.clear()  # arqond answered their callers when the socket closed
            reader = await attach_again(self.path, self.attach)

    async def _take_lines(self, reader: asyncio.StreamReader) -> None:
        async for request in requests_of(reader):
            if request["method"] in pane.METHODS:   # arqond forwarded it, having checked
                self._relay(request)
            else:
                self._keep(Request(request.get("id"), request["method"], request.get("params")))
        if self.writer is not None:
            self.writer.close()

    def _relay(self, request: dict[str, Any]) -> None:
        """A pane request: tmux carries it out (with --relay-pane), not the agent."""
        async def relay() -> None:
            reply = await pane_reply(request, self.name, self.relaying_pane, self.expiry)
            if "id" in request:
                self._write(reply)
        task = asyncio.create_task(relay())
        self.relays.add(task)
        task.add_done_callback(self.relays.discard)

    def _keep(self, request: Request) -> None:
        self._drop_expired()
        if len(self.waiting) >= self.limit:
            say(f"{self.name}: {self.limit} requests wait for the agent (--max-requests); "
                f"refusing {request.method}")
            if request.id is not None:
                self._write(jsonrpc.error(request.id, RpcCode.BUSY,
                                         f"{self.name}'s agent has {self.limit} requests "
                                         "waiting; try again later"))
            return
        # A notification has no id: a key of its own keeps it until the agent takes it.
        self.waiting[request.id if request.id is not None else object()] = request
        self.arrived.set()
        self.on_request()

    def _drop_expired(self) -> None:
        """Forget what arqond has answered for us (moo.handler_timeout ran out)."""
        oldest = time.monotonic() - self.expiry
        for key in [key for key, request in self.waiting.items() if request.received < oldest]:
            del self.waiting[key]

    def pending(self) -> list[dict[str, Any]]:
        """Every request still waiting for the agent, oldest first, taken or not."""
        self._drop_expired()
        return [request.shown() for request in self.waiting.values()]

    async def take(self, wait: float) -> list[dict[str, Any]]:
        """The requests the agent has not taken yet, oldest first, waiting up to ``wait``
        seconds for one. A request stays answerable with ``reply`` until it expires; a
        notification is gone once taken."""
        self._drop_expired()
        if wait > 0 and all(request.taken for request in self.waiting.values()):
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), wait)
            except TimeoutError:
                return []
            self._drop_expired()
        taken = []
        for key, request in list(self.waiting.items()):
            if not request.taken:
                request.taken = True
                taken.append(request.shown())
                if request.id is None:
                    del self.waiting[key]
        return taken

    def reply(self, request_id: Any, answer: dict[str, Any]) -> None:
        """Answer request ``request_id`` with {"result": ...} or {"error": {...}}."""
        self._drop_expired()
        if request_id not in self.waiting:
            raise CliError(f"no request {request_id!r} waits for an answer from {self.name} "
                           "(answered already, or its caller stopped waiting: arqond answers "
                           f"for the agent after {self.expiry:g}s)")
        reply = {"jsonrpc": "2.0", "id": request_id, **answer}
        problem = jsonrpc.check_response(reply)
        if problem:
            raise CliError(f"not a valid JSON-RPC reply: {problem}")
        if self.writer is None or self.writer.is_closing():
            raise CliError(f"{self.name} is not attached to arqond right now (it restarted); "
                           f"request {request_id!r} was answered -32001 for the agent")
        del self.waiting[request_id]
        self._write(reply)

    def _write(self, reply: dict[str, Any]) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(jsonrpc.line(reply))
