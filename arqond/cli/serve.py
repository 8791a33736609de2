"""arqon serve: attach as a Zgent's request handler and run HANDLER once per request, inetd
style, for Zgents written in shell.

HANDLER runs under /bin/sh in a process group of its own, so that running too long ends the
whole group (SIGTERM, then SIGKILL), pipelines and grandchildren included, and the caller is
answered at once. What HANDLER prints becomes the reply (``reply_of_output``). When arqond
closes the socket (it restarted, or stopped), ``serve`` attaches again, waiting longer after
each failure, and says so on stderr, where it also logs one line per request. Pane requests
(``arqon.pane.*``) never reach HANDLER: with ``--relay-pane`` tmux carries them out
(arqond/cli/pane.py), else they are answered -32001.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import orjson

from arqond.cli.call import EXIT_REFUSED, connection_error, exit_status
from arqond.cli.common import CliError, say, zgent_path
from arqond.cli.pane import reply_to as pane_reply
from arqond.core import jsonrpc
from arqond.core.errors import RpcCode
from arqond.core.moo import pane
# Attaching again after arqond closed the socket: as the SDK connects again.
from arqond.sdk import RECONNECT_FIRST, RECONNECT_MAX

# Between SIGTERM and SIGKILL of a handler's process group that ran too long.
TERM_GRACE = 2.0
LINE_LIMIT = 1 << 24
Connection = TypeVar("Connection")


def is_response(value: Any) -> bool:
    """A JSON-RPC response object rather than a plain result: only jsonrpc, id, result and
    error, and one of the last two."""
    return isinstance(value, dict) and ("result" in value or "error" in value) and \
        value.keys() <= jsonrpc.RESPONSE_KEYS


def reply_of_output(request_id: Any, out: bytes) -> dict[str, Any]:
    """The reply to send for what HANDLER printed, under the request's id.

    A JSON-RPC response object passes as it is (its own code, message and data), an error
    that is only a string (as the tmuxMOO scripts write it) as code -32000; any other JSON
    value is the result.
    """
    try:
        value = orjson.loads(out)
    except orjson.JSONDecodeError:
        return jsonrpc.error(request_id, RpcCode.INTERNAL_ERROR,
                             "handler output is not one JSON value")
    if not is_response(value):
        return jsonrpc.result(request_id, value)
    if isinstance(value.get("error"), str) and "result" not in value:
        return jsonrpc.error(request_id, RpcCode.HANDLER_FAILED, value["error"])
    problem = jsonrpc.check_response(value)
    if problem:
        return jsonrpc.error(request_id, RpcCode.INTERNAL_ERROR,
                             f"handler printed an invalid JSON-RPC response: {problem}")
    return {**value, "jsonrpc": "2.0", "id": request_id}


def failure_reply(request_id: Any, status: int, err: bytes) -> dict[str, Any]:
    detail = err.decode(errors="replace").strip().splitlines()
    return jsonrpc.error(request_id, RpcCode.HANDLER_FAILED,
                         f"handler exited with status {status}"
                         + (f": {detail[-1]}" if detail else ""))


async def end_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to the handler's process group, SIGKILL TERM_GRACE seconds later if any of it
    still holds on."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass  # the whole group is gone already
        try:  # wait() also waits for the pipes, which the last member of the group closes
            await asyncio.wait_for(process.wait(), TERM_GRACE)
            return
        except asyncio.TimeoutError:
            continue


async def attach_handler(path: str, zgent: str
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to Zgent ``zgent``'s socket at ``path`` and say ``arqon.serve``; CliError
    "cannot serve NAME: ..." with the exit status of its kind when arqond will not have us."""
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=LINE_LIMIT)
    except OSError as exc:
        raise connection_error(path, exc) from None
    writer.write(jsonrpc.line({"jsonrpc": "2.0", "id": "serve", "method": "arqon.serve"}))
    try:
        answer = orjson.loads(await reader.readline() or b"{}")
    except (OSError, ValueError):  # orjson's decode error is a ValueError
        answer = {}
    if "result" not in answer:
        writer.close()
        error = answer.get("error") or {"code": None, "message": "arqond closed the socket"}
        status = exit_status(error) if isinstance(error.get("code"), int) else EXIT_REFUSED
        raise CliError(f"cannot serve {zgent}: {error['message']}", status)
    return reader, writer


async def attach_again(what: str, attach: Callable[[], Awaitable[Connection]]) -> Connection:
    """``attach()`` after arqond closed ``what`` (it restarted, or stopped), saying so, and
    waiting longer after each failure until it succeeds."""
    delay = RECONNECT_FIRST
    say(f"arqond closed {what}; attaching again in {delay:g}s")
    while True:
        await asyncio.sleep(delay)
        delay = min(delay * 2, RECONNECT_MAX)
        try:
            return await attach()
        except CliError as exc:
            say(f"{exc}; trying again in {delay:g}s")


