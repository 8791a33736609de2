"""arqon tail, arqon send, arqon cmd: the bus from the shell.

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

from arqond.cli.common import (CliError, add_bus_arguments, bus_client, cli_config,
                               colour_on, command_data, keep_only, paint, parse_json,
                               print_json, print_line, run)
from arqond.cli import narrative
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
    tail.set_defaults(func=tail_command)

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
        return run(_tail(client, args, send))
    except KeyboardInterrupt:
        if args.follow:
            return 0  # interrupting --follow is how it is meant to end
        raise


async def _tail(client: ArqonBusClient, args: argparse.Namespace,
                send: dict[str, Any] | None) -> int:
    async with client:
        if args.room or args.channel:
            await _join_only(client, args.room, args.channel, args.timeout_seconds)
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
                     timeout: float) -> None:
    try:
        joined = await client.command("join_channel", {"room": room, "channel": channel},
                                      timeout=timeout)
    except CommandFailed as exc:
        raise CliError(f"cannot join {room or ''}{':' if room and channel else ''}"
                       f"{channel or ''}: {exc.response.get('error')}") from None
    data = joined["payload"]["data"]
    await keep_only(client, f"{data['room']}:{data['channel']}", timeout)


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
