"""arqon tail, arqon read, arqon send, arqon cmd: the bus from the shell.

Each talks to arqond over the WebSocket, or over the local control socket when no URL is
given and the socket exists (see common.bus_client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, AsyncIterator

from arqond.cli.call import EXIT_REFUSED
from arqond.cli.common import (CliError, add_bus_arguments, bus_client, check_wait,
                               cli_config, colour_on, command_data, keep_only, paint,
                               parse_json, print_json, print_line, run, say_if_not_recovered)
from arqond.cli import narrative
from arqond.core.cursors import DEFAULT_LIMIT as DEFAULT_READ_LIMIT, MAX_WAIT
from arqond.core.errors import ErrorCode
from arqond.core.position import parse_position
from arqond.core.router import WILDCARD
from arqond.sdk import TIMED_OUT, ArqonBusClient, ArqonBusConnectionError, CommandFailed

STDIN_LINE_LIMIT = 1 << 24


def register(subparsers: argparse._SubParsersAction) -> None:
    tail = subparsers.add_parser(
        "tail", help="print frames arriving on the bus",
        description="Connect, optionally join a channel and send one frame, then print "
        "--limit frames (the welcome frame counts), or every frame with --follow.")
    add_bus_arguments(tail)
    tail.add_argument("--limit", type=int, default=1, help="frames to print before exiting "
                      "(default 1)")
    tail.add_argument("--send", metavar="JSON", help="a JSON object to send right after "
                      "connecting (and joining)")
    tail.add_argument("--raw", action="store_true", help="print each frame as one JSON line")
    tail.add_argument("--room", help="join this room's --channel first (or ROOM:CHANNEL) and "
                      "follow only it")
    tail.add_argument("--channel", help="the channel to join (or ROOM:CHANNEL)")
    tail.add_argument("--follow", action="store_true", help="keep printing until interrupted")
    tail.add_argument("--moo", metavar="NAME", help="print Zgent NAME's narrative as the "
                      "seed's moo-tail does ([HH:MM:SS] content), the last --lines of it, then "
                      "live until interrupted; an empty one is said on stderr, then waited for")
    tail.add_argument("--lines", type=int, default=10, help="with --moo: lines of history "
                      "shown first (default 10)")
    tail.add_argument("--since", metavar="SEQ[:EPOCH]", help="with --room and --channel: "
                      "first every message after seq SEQ of epoch EPOCH (the last one seen; "
                      "without EPOCH, in the stream as it is now), then live ones; said on "
                      "stderr when that is not all that was missed")
    tail.set_defaults(func=tail_command)

    read = subparsers.add_parser(
        "read", help="print a channel's messages after a named cursor, and move it",
        description="Print the messages of ROOM:CHANNEL after the cursor CURSOR, oldest "
        "first, one JSON line each (as tail --raw), then move the cursor to the last one "
        "printed: a reader stopped before that reads them again, never loses one. arqond "
        "keeps the cursor, per user, across restarts. Nothing new: nothing printed, exit 0.")
    read.add_argument("target", metavar="ROOM:CHANNEL")
    read.add_argument("--cursor", required=True, metavar="CURSOR",
                      help="the cursor's name (1 to 128 characters)")
    read.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                      help="wait up to SECONDS for a message when none is new (default: do "
                           "not wait)")
    read.add_argument("--limit", type=int, default=DEFAULT_READ_LIMIT, metavar="N",
                      help=f"print at most N messages (default {DEFAULT_READ_LIMIT})")
    add_bus_arguments(read)
    read.set_defaults(func=read_command)

    send = subparsers.add_parser(
        "send", help="publish JSON payloads to ROOM:CHANNEL",
        description="Publish JSON as the payload of a message to ROOM:CHANNEL (or ROOM for "
        "the whole room); without JSON, every stdin line is one payload. Prints the ack or "
        "error frame of each as one JSON line; exits 1 if any failed.")
    send.add_argument("target", metavar="ROOM:CHANNEL")
    send.add_argument("payload", nargs="?", metavar="JSON")
    add_bus_arguments(send)
    send.set_defaults(func=send_command)

    cmd = subparsers.add_parser(
        "cmd", help="run a bus command and print its data",
        description="Run command NAME with arguments key=value (a value that parses as JSON "
        "is taken as JSON, anything else as a string); print the response data as JSON.")
    cmd.add_argument("name", metavar="NAME")
    cmd.add_argument("arguments", nargs="*", metavar="KEY=VALUE")
    add_bus_arguments(cmd)
    cmd.set_defaults(func=cmd_command)


# -- tail -----------------------------------------------------------------------------------

# How ``tail`` marks each field on a terminal: the values people scan for stand out.
FIELD_STYLES = {"type": "bold", "sender": "green", "room": "cyan", "channel": "cyan"}


def format_frame(frame: dict[str, Any], raw: bool, colour: bool = False) -> str:
    if raw:
        return json.dumps(frame, sort_keys=True)
    styles = {**FIELD_STYLES, "type": "red" if frame.get("type") == "error" else "bold"}
    fields = " ".join(f"{key}={paint(str(frame.get(key, '')), style, colour)}"
                      for key, style in styles.items())
    payload = json.dumps(frame.get("payload", {}), sort_keys=True)
    return f"{paint(str(frame.get('timestamp', '')), 'dim', colour)} {fields} payload={payload}"


def tail_command(args: argparse.Namespace) -> int:
    since = None
    if args.since is not None:
        if args.moo is not None:
            raise CliError("--since is not for --moo, which shows the last --lines first")
        if not (args.room or args.channel):
            raise CliError("--since needs the channel it resumes: --room ROOM --channel "
                           "CHANNEL")
        try:
            since = parse_position(args.since)
        except ValueError as exc:
            raise CliError(f"--since: {exc}") from None
    if args.moo is not None:
        if args.lines < 0:
            raise CliError("--lines must be 0 or more")
        try:
            return run(narrative.follow_moo(
                bus_client(args), args.moo, sys.stdout, lines=args.lines, notes=sys.stderr,
                log_dir=cli_config(args).moo.log_dir, colour=colour_on(sys.stdout)))
        except KeyboardInterrupt:
            return 0  # interrupting is how a moo-tail ends
    send = None
    if args.send is not None:
        send = parse_json(args.send, "--send")
        if not isinstance(send, dict):
            raise CliError("--send payload must be a JSON object")
    if args.limit < 1 and not args.follow:
        raise CliError("--limit must be at least 1")
    client = bus_client(args)
    try:
        return run(_tail(client, args, send, since))
    except KeyboardInterrupt:
        if args.follow:
            return 0  # interrupting --follow is how it is meant to end
        raise


async def _tail(client: ArqonBusClient, args: argparse.Namespace,
                send: dict[str, Any] | None, since: tuple[int, str | None] | None) -> int:
    async with client:
        if args.room or args.channel:
            await _join_only(client, args.room, args.channel, args.timeout_seconds, since)
        if send is not None:
            await client.send_json(send)
        timeout = None if args.follow else args.timeout_seconds
        colour = colour_on(sys.stdout)
        printed = 0
        while args.follow or printed < args.limit:
            frame = await client.recv_json(timeout=timeout)
            print(format_frame(frame, args.raw, colour), flush=True)
            printed += 1
    return 0


async def _join_only(client: ArqonBusClient, room: str | None, channel: str | None,
                     timeout: float, since: tuple[int, str | None] | None = None) -> None:
    """Join room:channel (resuming after ``since``) and leave the default channel."""
    arguments: dict[str, Any] = {"room": room, "channel": channel}
    named = f"{room or ''}{':' if room and channel else ''}{channel or ''}"
    if since is not None:
        seq, epoch = since
        if epoch is None:
            epoch = await _epoch_now(client, arguments, named, timeout)
        arguments["since"] = {"seq": seq, "epoch": epoch}
    try:
        joined = await client.command("join_channel", arguments, timeout=timeout)
    except CommandFailed as exc:
        raise CliError(f"cannot join {named}: {exc.response.get('error')}") from None
    data = joined["payload"]["data"]
    target = f"{data['room']}:{data['channel']}"
    say_if_not_recovered(target, data.get("resume"))
    await keep_only(client, target, timeout)


async def _epoch_now(client: ArqonBusClient, target: dict[str, Any], named: str,
                     timeout: float) -> str:
    """The epoch of the channel's stream now (--since SEQ without one). A wildcard has
    none: join_channel says it resumes one channel only."""
    if WILDCARD in named.split(":"):
        return ""
    info = await client.command("channel_info", target, timeout=timeout, check=False)
    if info.get("status") == "error" or info.get("type") == "error":
        raise CliError(f"cannot resume {named}: {info.get('error')}, so it has no epoch to "
                       "resume in; give --since SEQ:EPOCH")
    return info["payload"]["data"]["stream"]["epoch"]


# -- read -----------------------------------------------------------------------------------

def read_command(args: argparse.Namespace) -> int:
    room, _, channel = args.target.partition(":")
    if not room or not channel:
        raise CliError("ROOM:CHANNEL must name a room and a channel, such as lab:notes")
    check_wait(args.wait, MAX_WAIT)
    return run(_read(bus_client(args), args, room, channel))


async def _read(client: ArqonBusClient, args: argparse.Namespace, room: str,
                channel: str) -> int:
    """cursor.read, print, then cursor.ack the last one printed: in that order, so that a
    reader stopped in between reads the same again rather than losing what it never saw."""
    cursor = {"room": room, "channel": channel, "cursor": args.cursor}
    async with client:
        data = await _cursor_command(client, "cursor.read", {
            **cursor, "limit": args.limit, "wait": args.wait}, f"cannot read {args.target}",
            args.wait + args.timeout_seconds)   # it may wait that long before answering
        say_if_not_recovered(args.target, data)
        try:
            for message in data["messages"]:
                print_line(message)
        except OSError as exc:   # a full disk, a reader gone: not seen, so not acked
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise CliError(f"cannot print the messages of {args.target} ({exc.strerror}); "
                           f"cursor {args.cursor} stays where it was") from None
        if data["messages"]:
            last = data["messages"][-1]["metadata"]
            await _cursor_command(client, "cursor.ack", {
                **cursor, "seq": last["seq"], "epoch": last["epoch"]},
                f"cannot move cursor {args.cursor}", args.timeout_seconds)
    return 0


async def _cursor_command(client: ArqonBusClient, name: str, arguments: dict[str, Any],
                          failing: str, timeout: float) -> dict[str, Any]:
    response = await client.command(name, arguments, timeout=timeout, check=False)
    if response.get("type") == "error" or response.get("status") == "error":
        code = response.get("error_code")
        raise CliError(f"{failing}: {response.get('error')} ({code})",
                       EXIT_REFUSED if code == ErrorCode.AUTHORIZATION_ERROR else 1)
    return response["payload"]["data"]


# -- send -----------------------------------------------------------------------------------

def send_command(args: argparse.Namespace) -> int:
    if not args.target.strip(":"):
        raise CliError("ROOM:CHANNEL must name a room")
    payload = None
    if args.payload is not None:
        payload = parse_json(args.payload, "payload")
    client = bus_client(args)
    return run(_send(client, args, payload))


async def _send(client: ArqonBusClient, args: argparse.Namespace, payload: Any) -> int:
    failed = 0
    async with client:
        await keep_only(client, None, args.timeout_seconds)  # no traffic to wade through
        if args.payload is not None:
            return 0 if await _send_one(client, args, payload, "") else 1
        number = 0
        async for line in _stdin_lines():
            number += 1
            if not line.strip():
                continue
            where = f"stdin line {number}: "
            try:
                value = json.loads(line)
            except ValueError as exc:
                print(f"arqon: {where}invalid JSON: {exc}", file=sys.stderr, flush=True)
                failed += 1
                continue
            if not await _send_one(client, args, value, where):
                failed += 1
    return 1 if failed else 0


async def _send_one(client: ArqonBusClient, args: argparse.Namespace, payload: Any,
                    where: str) -> bool:
    """Publish one payload and print its ack or error frame; True when it was accepted."""
    message_id = await client.publish(args.target, payload)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.timeout_seconds
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:  # recv_json(timeout=0) would wait for ever, as ArqonBus's does
            raise ArqonBusConnectionError(TIMED_OUT)
        frame = await client.recv_json(timeout=remaining)
        if frame.get("type") == "message_response" and frame.get("id") == message_id:
            print_line(frame)
            return True
        if frame.get("type") == "error" and frame.get("request_id") == message_id:
            print_line(frame)
            print(f"arqon: {where}{frame.get('error')} ({frame.get('error_code')})",
                  file=sys.stderr, flush=True)
            return False


async def _stdin_lines() -> AsyncIterator[str]:
    """stdin line by line without blocking the event loop (keepalives go on meanwhile)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STDIN_LINE_LIMIT)
    fd = sys.stdin.fileno()
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except ValueError:  # a regular file: reading it never waits
        for line in sys.stdin:
            yield line
        return
    try:
        while line := await reader.readline():
            yield line.decode("utf-8", errors="replace")
    finally:
        transport.close()
        os.set_blocking(fd, True)  # a terminal is shared with the shell that started us


# -- cmd ------------------------------------------------------------------------------------

def command_arguments(items: list[str]) -> dict[str, Any]:
    arguments = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise CliError(f"argument '{item}' is not KEY=VALUE")
        try:
            arguments[key] = json.loads(text)
        except ValueError:
            arguments[key] = text
    return arguments


def cmd_command(args: argparse.Namespace) -> int:
    arguments = command_arguments(args.arguments)
    client = bus_client(args)
    return run(_cmd(client, args.name, arguments, args.timeout_seconds))


async def _cmd(client: ArqonBusClient, name: str, arguments: dict[str, Any],
               timeout: float) -> int:
    print_json(await command_data(client, name, arguments, timeout))
    return 0
