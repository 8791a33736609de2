"""What every arqon subcommand shares: where arqond is, connection flags and clients, JSON
output, colour, errors.

A subcommand reports a failure by raising CliError; ``main`` prints it as
``arqon: <message>`` on stderr and exits with its status (1 unless it says otherwise).

Where arqond is comes from its own configuration file (``--config``, ARQONBUS_CONFIG,
/etc/arqond/arqond.toml): the WebSocket and HTTP ports, the control socket and the MOO and
log dirs. Explicit flags and ARQONBUS_* variables win over it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import sys
import urllib.error
import urllib.request
from typing import Any, Awaitable, TextIO

import orjson

from arqond import config as configuration
from arqond.config import OPTIONS
from arqond.core.moo import names as zgent_names
from arqond.sdk import ArqonBusClient, ArqonBusSDKError, listener_url, local_client, local_config

DEFAULT_HTTP_URL = "http://127.0.0.1:8080"
DEFAULT_WS_URL = "ws://127.0.0.1:9100"
DEFAULT_CONTROL_SOCKET = OPTIONS["server.control_socket"].default
DEFAULT_TIMEOUT = 5.0
# Select Graphic Rendition codes of the few styles arqon uses on a terminal.
STYLES = {"bold": "1", "dim": "2", "red": "1;31", "green": "32", "cyan": "36"}


class CliError(Exception):
    """A failure to report as ``arqon: <message>``, exiting with ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def colour_on(stream: TextIO) -> bool:
    """Colour only for a terminal, and never with NO_COLOR set (https://no-color.org)."""
    return not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb" and \
        stream.isatty()


def paint(text: str, style: str, on: bool) -> str:
    return f"\033[{STYLES[style]}m{text}\033[0m" if on else text


def fail(message: str, status: int = 1) -> int:
    prefix = paint("arqon:", "red", colour_on(sys.stderr))
    print(f"{prefix} {message}", file=sys.stderr, flush=True)
    return status


def say(message: str) -> None:
    """A note on stderr for the person watching (``arqon: ...``), never data."""
    print(f"arqon: {message}", file=sys.stderr, flush=True)


def zgent_name(text: str) -> str:
    """``text`` when it is a valid Zgent name (THE rule, arqond/core/moo/names.py)."""
    try:
        return zgent_names.check_name(text)
    except zgent_names.ZgentError as exc:
        raise CliError(str(exc)) from None


def print_json(value: Any) -> None:
    """Pretty JSON for people and jq: sorted keys, two-space indent."""
    print(json.dumps(value, indent=2, sort_keys=True), flush=True)


def print_line(value: Any) -> None:
    """One JSON value on one line, sorted keys, as ``tail --raw`` prints frames."""
    print(json.dumps(value, sort_keys=True), flush=True)


def print_compact(value: Any) -> None:
    """One JSON line as arqond writes it (orjson: no spaces), as the Zgent commands print."""
    sys.stdout.write(orjson.dumps(value).decode() + "\n")
    sys.stdout.flush()


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


