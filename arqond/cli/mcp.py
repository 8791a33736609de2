"""arqon mcp: an MCP server over stdio that puts the bus in an AI agent's hands.

An agent runtime (Claude Code, Codex, Gemini CLI, ...) starts it and speaks the Model Context
Protocol on its standard input and output; arqon mcp speaks to the local arqond, on the bus
socket where the kernel says who it is (or the WebSocket port), and, with --zgent, as that
Zgent: registered if it was not (and unregistered again on the way out), and attached as its
handler so that others' calls reach the agent. It leaves when standard input closes, or on
SIGTERM, taking with it what it made. The package arqond/mcp/ does the work; the MCP SDK is
the optional extra arqond[mcp], imported only here, when the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from arqond.cli.common import (DEFAULT_TIMEOUT, CliError, cli_config, login_name, say,
                               zgent_name)
from arqond.core.cursors import MAX_NAME as MAX_CURSOR_NAME
from arqond.sdk import ArqonBusSDKError, local_bus_client

DEFAULT_MAX_REQUESTS = 256


async def _serve(args: argparse.Namespace) -> None:
    from arqond.mcp.agent import Agent
    from arqond.mcp.server import AgentServer

    config = cli_config(args)

    def make_client():
        return local_bus_client(ws_url=args.ws_url, config_path=getattr(args, "config", None),
                                jwt_token=args.jwt, connect_timeout=args.timeout_seconds,
                                screen_name=args.zgent or login_name())

    agent = Agent(config, make_client, zgent=args.zgent, capabilities=args.capability,
                  timeout=args.timeout_seconds, max_requests=args.max_requests,
                  cursor=args.cursor, relaying_pane=args.relay_pane)
    main = asyncio.current_task()
    assert main is not None
    serving = False

    def stop() -> None:
        if serving:
            asyncio.create_task(_leave_now(agent))
        else:
            main.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop)
    try:
        await agent.start()
        serving = True
        await AgentServer(agent).serve_stdio()
    finally:
        await agent.stop()


async def _leave_now(agent) -> None:
    """Stopped by a signal while serving: leave cleanly, then exit at once. The SDK reads
    standard input in a worker thread that nothing can interrupt, which cancelling would wait
    for, and so would the interpreter at exit."""
    await agent.stop()
    say("mcp: stopped by a signal")
    os._exit(0)


def _mcp(args: argparse.Namespace) -> int:
    if args.zgent is not None:
        zgent_name(args.zgent)
    elif args.capability or args.relay_pane:
        raise CliError("--capability and --relay-pane need --zgent: they are a Zgent's")
    if args.cursor is not None and not 0 < len(args.cursor) <= MAX_CURSOR_NAME:
        raise CliError(f"--cursor must be a name of 1 to {MAX_CURSOR_NAME} characters")
    if args.max_requests < 1 or args.timeout_seconds <= 0:
        raise CliError("--max-requests must be at least 1 and --timeout-seconds greater than 0")
    try:
        import mcp  # noqa: F401  (the optional extra)
    except ImportError:
        raise CliError("arqon mcp needs the MCP SDK: pip install 'arqond[mcp]'") from None
    try:
        asyncio.run(_serve(args))
    except ArqonBusSDKError as exc:
        raise CliError(str(exc)) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    say("mcp: done")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mcp", help="an MCP server on stdio that gives an AI agent the bus",
        description="Serve the Model Context Protocol on standard input and output, for an "
        "agent runtime to start: tools to publish, read, send, recv, call, list Zgents and "
        "channels, narrate and answer requests; resources with update notifications. With "
        "--zgent NAME the agent is Zgent NAME (registered unless it is, attached as its "
        "handler). Ends when standard input closes, leaving nothing it made behind.")
    parser.add_argument("--zgent", metavar="NAME",
                        help="be Zgent NAME: registered if it is not (and unregistered on "
                             "exit), its mailbox, narrative and requests the agent's")
    parser.add_argument("--capability", action="append", default=[], metavar="VERB:NOUN",
                        help="a capability of the Zgent it registers (repeatable)")
    parser.add_argument("--cursor", metavar="CURSOR",
                        help="the name of the server-side cursor the read tool reads after "
                             "(default: the Zgent's name, else mcp)")
    parser.add_argument("--relay-pane", action="store_true",
                        help="with --zgent, carry out arqon.pane.capture and arqon.pane.send "
                             "for the Zgent's owners with tmux in this user's server (not "
                             "the agent)")
    parser.add_argument("--ws-url", help="WebSocket URL (env ARQONBUS_WS_URL); without one, "
                        "the configuration's bus socket when it is there, else its WebSocket "
                        "port")
    parser.add_argument("--jwt", default=os.environ.get("ARQONBUS_AUTH_JWT"),
                        help="bearer token for a WebSocket URL (env ARQONBUS_AUTH_JWT)")
    parser.add_argument("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS, metavar="N",
                        help="requests for the Zgent that may wait for the agent's reply; "
                             f"past it callers get -32004 (default {DEFAULT_MAX_REQUESTS})")
    parser.add_argument("--timeout-seconds", type=float, default=DEFAULT_TIMEOUT,
                        help=f"connect and bus reply timeout (default {DEFAULT_TIMEOUT:g})")
    parser.set_defaults(func=_mcp)
