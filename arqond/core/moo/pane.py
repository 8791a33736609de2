"""A Zgent's tmux pane, the seed's Layer 1 (capture-pane, send-keys): what arqond checks and
forwards for ``arqon.pane.capture`` and ``arqon.pane.send``, with no I/O.

Where tmux runs decides the design. A pane lives in the tmux server of the user who runs the
Zgent (/tmp/tmux-UID/default, in a directory of mode 0700; tmux also refuses clients of other
uids), and arqond runs as its own user: it cannot reach that server, and must not be made
able to, since a daemon that could type into every user's terminal would be root by another
name. So arqond only decides who may (the Zgent's owners and admins, Action.MANAGE_ZGENT, as
for unregistering it: typing into the pane is acting as the Zgent's user, and the pane may
show what only that user should see) and forwards the request to the Zgent's attached handler,
which runs as that user inside its tmux (``arqon serve --relay-pane``, ``arqon mcp --relay-pane``;
arqond/cli/pane.py runs tmux there). Without a handler the answer is -32001, as for any
request. The pane is always the registry's ``pane`` of the Zgent, never one the caller names,
and each send is an audit line with the principal.

Requests through an inbox or a queries file carry no identity, so ``arqon.*`` methods are
never forwarded from there (arqond/core/moo/inbox.py): a handler gets a pane request only
from arqond, after this check.
"""

from __future__ import annotations

import re
from typing import Any

CAPTURE = "arqon.pane.capture"
SEND = "arqon.pane.send"
METHODS = (CAPTURE, SEND)

# Scrollback lines one capture may ask for (tmux's own history-limit is 2000 by default); what
# comes back is bounded in bytes by moo.pane_max_bytes anyway.
MAX_LINES = 100_000
MAX_KEYS = 64
# A tmux key name: C-c, Escape, Up, F12, M-x, BSpace ... printable ASCII, no blanks.
KEY_NAME = re.compile(r"^[!-~]{1,32}$")
NEWLINE = ord("\n")
# Bytes of a capture's answer line besides its text: the id, the pane's name (at most 256
# characters, escaped), the other members.
REPLY_ROOM = 4096
# How much of a typed text an audit line repeats.
AUDIT_TEXT_CHARS = 120


class BadParams(ValueError):
    """Params a pane method refuses; the text says which and why."""


def _only(params: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = params.keys() - set(known)
    if unknown:
        raise BadParams(f"unknown param(s) {', '.join(sorted(unknown))} (known: "
                        f"{', '.join(known)})")


def asked(lines: int, text: str | None, keys: list[str], enter: bool
          ) -> tuple[str, dict[str, Any]]:
    """The method and params for what a caller gives: something to type (text, keys,
    enter), else a look at the pane (lines of scrollback). BadParams for both at once."""
    if text is None and not keys and not enter:
        return CAPTURE, {"lines": lines}
    if lines:
        raise BadParams("lines is for looking at the pane, not with text, keys or enter")
    return SEND, {"text": text or "", "keys": keys, "enter": enter}


def forwarded(method: str, params: dict[str, Any], pane: str, max_bytes: int
              ) -> dict[str, Any]:
    """The params the handler gets for a caller's ``params``: checked, with the Zgent's
    ``pane`` as target (and, for a capture, the byte bound). BadParams when refused."""
    if method == CAPTURE:
        _only(params, ("lines",))
        lines = params.get("lines", 0)
        if isinstance(lines, bool) or not isinstance(lines, int) or \
                not 0 <= lines <= MAX_LINES:
            raise BadParams(f"lines must be an integer from 0 to {MAX_LINES} (scrollback "
                            "lines above the visible pane)")
        return {"pane": pane, "lines": lines, "max_bytes": max_bytes}
    _only(params, ("text", "keys", "enter"))
    text = params.get("text", "")
    keys = params.get("keys", [])
    enter = params.get("enter", False)
    if not isinstance(text, str):
        raise BadParams("text must be a string (typed as it is)")
    if not isinstance(keys, list) or len(keys) > MAX_KEYS or \
            not all(isinstance(key, str) and KEY_NAME.match(key) for key in keys):
        raise BadParams(f"keys must be a list of at most {MAX_KEYS} tmux key names such as "
                        "C-c, Escape or Up (printable, no blanks, at most 32 characters)")
    if not isinstance(enter, bool):
        raise BadParams("enter must be true or false")
    if not (text or keys or enter):
        raise BadParams("nothing to send: give text, keys or enter")
    return {"pane": pane, "keys": keys, "text": text, "enter": enter}


def sent(params: dict[str, Any]) -> str:
    """What a send types, for its audit line, in the order tmux gets it."""
    parts = [f"keys {' '.join(params['keys'])}"] if params["keys"] else []
    text = params["text"]
    if text:
        shown = text if len(text) <= AUDIT_TEXT_CHARS else text[:AUDIT_TEXT_CHARS] + "..."
        parts.append(f"text {shown!r} ({len(text)} characters)")
    if params["enter"]:
        parts.append("Enter")
    return ", then ".join(parts)


def bound(pane_max_bytes: int, max_line_bytes: int) -> int:
    """The bytes of text a capture returns: moo.pane_max_bytes, but never so many that the
    handler's one answer line could pass moo.max_line_bytes: a pane's text escaped as JSON
    takes at most twice its bytes (quotes, backslashes, line ends; tmux gives no control
    characters), and REPLY_ROOM holds the rest of the answer."""
    return min(pane_max_bytes, max(0, (max_line_bytes - REPLY_ROOM) // 2))


def tail(text: str, max_bytes: int) -> tuple[str, bool]:
    """A capture as returned: ``text`` without the blank lines below the last output, and,
    when longer than ``max_bytes`` bytes of UTF-8, only its last whole lines that fit (the
    bottom of a pane is what it showed last). True when it was cut."""
    text = text.rstrip("\n")
    data = text.encode()
    if len(data) <= max_bytes:
        return text, False
    start = len(data) - max_bytes
    kept = data[start:]
    newline = kept.find(b"\n")
    if data[start - 1] != NEWLINE and newline >= 0:   # the first line is only a part: drop it
        kept = kept[newline + 1:]
    return kept.decode("utf-8", "ignore"), True   # "ignore": a character cut in two


def captured(result: Any, pane: str, max_bytes: int) -> tuple[dict[str, Any], bool]:
    """The caller's result for a handler's capture ``result``: ``{"pane", "text",
    "truncated"}``, held to ``max_bytes`` here too (a handler of one's own may not cut).
    True when the text was cut, by the handler or here. BadParams when it is no capture."""
    if not isinstance(result, dict) or not isinstance(result.get("text"), str):
        raise BadParams('its result is not {"text": string, ...}')
    text, cut = tail(result["text"], max_bytes)
    cut = cut or result.get("truncated") is True
    return {"pane": pane, "text": text, "truncated": cut}, cut
