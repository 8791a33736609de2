"""The seed's human views of narrative logs: tmux hooks that write JSONL, and moo-tail.

``register(subparsers)`` adds ``arqon hooks install|remove|emit``. ``format_moo_line`` and
``follow_moo`` are the seed's moo-tail (``[HH:MM:SS] content``) behind ``arqon tail --moo``.

The hooks never build JSON in the shell: tmux shell-quotes each value with ``#{q:...}`` and
hands it as an argument to ``hooks emit``, which encodes it and appends the line with a single
``write`` on an O_APPEND descriptor, so lines from concurrent hooks never interleave.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import stat
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

import orjson

from arqond.cli.common import CliError, cli_config, fail, paint, zgent_name
from arqond.sdk import ArqonBusClient

DEFAULT_LOG_DIR = "/var/log/moo"
SHARED_LOG_MODE = 0o664
PRESENCE = "presence"
# tmux hook → (event name, the file it goes to: the Zgent's events or presence, tmux formats).
HOOKS = {
    # After select-pane and new-window the current pane and window are the ones the hook is
    # about; for clients and dying panes only the hook_* formats name the right one.
    "after-select-pane": ("pane-focused", "events", {"pane": "pane_id"}),
    "after-new-window": ("window-created", "events", {"window": "window_id",
                                                      "window_name": "window_name"}),
    "client-attached": ("client-attached", PRESENCE, {"client": "hook_client"}),
    "client-detached": ("client-detached", PRESENCE, {"client": "hook_client"}),
    # pane-died fires with remain-on-exit on, pane-exited without it: both mean the same here.
    "pane-died": ("pane-died", PRESENCE, {"pane": "hook_pane"}),
    "pane-exited": ("pane-died", PRESENCE, {"pane": "hook_pane"}),
}
# tmux (3.3) runs pane-died/pane-exited hooks set on a session only for its current window, and
# gives them no reliable session name (the pane is gone). So pane death is watched by one global
# entry shared by every Zgent, logged as from "tmux", and removed with the last Zgent's hooks.
GLOBAL_HOOKS = ("pane-died", "pane-exited")
GLOBAL_SENDER = "tmux"
# How arqond recognises its own hook entries among the user's: the command they run.
MARKER = "-m arqond.cli hooks emit"
HOOK_ENTRY_RE = re.compile(r"^(?P<hook>[a-z-]+)\[(?P<index>\d+)\] (?P<command>.*)$")
# Fixed parts of a hook's shell command are used bare, so they must need no quoting at all.
SHELL_SAFE = re.compile(r"^[A-Za-z0-9_./:@+=,-]+$")
FIELD_RE = re.compile(r"^[a-z_]+$")


# -- tmux hooks --------------------------------------------------------------------------

def hook_command(name: str, hook: str, log_dir: str) -> str:
    """The tmux command a hook runs: ``run-shell '<python> -m arqond.cli hooks
    emit ... field=#{q:format} ...'``."""
    event, kind, fields = HOOKS[hook]
    target = os.path.join(log_dir, f"{PRESENCE}.jsonl" if kind == PRESENCE
                          else f"{name}-{kind}.jsonl")
    for fixed in (sys.executable, target):
        if not SHELL_SAFE.match(fixed):
            raise CliError(f"{fixed!r} contains characters a tmux hook cannot carry safely; "
                           "use a path of letters, digits and ./_-+=,:@")
    words = [sys.executable, *MARKER.split(), "--file", target, "--event", event]
    if hook in GLOBAL_HOOKS:
        words += ["--from", GLOBAL_SENDER]
    else:
        words += ["--from", name, "session=#{q:session_name}"]
    words += [f"{field}=#{{q:{variable}}}" for field, variable in fields.items()]
    return "run-shell '" + " ".join(words) + "'"


def _tmux(args: argparse.Namespace, *command: str) -> str:
    argv = ["tmux"] + (["-S", args.socket] if args.socket else []) + list(command)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise CliError("tmux is not installed") from None
    if result.returncode != 0:
        raise CliError(f"tmux {' '.join(command[:3])}: {result.stderr.strip() or 'failed'}")
    return result.stdout