def login_name() -> str:
    """Who runs arqon, as the bus shows it (screen_name) and broadcasts name it."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid-{os.getuid()}"


# -- the daemon's configuration -----------------------------------------------------------

def add_config_argument(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument("--config", metavar="FILE", default=default,
                        help="arqond's configuration file, where arqon finds its ports, "
                             "sockets and dirs (env ARQONBUS_CONFIG, default "
                             f"{configuration.DEFAULT_CONFIG_PATH})")


def cli_config(args: argparse.Namespace) -> configuration.Config:
    """The configuration named by ``--config`` or the environment, read once per command."""
    loaded = getattr(args, "_loaded_config", None)
    if loaded is None:
        try:
            loaded = local_config(getattr(args, "config", None))
        except ArqonBusSDKError as exc:
            raise CliError(str(exc)) from None
        args._loaded_config = loaded
    return loaded


def zgent_path(args: argparse.Namespace, suffix: str) -> str:
    """MOO_DIR/NAME + suffix for the Zgent ``args.zgent`` (its socket, its inbox)."""
    return os.path.join(cli_config(args).moo.dir, zgent_name(args.zgent) + suffix)


# -- HTTP ---------------------------------------------------------------------------------

def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http-url", help="base URL of the HTTP port (env ARQONBUS_HTTP_URL; "
                        "default from the configuration's server.host and server.http_port, "
                        f"{DEFAULT_HTTP_URL} by default)")
    parser.add_argument("--timeout-seconds", type=float, default=DEFAULT_TIMEOUT,
                        help=f"HTTP timeout (default {DEFAULT_TIMEOUT})")


def http_url(args: argparse.Namespace) -> str:
    url = args.http_url or os.environ.get("ARQONBUS_HTTP_URL")
    if url:
        return url
    try:
        return listener_url(cli_config(args), "http", "server.http_port",
                            "--http-url or ARQONBUS_HTTP_URL")
    except ArqonBusSDKError as exc:
        raise CliError(str(exc)) from None


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
                        "the first of the configuration's doors this user may open: its "
                        "control socket, its bus socket, its WebSocket port (" +
                        DEFAULT_WS_URL + ")")
    parser.add_argument("--jwt", default=os.environ.get("ARQONBUS_AUTH_JWT"),
                        help="bearer token for the WebSocket (env ARQONBUS_AUTH_JWT)")
    parser.add_argument("--header", action="append", default=[], metavar="KEY:VALUE",
                        help="extra WebSocket handshake header (repeatable)")
    parser.add_argument("--control-socket", metavar="PATH",
                        help="arqond's control socket (env ARQONBUS_CONTROL_SOCKET, default "
                             f"the configuration's, {DEFAULT_CONTROL_SOCKET})")
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
    """The client the flags ask for, not yet connected, named after the user who runs arqon:
    a WebSocket URL (flag or ARQONBUS_WS_URL), else --control-socket, else the first door of
    the configuration this user may open (sdk.local_client)."""
    headers = parse_headers(args.header)
    try:
        return local_client(ws_url=args.ws_url, control_socket=args.control_socket,
                            config_path=getattr(args, "config", None), jwt_token=args.jwt,
                            headers=headers, connect_timeout=args.timeout_seconds,
                            screen_name=login_name())
    except ArqonBusSDKError as exc:
        raise CliError(str(exc)) from None


async def command_data(client: ArqonBusClient, name: str, arguments: dict[str, Any],
                       timeout: float) -> dict[str, Any]:
    """Run one bus command on a fresh connection; its data, or CliError with code and text."""
    async with client:
        response = await client.command(name, arguments, timeout=timeout, check=False)
    if response.get("type") == "error" or response.get("status") == "error":
        raise CliError(f"{name}: {response.get('error')} ({response.get('error_code')})")
    return response["payload"]["data"]


def check_wait(seconds: float, maximum: float) -> None:
    """``--wait`` must be 0 to ``maximum`` seconds (NaN is not)."""
    if not 0 <= seconds <= maximum:
        raise CliError(f"--wait must be 0 to {maximum:g} seconds")


def say_if_not_recovered(target: str, resume: dict[str, Any] | None) -> None:
    """A resume (join_channel since, cursor.read) that could not give everything missed is
    said on stderr, with why; the messages still go to stdout."""
    if resume is not None and not resume["recovered"]:
        say(f"{target}: not recovered: {resume['reason']}")


async def keep_only(client: ArqonBusClient, target: str | None, timeout: float) -> None:
    """Leave every channel the connection was put in (the default channel) but ``target``."""
    status = await client.command("status", timeout=timeout)
    for subscription in status["payload"]["data"]["client"]["subscriptions"]:
        if subscription != target:
            await client.command("leave_channel", {"room": subscription}, timeout=timeout)