async def requests_of(reader: asyncio.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """Each request arqond forwards to an attached handler, until it closes the connection;
    lines that are not requests are skipped."""
    while True:
        try:
            raw = await reader.readline()
        except (OSError, ValueError):  # reset, or a line past LINE_LIMIT: start afresh
            return
        if not raw:
            return
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(request, dict) and isinstance(request.get("method"), str):
            yield request


class Server:
    """One ``arqon serve``: the socket connection of the moment and the handlers running."""

    def __init__(self, args: argparse.Namespace, path: str) -> None:
        self.zgent = args.zgent
        self.handler = args.exec
        self.relaying_pane = args.relay_pane
        self.timeout = args.timeout
        self.path = path
        self.slots = asyncio.Semaphore(args.jobs)
        self.running: set[asyncio.Task[None]] = set()

    async def attach(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        connection = await attach_handler(self.path, self.zgent)
        say(f"serving {self.zgent} with {self.handler}")
        return connection

    async def run(self) -> None:
        connection = await self.attach()  # a first failure ends serve: most likely a mistake
        while True:
            await self.serve_requests(*connection)
            connection = await attach_again(self.path, self.attach)

    async def serve_requests(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        """Start a handler for each request line until arqond closes the connection."""
        async for request in requests_of(reader):
            task = asyncio.create_task(self.answer(request, writer))
            self.running.add(task)
            task.add_done_callback(self.running.discard)
        writer.close()

    async def answer(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        async with self.slots:
            started = time.monotonic()
            if request["method"] in pane.METHODS:   # arqond forwarded it, having checked
                reply = await pane_reply(request, self.zgent, self.relaying_pane,
                                         self.timeout)
                self.send(request, reply, writer, started)
                return
            request_id = request.get("id")
            env = {**os.environ, "ZGENT": self.zgent, "ARQON_METHOD": request["method"]}
            process = await asyncio.create_subprocess_shell(
                self.handler, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, process_group=0)
            try:
                try:
                    out, err = await asyncio.wait_for(
                        process.communicate(jsonrpc.line(request)), self.timeout)
                except asyncio.TimeoutError:
                    reply = jsonrpc.error(request_id, RpcCode.TIMEOUT,
                                          f"handler ran longer than {self.timeout:g}s")
                else:
                    reply = (reply_of_output(request_id, out) if process.returncode == 0
                             else failure_reply(request_id, process.returncode, err))
                self.send(request, reply, writer, started)
                if process.returncode is None:
                    await end_group(process)
            finally:  # cancelled (serve is stopping) or failed: leave no handler behind
                if process.returncode is None:
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def send(self, request: dict[str, Any], reply: dict[str, Any],
             writer: asyncio.StreamWriter, started: float) -> None:
        error = reply.get("error")
        outcome = f"error {error['code']}: {error['message']}" if error else "ok"
        say(f"{self.zgent}: {request['method']} {time.monotonic() - started:.3f}s {outcome}")
        if "id" in request and not writer.is_closing():
            writer.write(jsonrpc.line(reply))


async def _serve_until_stopped(server: Server) -> None:
    """Run until arqon is told to stop; SIGTERM stops it as Ctrl-C does, handlers ended."""
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        await server.run()
    finally:
        for task in list(server.running):
            task.cancel()
        await asyncio.gather(*server.running, return_exceptions=True)


def _serve(args: argparse.Namespace) -> int:
    if args.jobs < 1 or args.timeout <= 0:
        raise CliError("--jobs must be at least 1 and --timeout greater than 0")
    if not args.exec.strip():
        raise CliError("--exec needs a shell command (HANDLER is empty)")
    server = Server(args, zgent_path(args, ".sock"))
    try:
        asyncio.run(_serve_until_stopped(server))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="answer NAME's requests by running HANDLER once per request",
        description="Attach as Zgent NAME's request handler and run HANDLER with /bin/sh once "
        "per request: the request as one JSON line on its stdin; what it prints is the reply "
        "(a JSON-RPC response object, passed on under the caller's id, or any other JSON "
        "value, the result). With --relay-pane, also looks at and types into NAME's tmux pane "
        "for NAME's owners. Attaches again when arqond restarts; logs each request on "
        "stderr.")
    serve.add_argument("zgent", metavar="NAME")
    serve.add_argument("--exec", required=True, metavar="HANDLER",
                       help="shell command: request JSON on stdin, reply JSON on stdout")
    serve.add_argument("--relay-pane", action="store_true",
                       help="also carry out arqon.pane.capture and arqon.pane.send, which "
                            "arqond forwards from NAME's owners, with tmux in this user's "
                            "server")
    serve.add_argument("--jobs", type=int, default=4, help="HANDLERs run at once (default 4)")
    serve.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                       help="end a HANDLER (its whole process group) running longer and "
                            "answer -32002 (default 60)")
    serve.set_defaults(func=_serve)
