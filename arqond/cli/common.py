"""What every arqon subcommand shares: connection flags and clients, JSON output, errors.

A subcommand reports a failure by raising CliError; ``main`` prints it as
``arqon: <message>`` on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any, Awaitable

from arqond.config import OPTIONS
from arqond.core import zgents
from arqond.sdk import ArqonBusClient, ArqonBusSDKError, ControlSocketClient

DEFAULT_HTTP_URL = "http://127.0.0.1:8080"
DEFAULT_WS_URL = "ws://127.0.0.1:9100"
DEFAULT_CONTROL_SOCKET = OPTIONS["server.control_socket"].default
DEFAULT_TIMEOUT = 5.0


class CliError(Exception):
    """A failure to report as ``arqon: <message>`` with exit status 1."""


def fail(message: str) -> int:
    print(f"arqon: {message}", file=sys.stderr, flush=True)
    return 1


def zgent_name(text: str) -> str:
    """``text`` when it is a valid Zgent name (THE rule, arqond/core/zgents.py)."""
    try:
        return zgents.check_name(text)
    except zgents.ZgentError as exc:
        raise CliError(str(exc)) from None


def print_json(value: Any) -> None:
    """Pretty JSON for people and jq: sorted keys, two-space indent."""
    print(json.dumps(value, indent=2, sort_keys=True), flush=True)


def print_line(value: Any) -> None:
    """One JSON value on one line, sorted keys, as ``tail --raw`` prints frames."""
    print(json.dumps(value, sort_keys=True), flush=True)


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}") from None


def run(coroutine: Awaitable[int]) -> int:
    """Run a subcommand's coroutine; client library errors become CliError."""
    try:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    except ArqonBusSDKError as exc:
        raise CliError(str(exc)) from None


# -- HTTP ---------------------------------------------------------------------------------

def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http-url", default=os.environ.get("ARQONBUS_HTTP_URL",
                                                             DEFAULT_HTTP_URL),
                        help="base URL of the HTTP port (env ARQONBUS_HTTP_URL, default "
                             f"{DEFAULT_HTTP_URL})")
    parser.add_argument("--timeout-seconds", type=float, default=DEFAULT_TIMEOUT,
                        help=f"HTTP timeout (default {DEFAULT_TIMEOUT})")


def http_get_json(base_url: str, path: str, timeout: float) -> dict[str, Any]:
    url = base_url.rstrip("/") + path
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"),
                                    timeout=timeout) as response:
            body = response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", errors="replace")
        raise CliError(f"HTTP {exc.code} calling {url}: {detail}") from None
    except urllib.error.URLError as exc:
        raise CliError(f"Failed to reach {url}: {exc.reason}") from None
    except OSError as exc:  # timeouts and resets after the connection was made
        raise CliError(f"Failed to reach {url}: {exc}") from None
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise CliError(f"Invalid JSON from {url}: {exc}") from None
    if not isinstance(data, dict):
        raise CliError(f"Expected JSON object from {url}")
    return data


# -- the bus --------------------------------------------------------------------------------

def add_bus_arguments(parser: argparse.ArgumentParser) -> None:
    """Where to reach the bus: a WebSocket URL, or arqond's local control socket."""
    parser.add_argument("--ws-url", help="WebSocket URL (env ARQONBUS_WS_URL); without one, "
                        "the control socket is used when it exists, else " + DEFAULT_WS_URL)
    parser.add_argument("--jwt", default=os.environ.get("ARQONBUS_AUTH_JWT"),
                        help="bearer token for the WebSocket (env ARQONBUS_AUTH_JWT)")
    parser.add_argument("--header", action="append", default=[], metavar="KEY:VALUE",
                        help="extra WebSocket handshake header (repeatable)")
    parser.add_argument("--control-socket", metavar="PATH",
                        help="arqond's control socket (env ARQONBUS_CONTROL_SOCKET, default "
                             f"{DEFAULT_CONTROL_SOCKET})")
    parser.add_argument("--timeout-seconds", type=float, default=DEFAULT_TIMEOUT,
                        help=f"connect and reply timeout (default {DEFAULT_TIMEOUT})")


def parse_headers(items: list[str]) -> dict[str, str]:
    headers = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep:
            raise CliError(f"Invalid header format '{item}', expected 'Key:Value'")
        if not key.strip():
            raise CliError(f"Invalid header '{item}': header key cannot be empty")
        headers[key.strip()] = value.strip()
    return headers


def bus_client(args: argparse.Namespace) -> ArqonBusClient:
    """The client the flags ask for, not yet connected.

    A WebSocket URL (flag or ARQONBUS_WS_URL) wins; otherwise an explicit --control-socket,
    or the control socket from ARQONBUS_CONTROL_SOCKET or its default path when it exists;
    otherwise the default WebSocket URL.
    """
    headers = parse_headers(args.header)
    url = args.ws_url or os.environ.get("ARQONBUS_WS_URL")
    if not url:
        path = args.control_socket or os.environ.get("ARQONBUS_CONTROL_SOCKET",
                                                     DEFAULT_CONTROL_SOCKET)
        if args.control_socket or os.path.exists(path):
            return ControlSocketClient(path, connect_timeout=args.timeout_seconds)
    return ArqonBusClient(url or DEFAULT_WS_URL, jwt_token=args.jwt, headers=headers,
                          connect_timeout=args.timeout_seconds)


async def command_data(client: ArqonBusClient, name: str, arguments: dict[str, Any],
                       timeout: float) -> dict[str, Any]:
    """Run one bus command on a fresh connection; its data, or CliError with code and text."""
    async with client:
        response = await client.command(name, arguments, timeout=timeout, check=False)
    if response.get("type") == "error" or response.get("status") == "error":
        raise CliError(f"{name}: {response.get('error')} ({response.get('error_code')})")
    return response["payload"]["data"]


async def keep_only(client: ArqonBusClient, target: str | None, timeout: float) -> None:
    """Leave every channel the connection was put in (the default channel) but ``target``."""
    status = await client.command("status", timeout=timeout)
    for subscription in status["payload"]["data"]["client"]["subscriptions"]:
        if subscription != target:
            await client.command("leave_channel", {"room": subscription}, timeout=timeout)
