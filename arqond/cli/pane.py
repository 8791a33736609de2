"""A Zgent's tmux pane: ``arqon pane`` asks for it, and a handler started with ``--relay-pane``
(``arqon serve``, ``arqon mcp``) carries the request out with tmux.

arqond cannot reach the pane: it lives in the tmux server of the user who runs the Zgent,
which only that user may open (arqond/core/moo/pane.py says more). So arqond checks who asks
and forwards ``arqon.pane.capture``/``arqon.pane.send`` to the Zgent's handler, which runs as
that user and runs ``tmux capture-pane``/``send-keys`` in its own server: the one ``tmux``
alone reaches from there ($TMUX inside tmux, else TMUX_TMPDIR or /tmp). Relaying is the
handler user's choice (``--relay-pane``): serving a Zgent's requests with a script of one's
own is one thing, letting the Zgent's owners type into one's terminal another.

``arqon pane`` always asks the Zgent's socket, even for a user who could run tmux: that way
the pane is the one of the Zgent's tmux server, not a same-named one of the caller's, and
every send is checked and audited by arqond.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from arqond.cli.call import DEFAULT_TIMEOUT, ask, failure
from arqond.cli.common import CliError, zgent_path
from arqond.core import jsonrpc
from arqond.core.errors import RpcCode
from arqond.core.moo import pane

# tmux's output is read keeping only its last bytes: twice what a capture returns, so the
# blank lines below a pane's last output (one byte each) never crowd out the text, plus room.
READ_SLACK = 4096
STDERR_BYTES = 4096


def literal(argument: str) -> str:
    """``argument`` as tmux must get it to take it as it is: tmux reads an argument ending in
    ";" as the end of a command (``ls;`` would type ``ls``), and ``\\;`` as a ";"."""
    return argument[:-1] + "\\;" if argument.endswith(";") else argument


def tmux_arguments(method: str, params: dict[str, Any]) -> list[str]:
    """The tmux command line (without ``tmux``) for a forwarded pane request: one capture,
    or the keys, then the text, then Enter, as one tmux command list."""
    target = literal(params["pane"])
    if method == pane.CAPTURE:
        lines = params["lines"]
        return ["capture-pane", "-p", "-t", target, *(["-S", f"-{lines}"] if lines else [])]
    commands = []
    if params["keys"]:
        commands.append(["send-keys", "-t", target, "--", *map(literal, params["keys"])])
    if params["text"]:
        commands.append(["send-keys", "-t", target, "-l", "--", literal(params["text"])])
    if params["enter"]:
        commands.append(["send-keys", "-t", target, "Enter"])
    return [argument for command in commands for argument in (";", *command)][1:]


async def read_tail(stream: asyncio.StreamReader, keep: int) -> tuple[bytes, bool]:
    """Everything ``stream`` gives until its end, keeping only the last ``keep`` bytes; True
    when some were dropped."""
    kept = bytearray()
    dropped = False
    while chunk := await stream.read(65536):
        kept += chunk
        if len(kept) > keep:
            del kept[:len(kept) - keep]
            dropped = True
    return bytes(kept), dropped


async def relay(request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The reply to a pane request arqond forwarded (its params checked there), from tmux run
    in this user's server, in at most ``timeout`` seconds."""
    request_id, method = request.get("id"), request["method"]
    try:
        params = request["params"]
        arguments = tmux_arguments(method, params)
        keep = 2 * params["max_bytes"] + READ_SLACK if method == pane.CAPTURE else STDERR_BYTES
    except (KeyError, TypeError) as exc:
        return jsonrpc.error(request_id, RpcCode.INVALID_PARAMS,
                             f"{method}: params not as arqond sends them ({exc!r} missing)")
    try:
        process = await asyncio.create_subprocess_exec(
            "tmux", *arguments, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        return jsonrpc.error(request_id, RpcCode.HANDLER_FAILED,
                             f"cannot run tmux here: {exc.strerror}")
    assert process.stdout is not None and process.stderr is not None

    async def finished() -> list[tuple[bytes, bool]]:
        said = await asyncio.gather(read_tail(process.stdout, keep),
                                    read_tail(process.stderr, STDERR_BYTES))
        await process.wait()
        return said
    try:
        (out, dropped), (err, _) = await asyncio.wait_for(finished(), timeout)
    except asyncio.TimeoutError:
        return jsonrpc.error(request_id, RpcCode.TIMEOUT,
                             f"tmux did not answer within {timeout:g}s")
    finally:  # timed out, or the handler is stopping: no tmux left behind
        if process.returncode is None:
            process.kill()
    if process.returncode != 0:
        said = err.decode(errors="replace").strip().splitlines()
        return jsonrpc.error(request_id, RpcCode.HANDLER_FAILED,
                             f"tmux {arguments[0]} -t {params['pane']}: "
                             + (said[-1] if said else f"exit status {process.returncode}"))
    if method == pane.SEND:
        return jsonrpc.result(request_id, {"pane": params["pane"]})
    text, cut = pane.tail(out.decode(errors="replace"), params["max_bytes"])
    return jsonrpc.result(request_id, {"pane": params["pane"], "text": text,
                                       "truncated": cut or dropped})


async def reply_to(request: dict[str, Any], zgent: str, relaying: bool,
                   timeout: float) -> dict[str, Any]:
    """A handler's reply to a pane request: tmux's, or -32001 when this handler was not
    started to relay its pane."""
    if relaying:
        return await relay(request, timeout)
    return jsonrpc.error(request.get("id"), RpcCode.NOT_SERVING,
                         f"{zgent}'s handler does not relay its tmux pane (it was started "
                         "without --relay-pane)")


# -- arqon pane -------------------------------------------------------------------------------

def _pane(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise CliError("--timeout must be greater than 0")
    try:
        method, params = pane.asked(args.lines, args.send, args.key, args.enter)
    except pane.BadParams as exc:
        raise CliError(f"--{exc}") from None
    request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    answer = ask(zgent_path(args, ".sock"), request, args.timeout)
    if "error" in answer:
        return failure(args.zgent, method, answer["error"])
    text = answer["result"].get("text") if method == pane.CAPTURE else None
    if text:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pane", help="print what Zgent NAME's tmux pane shows, or type into it",
        description="Print what Zgent NAME's tmux pane (its registry pane, such as "
        "dreader:main.0) shows now, or type into it with --send, --key and --enter. arqond "
        "checks that you are one of NAME's owners or an admin and has NAME's handler, started "
        "with --relay-pane, run tmux as NAME's user. Exit status as for call.")
    parser.add_argument("zgent", metavar="NAME")
    parser.add_argument("--lines", type=int, default=0, metavar="N",
                        help="also N lines of scrollback above the visible pane (as "
                             "capture-pane -S -N)")
    parser.add_argument("--send", metavar="TEXT",
                        help="type TEXT into the pane, as it is (send-keys -l)")
    parser.add_argument("--key", action="append", default=[], metavar="KEY",
                        help="press a key by its tmux name, such as C-c, Escape or Up, before "
                             "the text (repeatable)")
    parser.add_argument("--enter", action="store_true", help="press Enter after the text")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"give up waiting after SECONDS (default {DEFAULT_TIMEOUT:g})")
    parser.set_defaults(func=_pane)
