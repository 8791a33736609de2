"""arqon subcommands for Zgents: zgent register|unregister|list, recv, send-to.

``register(subparsers)`` adds them to the arqon parser; each sets ``func(args) -> int``.
The MOO dir comes from the configuration (common.zgent_path); ``zgent`` reaches the bus like
every arqon subcommand (``--ws-url``, the control socket, ...). ``call`` and ``serve`` live
in call.py and serve.py.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
from typing import Any

import orjson

from arqond.cli.call import NOT_SERVED, ask, exit_status
from arqond.cli.common import (CliError, add_bus_arguments, bus_client, check_wait,
                               command_data, print_compact, run, zgent_name, zgent_path)
from arqond.core.moo.session import MAX_RECV_WAIT
from arqond.sdk import join_group_hint


# -- zgent register|unregister|list: commands on the bus --------------------------------------

def _bus_command(args: argparse.Namespace, command: str, arguments: dict[str, Any]) -> int:
    print_compact(run(command_data(bus_client(args), command, arguments, args.timeout_seconds)))
    return 0


def _zgent_register(args: argparse.Namespace) -> int:
    command_args: dict[str, Any] = {"id": zgent_name(args.zgent),
                                    "capabilities": args.capability}
    for key in ("name", "session", "pane"):
        if getattr(args, key) is not None:
            command_args[key] = getattr(args, key)
    if args.uid:
        command_args["uids"] = [int(u) if u.isdigit() else u for u in args.uid]
    if args.group:
        command_args["groups"] = [int(g) if g.isdigit() else g for g in args.group]
    return _bus_command(args, "zgent.register", command_args)


def _zgent_unregister(args: argparse.Namespace) -> int:
    return _bus_command(args, "zgent.unregister", {"id": zgent_name(args.zgent)})


def _zgent_list(args: argparse.Namespace) -> int:
    return _bus_command(args, "zgent.list", {})


# -- recv, send-to: the Zgent's socket and inbox ----------------------------------------------

def _recv(args: argparse.Namespace) -> int:
    check_wait(args.wait, MAX_RECV_WAIT)
    answer = ask(zgent_path(args, ".sock"), {"jsonrpc": "2.0", "id": 1, "method": "arqon.recv",
                                             "params": {"wait": args.wait}}, args.wait + 30)
    if "error" in answer:
        raise CliError(answer["error"]["message"], exit_status(answer["error"]))
    if answer["result"] is None:
        raise CliError(f"no message for {args.zgent}"
                       + (f" within {args.wait:g}s" if args.wait else ""))
    print_compact(answer["result"])
    return 0


def _send_to(args: argparse.Namespace) -> int:
    try:
        message = orjson.loads(args.json)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"not valid JSON: {exc}") from None
    write_inbox(zgent_path(args, "-inbox"), args.zgent, message)
    return 0


def write_inbox(path: str, zgent: str, message: Any) -> None:
    """Write ``message`` as one JSON line to Zgent ``zgent``'s inbox FIFO at ``path``;
    CliError saying why when it cannot (arqon send-to, and arqon mcp's send)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise CliError(f"{path} does not exist (is {zgent} registered?)") from None
    if not stat.S_ISFIFO(info.st_mode):
        raise CliError(f"{path} is not a FIFO; not writing to it")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError as exc:
        raise CliError(f"cannot write to {path}: {exc.strerror} ({join_group_hint(path)})") \
            from None
    except OSError as exc:
        why = f" ({NOT_SERVED})" if exc.errno == errno.ENXIO else ""   # nobody reads it
        raise CliError(f"cannot write to {path}: {exc.strerror}{why}") from None
    try:
        os.set_blocking(fd, True)
        os.write(fd, orjson.dumps(message) + b"\n")
    finally:
        os.close(fd)


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

    send = subparsers.add_parser("send-to", help="write one JSON message to NAME-inbox")
    send.add_argument("zgent", metavar="NAME")
    send.add_argument("json", metavar="JSON")
    send.set_defaults(func=_send_to)