def _global_entries(args: argparse.Namespace, hook: str) -> list[str]:
    """Indexes of arqond's entries in one global hook array."""
    found = []
    for entry in _tmux(args, "show-hooks", "-g", hook).splitlines():
        match = HOOK_ENTRY_RE.match(entry)
        if match and MARKER in match["command"]:
            found.append(match["index"])
    return found


def hooks_log_dir(args: argparse.Namespace) -> str:
    return args.log_dir or os.environ.get("ARQONBUS_LOG_DIR") or cli_config(args).moo.log_dir


def _install(args: argparse.Namespace) -> int:
    try:
        name = zgent_name(args.name)
        commands = {hook: hook_command(name, hook, hooks_log_dir(args)) for hook in HOOKS}
        _tmux(args, "has-session", "-t", f"={name}")
        for hook, command in commands.items():
            if hook not in GLOBAL_HOOKS:
                _tmux(args, "set-hook", "-t", f"={name}:", hook, command)
                continue
            entries = _global_entries(args, hook)  # one shared entry, refreshed in place
            if entries:
                _tmux(args, "set-hook", "-g", f"{hook}[{entries[0]}]", command)
            else:
                _tmux(args, "set-hook", "-ga", hook, command)
    except CliError as exc:
        return fail(str(exc))
    print(f"arqon: {len(HOOKS)} hooks installed for tmux session {name}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    try:
        name = zgent_name(args.name)
        for hook in HOOKS:
            if hook not in GLOBAL_HOOKS:
                _tmux(args, "set-hook", "-u", "-t", f"={name}:", hook)
        sessions = _tmux(args, "list-sessions", "-F", "#{session_name}").splitlines()
        in_use = any(MARKER in _tmux(args, "show-hooks", "-t", f"={session}:",
                                     "client-attached") for session in sessions)
        if not in_use:
            for hook in GLOBAL_HOOKS:
                for index in reversed(_global_entries(args, hook)):
                    _tmux(args, "set-hook", "-gu", f"{hook}[{index}]")
    except CliError as exc:
        return fail(str(exc))
    print(f"arqon: hooks removed for tmux session {name}")
    return 0


def hook_line(name: str, event: str, fields: dict[str, str]) -> bytes:
    """One schema-valid narrative line for a tmux event."""
    ts = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    detail = " ".join(value for key, value in fields.items() if key != "session" and value)
    line = {"ts": ts, "from": name, "type": "event", "event": event,
            "content": f"{event} {detail}".strip(), **fields}
    return orjson.dumps(line) + b"\n"


def _emit(args: argparse.Namespace) -> int:
    fields = {}
    for item in args.fields:
        key, sep, value = item.partition("=")
        if not sep or not FIELD_RE.match(key):
            return fail(f"bad field {item!r}: expected key=value")
        fields[key] = value
    try:
        fd = open_shared_log(args.file)
        try:
            os.write(fd, hook_line(args.sender, args.event, fields))
        finally:
            os.close(fd)
    except OSError as exc:
        return fail(f"cannot append to {args.file}: {exc.strerror}")
    return 0


def open_shared_log(path: str) -> int:
    """An O_APPEND descriptor of a log that many users' hooks append to (presence.jsonl).

    A file this creates is made mode 0664 in its directory's group with fchmod and fchown,
    whatever the umask, so that the next user's hooks may append too. What another user of
    the shared log dir put at ``path`` is refused, never written through: a symbolic link
    (O_NOFOLLOW: it could lead to any file of ours), a FIFO (O_NONBLOCK: it could block the
    tmux hook), anything but a regular file.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    while True:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, SHARED_LOG_MODE)
        except FileExistsError:
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                continue  # rotated away between the two opens: create it after all
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise OSError(errno.ELOOP, "a symbolic link; not following it") from None
                raise
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.EINVAL, "not a regular file; not writing to it")
            return fd
        break
    try:
        os.fchown(fd, -1, os.stat(os.path.dirname(os.path.abspath(path))).st_gid)
    except PermissionError:
        pass  # not a member of the directory's group: the file keeps ours
    os.fchmod(fd, SHARED_LOG_MODE)
    return fd


# -- moo-tail ------------------------------------------------------------------------------

def format_moo_line(env: dict[str, Any], colour: bool = False) -> str:
    """``[HH:MM:SS] content`` as the seed's moo-tail prints it (jq's ``.ts[11:19]``)."""
    payload = env.get("payload")
    payload = payload if isinstance(payload, dict) else {"content": payload}
    ts = payload.get("ts")
    clock = ts[11:19] if isinstance(ts, str) else str(env.get("timestamp", ""))[11:19]
    content = payload.get("content", payload.get("raw", payload))
    if not isinstance(content, str):
        content = orjson.dumps(content).decode()
    return f"{paint(f'[{clock}]', 'dim', colour)} {content}"


def waiting_note(name: str, channel: str, registered: bool, log_dir: str) -> str:
    """What ``tail --moo`` says on stderr when there is nothing to show yet."""
    where = os.path.join(log_dir, f"{name}-{channel}.jsonl")
    if registered:
        return f"{name}:{channel} has no lines yet; waiting for the first one ({where}); " \
               "Ctrl-C to stop"
    return f"no Zgent {name} is registered and {name}:{channel} has no lines yet; waiting " \
           f"for the first one (a line appended to {where} registers {name}); Ctrl-C to stop"


async def follow_moo(client: ArqonBusClient, name: str, out: TextIO, *, lines: int = 10,
                     channel: str = "narrative", notes: TextIO | None = None,
                     log_dir: str = DEFAULT_LOG_DIR, colour: bool = False) -> int:
    """Print NAME's narrative as moo-tail does: the last ``lines`` ones, then live ones.

    Joining comes before reading history, so no line falls between the two; a line that is in
    both is printed once (the SDK keeps frames that arrive while a command waits). With
    ``notes``, an empty narrative is said there (waiting_note) rather than waited on silently.
    """
    zgent_name(name)
    async with client:
        await client.join(f"{name}:{channel}")
        history = (await client.command("history", {"room": name, "channel": channel,
                                                    "limit": max(lines, 1)})
                   )["payload"]["data"]["history"]
        shown: set[str] = set()
        for env in history[-lines:] if lines else []:
            shown.add(env["message_id"])
            print(format_moo_line(env, colour), file=out, flush=True)
        if not history and notes is not None:
            registry = await client.command("zgent.list")
            registered = name in registry["payload"]["data"]["zgents"]
            print(f"arqon: {waiting_note(name, channel, registered, log_dir)}", file=notes,
                  flush=True)
        async for frame in client:
            if (frame.get("room"), frame.get("channel")) == (name, channel) and \
                    frame.get("type") in ("event", "message") and frame["id"] not in shown:
                print(format_moo_line(frame, colour), file=out, flush=True)
    return 0


# -- the parsers ---------------------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction) -> None:
    hooks = subparsers.add_parser("hooks", help="tmux hooks that log to narrative files",
                                  description="Set or remove the tmux hooks of a Zgent "
                                  "session: pane focus and window creation go to "
                                  "LOG_DIR/NAME-events.jsonl, attach, detach and pane death "
                                  "to LOG_DIR/presence.jsonl.")
    actions = hooks.add_subparsers(dest="hooks_action", required=True)
    for action, func, summary in (("install", _install, "set the hooks on session NAME"),
                                  ("remove", _remove, "take the hooks off session NAME")):
        parser = actions.add_parser(action, help=summary, description=summary)
        parser.add_argument("name", metavar="NAME", help="Zgent name = tmux session name")
        parser.add_argument("--log-dir", metavar="DIR",
                            help="narrative log dir (env ARQONBUS_LOG_DIR, default the "
                                 f"configuration's moo.log_dir, {DEFAULT_LOG_DIR})")
        parser.add_argument("-S", "--socket", metavar="SOCKET",
                            help="tmux server socket (tmux -S)")
        parser.set_defaults(func=func)
    emit = actions.add_parser("emit", help="append one event line (what the hooks run)")
    emit.add_argument("--file", required=True, metavar="FILE")
    emit.add_argument("--from", dest="sender", required=True)
    emit.add_argument("--event", required=True)
    emit.add_argument("fields", nargs="*", metavar="KEY=VALUE")
    emit.set_defaults(func=_emit)
