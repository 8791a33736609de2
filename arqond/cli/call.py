"""arqon call: one JSON-RPC request to a Zgent's socket; the result on stdout, or the error
and an exit status that says which kind of failure it was.

The exit statuses and ``connection_error`` are shared by every subcommand that talks to a
Zgent's socket (recv, serve), so a script tells "nobody serves it" from "it said no" the same
way everywhere.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

import orjson

from arqond.cli.common import CliError, fail, parse_json, print_compact, zgent_path
from arqond.core import jsonrpc
from arqond.core.errors import RpcCode
from arqond.sdk import join_group_hint

# Exit statuses (arqon(1) EXIT STATUS); 1 is any other failure, 2 a usage error.
EXIT_HANDLER_ERROR = 3   # an error object from the handler (or from arqond about the request)
EXIT_NOT_SERVING = 4     # -32001, or no socket: not registered, or another MOO dir
EXIT_TIMEOUT = 5         # -32002, or no answer within --timeout
EXIT_REFUSED = 6         # -32003, -32004, or the socket refused the connection
EXIT_OF_CODE = {RpcCode.NOT_SERVING: EXIT_NOT_SERVING, RpcCode.TIMEOUT: EXIT_TIMEOUT,
                RpcCode.FORBIDDEN: EXIT_REFUSED, RpcCode.BUSY: EXIT_REFUSED}
DEFAULT_TIMEOUT = 60.0
# Why a Zgent's socket or FIFO that is there has nobody at the other end.
NOT_SERVED = "arqond is not running, or it serves another MOO dir: see --config"


def exit_status(error: dict[str, Any]) -> int:
    return EXIT_OF_CODE.get(error["code"], EXIT_HANDLER_ERROR)


def failure(zgent: str, method: str, error: dict[str, Any]) -> int:
    """Say on stderr that ``zgent`` answered ``method`` with ``error``; its exit status."""
    return fail(f"{zgent} {method}: {error['message']} ({error['code']})", exit_status(error))


def connection_error(path: str, exc: OSError) -> CliError:
    """Why connecting to a Zgent's socket failed, with the exit status of its kind."""
    if isinstance(exc, FileNotFoundError):
        return CliError(f"no socket {path}: the Zgent is not registered (arqon zgent list), "
                        "or arqond uses another MOO dir (--config)", EXIT_NOT_SERVING)
    if isinstance(exc, PermissionError):
        return CliError(f"cannot connect to {path}: {exc.strerror} ({join_group_hint(path)})",
                        EXIT_REFUSED)
    if isinstance(exc, ConnectionRefusedError):
        return CliError(f"cannot connect to {path}: {exc.strerror} ({NOT_SERVED})",
                        EXIT_REFUSED)
    return CliError(f"cannot connect to {path}: {exc.strerror or exc}")


def connect_zgent(path: str, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise connection_error(path, exc) from None
    return sock


def ask(path: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one request line, return the one answer line as an object."""
    with connect_zgent(path, timeout) as sock:
        try:
            sock.sendall(jsonrpc.line(request))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused at once (moo.max_clients): its one error line is there to read
        with sock.makefile("rb") as stream:
            try:
                raw = stream.readline()
            except TimeoutError:
                raise CliError(f"no answer from {path} within {timeout:g}s",
                               EXIT_TIMEOUT) from None
            except ConnectionResetError:
                raw = b""
    return answer_of(path, raw)


def answer_of(path: str, raw: bytes) -> dict[str, Any]:
    """The JSON-RPC response that is the line ``raw`` read from ``path``; CliError when the
    socket closed first or answered something else."""
    if not raw:
        raise CliError(f"{path} closed without answering")
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict) or ("result" in answer) == ("error" in answer):
        raise CliError(f"{path} answered what is not a JSON-RPC response: {raw[:200]!r}")
    return answer


def request_params(text: str | None) -> Any:
    """PARAMS_JSON, or standard input for ``-``; absent means no params."""
    if text is None:
        return None
    value = parse_json(sys.stdin.read() if text == "-" else text, "PARAMS_JSON")
    if not isinstance(value, (dict, list)):
        raise CliError("PARAMS_JSON must be a JSON object or array")
    return value


def _call(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise CliError("--timeout must be greater than 0")
    if not args.method:
        raise CliError("METHOD must not be empty")
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": args.method}
    params = request_params(args.params)
    if params is not None:
        request["params"] = params
    answer = ask(zgent_path(args, ".sock"), request, args.timeout)
    # arqond passes on only {"code": int, "message": str, "data"?} errors (jsonrpc.check_response).
    print_compact(answer.get("result", answer.get("error")))
    if "result" in answer:
        return 0
    return failure(args.zgent, args.method, answer["error"])


def register(subparsers: argparse._SubParsersAction) -> None:
    call = subparsers.add_parser(
        "call", help="send one JSON-RPC request to Zgent NAME and print its result",
        description="Send METHOD with PARAMS_JSON to MOO_DIR/NAME.sock and print the result "
        "as one JSON line (exit 0), or the error object as one JSON line with a line on "
        "stderr and the exit status of its kind: 3 handler error, 4 not serving, "
        "5 timeout, 6 refused.")
    call.add_argument("zgent", metavar="NAME")
    call.add_argument("method", metavar="METHOD")
    call.add_argument("params", nargs="?", metavar="PARAMS_JSON",
                      help="a JSON object or array; - reads it from standard input")
    call.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                      help=f"give up waiting for the answer after SECONDS (default "
                           f"{DEFAULT_TIMEOUT:g})")
    call.set_defaults(func=_call)
