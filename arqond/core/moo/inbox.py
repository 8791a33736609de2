"""What a line to a Zgent is: the message a FIFO line becomes, and where a message goes.

``decode`` turns a FIFO line into the message it is. ``route`` decides, from the message, the
Zgents served and whether the addressee has a handler attached: refused (no such Zgent), a
plain message (published, kept in the mailbox), a request for the handler whose answer goes
to the ``replyTo`` Zgent's inbox, or a notification for the handler (no ``id``: no answer).
A request that cannot go to the handler (an ``arqon.*`` method among them: a line carries no
identity to check) is kept as a plain message, with the reason, for a Zgent that reads its
inbox and answers by hand.
"""

from __future__ import annotations

from collections.abc import Container
from enum import Enum
from typing import Any

from arqond.core import jsonrpc, payload
from arqond.core.jsonrpc import RpcError
from arqond.core.moo.names import ZgentError, check_name


class Route(Enum):
    REFUSED = "refused"            # no such Zgent: nothing published, nothing kept
    MESSAGE = "message"            # published on NAME:inbox and kept in NAME's mailbox
    REQUEST = "request"            # published, then to the handler; the answer to replyTo
    NOTIFICATION = "notification"  # published, then to the handler; no answer


# The members by plain names (reading one off its Enum class costs about 0.1 us in 3.11).
REFUSED, MESSAGE = Route.REFUSED, Route.MESSAGE
REQUEST, NOTIFICATION = Route.REQUEST, Route.NOTIFICATION
PLAIN = (MESSAGE, None)
# The methods arqond answers itself on a Zgent's socket; never a handler's to get from a line.
ARQOND_METHODS = "arqon."


def decode(raw: bytes, max_depth: int) -> tuple[dict[str, Any], str | None, bool]:
    """A FIFO line as a message: a JSON object as it is, any other line (text, other JSON)
    as ``{"raw": line}`` with why (metadata.malformed), and whether that is a refusal (JSON
    arqond will not carry, delivered as raw all the same) rather than plain text."""
    return payload.object_or_raw(raw, max_depth)


def route(name: str, message: dict[str, Any], served: Container[str],
          serving: bool) -> tuple[Route, str | None]:
    """Where a message to ``name`` goes, and why when that is not what it asked for."""
    if name not in served:
        return REFUSED, f"message to {name!r} refused: no such Zgent"
    if "method" not in message or "replyTo" not in message or not serving:
        return PLAIN
    try:
        jsonrpc.check_request(message)
        reply_to = check_name(message["replyTo"])
    except (RpcError, ZgentError) as exc:
        return MESSAGE, f"{name}-inbox: request kept as a plain message: {exc}"
    if reply_to not in served:
        return MESSAGE, (f"{name}-inbox: replyTo {reply_to!r} is not a registered Zgent; "
                               "request kept as a plain message")
    if message["method"].startswith(ARQOND_METHODS):
        # A line in a FIFO or a queries file says nothing of who wrote it: arqond's own
        # methods (a pane's keyboard among them) are asked on the socket, where it knows.
        return MESSAGE, (f"{name}-inbox: request kept as a plain message: {message['method']} "
                         f"is asked on {name}.sock, where arqond knows who asks")
    return (REQUEST, None) if "id" in message else (NOTIFICATION, None)
