"""arqon subcommands for Zgents: zgent register|unregister|list, recv, serve, send-to.

``register(subparsers)`` adds them to the arqon parser; each sets ``func(args) -> int``.
The MOO dir comes from the configuration (ARQONBUS_CONFIG, ARQONBUS_MOO_DIR); ``zgent``
reaches the bus like every arqon subcommand (``--ws-url``, the control socket, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import stat
import sys
from typing import Any

import orjson

from arqond import config as configuration
from arqond.cli.common import CliError, add_bus_arguments, bus_client, command_data, run
from arqond.core import jsonrpc
from arqond.core.moo.names import ZgentError, check_name
from arqond.core.errors import RpcCode

SERVE_ERROR = -32000


def _config(args: argparse.Namespace) -> configuration.Config:
    try:
        return configuration.load(getattr(args, "config", None))
    except configuration.ConfigError as exc:
        raise CliError(str(exc)) from None


def _name(text: str) -> str:
    try:
        return check_name(text)
    except ZgentError as exc:
        raise CliError(str(exc)) from None


def _moo_path(args: argparse.Namespace, suffix: str) -> str:
    return os.path.join(_config(args).moo.dir, _name(args.zgent) + suffix)


def _print(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")
    sys.stdout.flush()


# -- zgent register|unregister|list: commands on the bus --------------------------------------

def _bus_command(args: argparse.Namespace, command: str, arguments: dict[str, Any]) -> int:
    _print(run(command_data(bus_client(args), command, arguments, args.timeout_seconds)))
    return 0


def _zgent_register(args: argparse.Namespace) -> int:
    command_args: dict[str, Any] = {"id": _name(args.zgent), "capabilities": args.capability}
    for key in ("name", "session", "pane"):
        if getattr(args, key) is not None:
            command_args[key] = getattr(args, key)
    if args.uid:
        command_args["uids"] = [int(u) if u.isdigit() else u for u in args.uid]
    if args.group:
        command_args["groups"] = [int(g) if g.isdigit() else g for g in args.group]
    return _bus_command(args, "zgent.register", command_args)


def _zgent_unregister(args: argparse.Namespace) -> int:
    return _bus_command(args, "zgent.unregister", {"id": _name(args.zgent)})


def _zgent_list(args: argparse.Namespace) -> int:
    return _bus_command(args, "zgent.list", {})


# -- recv, send-to: the Zgent's socket and inbox ----------------------------------------------

def _connect(path: str, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot connect to {path}: {exc.strerror} (is the Zgent registered "
                       "and arqond running?)") from None
    return sock


def _recv(args: argparse.Namespace) -> int:
    if not 0 <= args.wait <= 3600:
        raise CliError("--wait must be 0 to 3600 seconds")
    path = _moo_path(args, ".sock")
    with _connect(path, args.wait + 30) as sock:
        sock.sendall(jsonrpc.line({"jsonrpc": "2.0", "id": 1, "method": "arqon.recv",
                                   "params": {"wait": args.wait}}))
        with sock.makefile("rb") as stream:
            try:
                raw = stream.readline()
            except TimeoutError:
                raise CliError(f"no answer from {path}") from None
    if not raw:
        raise CliError(f"{path} closed without answering")
    answer = orjson.loads(raw)
    if "error" in answer:
        raise CliError(answer["error"]["message"])
    if answer["result"] is None:
        raise CliError(f"no message for {args.zgent}"
                       + (f" within {args.wait:g}s" if args.wait else ""))
    _print(answer["result"])
    return 0


def _send_to(args: argparse.Namespace) -> int:
    try:
        message = orjson.loads(args.json)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"not valid JSON: {exc}") from None
    path = _moo_path(args, "-inbox")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise CliError(f"{path} does not exist (is {args.zgent} registered?)") from None
    if not stat.S_ISFIFO(info.st_mode):
        raise CliError(f"{path} is not a FIFO; not writing to it")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise CliError(f"cannot write to {path}: {exc.strerror} (is arqond running?)") from None
    try:
        os.set_blocking(fd, True)
        os.write(fd, orjson.dumps(message) + b"\n")
    finally:
        os.close(fd)
    return 0


# -- serve: one HANDLER process per request, inetd style -----------------------------------

async def _run_handler(handler: str, zgent: str, request: dict[str, Any],
                       timeout: float) -> dict[str, Any]:
    """The reply to one request: HANDLER's stdout as the result, or a JSON-RPC error."""
    request_id = request.get("id")
    env = {**os.environ, "ZGENT": zgent, "ARQON_METHOD": request["method"]}
    process = await asyncio.create_subprocess_shell(
        handler, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    try:
        out, err = await asyncio.wait_for(process.communicate(jsonrpc.line(request)), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        return jsonrpc.error(request_id, SERVE_ERROR, f"handler ran longer than {timeout:g}s")
    if process.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        return jsonrpc.error(request_id, SERVE_ERROR, f"handler exited with status "
                             f"{process.returncode}" + (f": {detail[-1]}" if detail else ""))
    try:
        return jsonrpc.result(request_id, orjson.loads(out))
    except orjson.JSONDecodeError:
        return jsonrpc.error(request_id, RpcCode.INTERNAL_ERROR,
                             "handler output is not one JSON value")


async def _serve_loop(path: str, args: argparse.Namespace) -> int:
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=1 << 24)
    except OSError as exc:
        raise CliError(f"cannot connect to {path}: {exc.strerror}") from None
    writer.write(jsonrpc.line({"jsonrpc": "2.0", "id": "serve", "method": "arqon.serve"}))
    answer = orjson.loads(await reader.readline() or b"{}")
    if "error" in answer or "result" not in answer:
        raise CliError(f"cannot serve {args.zgent}: "
                       f"{answer.get('error', {}).get('message', 'no answer')}")
    print(f"arqon: serving {args.zgent} with {args.exec}", file=sys.stderr)
    slots = asyncio.Semaphore(args.jobs)
    running: set[asyncio.Task[None]] = set()

    async def one(request: dict[str, Any]) -> None:
        async with slots:
            reply = await _run_handler(args.exec, args.zgent, request, args.timeout)
        if "id" in request:
            writer.write(jsonrpc.line(reply))

    while raw := await reader.readline():
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(request, dict) and isinstance(request.get("method"), str):
            task = asyncio.create_task(one(request))
            running.add(task)
            task.add_done_callback(running.discard)
    raise CliError(f"arqond closed {path}")


def _serve(args: argparse.Namespace) -> int:
    if args.jobs < 1 or args.timeout <= 0:
        raise CliError("--jobs must be at least 1 and --timeout greater than 0")
    path = _moo_path(args, ".sock")
    try:
        return asyncio.run(_serve_loop(path, args))
    except KeyboardInterrupt:
        return 0


# -- the parsers -------------------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction) -> None:
    zgent = subparsers.add_parser("zgent", help="register, unregister or list Zgents")
    actions = zgent.add_subparsers(dest="zgent_action", required=True, metavar="ACTION")

    add = actions.add_parser("register", help="register a Zgent: NAME-inbox and NAME.sock")
    add.add_argument("zgent", metavar="NAME")
    add.add_argument("--capability", action="append", default=[], metavar="VERB:NOUN",
                     help="a capability (repeatable), e.g. query:volume")
    add.add_argument("--name", help="display name in registry.json (default NAME)")
    add.add_argument("--session", help="tmux session (default NAME)")
    add.add_argument("--pane", help="tmux pane (default NAME:main.0)")
    add.add_argument("--uid", action="append", default=[], metavar="USER",
                     help="user allowed to serve it (repeatable)")
    add.add_argument("--group", action="append", default=[], metavar="GROUP",
                     help="group allowed to serve it (repeatable)")
    add_bus_arguments(add)
    add.set_defaults(func=_zgent_register)

    remove = actions.add_parser("unregister", help="remove a Zgent's inbox and socket")
    remove.add_argument("zgent", metavar="NAME")
    add_bus_arguments(remove)
    remove.set_defaults(func=_zgent_unregister)

    listing = actions.add_parser("list", help="the registry, as JSON")
    add_bus_arguments(listing)
    listing.set_defaults(func=_zgent_list)

    recv = subparsers.add_parser("recv", help="print NAME's next inbox message as one JSON line")
    recv.add_argument("zgent", metavar="NAME")
    recv.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                      help="wait up to SECONDS for a message (default: do not wait)")
    recv.set_defaults(func=_recv)

    serve = subparsers.add_parser(
        "serve", help="answer NAME's requests by running HANDLER once per request")
    serve.add_argument("zgent", metavar="NAME")
    serve.add_argument("--exec", required=True, metavar="HANDLER",
                       help="shell command: request JSON on stdin, result JSON on stdout")
    serve.add_argument("--jobs", type=int, default=4, help="HANDLERs run at once (default 4)")
    serve.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                       help="kill a HANDLER running longer (default 60)")
    serve.set_defaults(func=_serve)

    send = subparsers.add_parser("send-to", help="write one JSON message to NAME-inbox")
    send.add_argument("zgent", metavar="NAME")
    send.add_argument("json", metavar="JSON")
    send.set_defaults(func=_send_to)
