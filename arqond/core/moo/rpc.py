"""Requests forwarded to Zgent handlers, waiting for their answers.

A forwarded request goes out under an id of arqond's own (``arqond-N``), so two askers using
the same id (both sending "q-1") never receive each other's answer; the answer goes back under
the asker's id. Each waiting request is owned twice, by its origin (a socket client, or the
Zgent a FIFO request's ``replyTo`` names) and by the handler it went to, so counting an
origin's requests or answering everything a departed handler owed reads only their own entries.

Nothing waits for ever: past the handler timeout a call is answered -32002; a handler that
leaves, a Zgent unregistered, arqond stopping answer -32001. One timer (of the Timers port)
serves every call: it is armed for the earliest deadline and, when it fires, answers what is
due and is armed again for the next one, so a call answered in time costs no timer at all.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Hashable
from typing import Any, Callable, Protocol

from arqond.core import jsonrpc
from arqond.core.errors import RpcCode
from arqond.core.timers import Timers

log = logging.getLogger("arqond.moo")

# Requests one socket client (or one replyTo Zgent) may have waiting on a handler at once;
# more get -32004, so a flooding client cannot bury a handler under work nobody else asked for.
MAX_PENDING_PER_ORIGIN = 256

Reply = Callable[[dict[str, Any]], None]


class Handler(Protocol):
    """A connection attached with ``arqon.serve``: requests are written to it."""

    zgent: str

    def write(self, obj: dict[str, Any]) -> None: ...


# The Timers key of the one timer that answers calls past their deadline.
DEADLINES = ("moo", "call deadlines")


class Call:
    __slots__ = ("key", "original_id", "reply", "origin", "handler", "zgent", "timeout",
                 "deadline")

    def __init__(self, key: str, original_id: Any, reply: Reply, origin: Hashable,
                 handler: Handler, zgent: str, timeout: float, deadline: float) -> None:
        self.key = key                  # arqond's id for it, as the handler sees it
        self.original_id = original_id  # the asker's id
        self.reply = reply              # takes the answer to the asker
        self.origin = origin
        self.handler = handler
        self.zgent = zgent
        self.timeout = timeout
        self.deadline = deadline        # on the ``clock`` the Calls were given


class Calls:
    def __init__(self, timers: Timers, clock: Callable[[], float]) -> None:
        self.timers = timers
        self.clock = clock              # monotonic seconds, as the timers count them
        self.armed_for: float | None = None   # the deadline the timer is armed for
        self.waiting: dict[str, Call] = {}
        self.by_origin: defaultdict[Hashable, dict[str, Call]] = defaultdict(dict)
        self.by_handler: defaultdict[Handler, dict[str, Call]] = defaultdict(dict)
        self._numbers = itertools.count(1)
        self.handler_requests_total = 0
        self.handler_timeouts_total = 0
        self.late_replies_total = 0

    def forward(self, zgent: str, handler: Handler | None, request: dict[str, Any],
                reply: Reply | None, origin: Hashable, timeout: float) -> None:
        """Hand ``request`` (checked already) to ``zgent``'s handler; ``reply`` takes the
        answer, or None for a notification (nothing comes back)."""
        out = {"jsonrpc": "2.0", "method": request["method"]}
        if "params" in request:
            out["params"] = request["params"]
        if handler is None:
            if reply is not None:
                reply(jsonrpc.error(request.get("id"), RpcCode.NOT_SERVING,
                                    f"{zgent} is not serving: no handler attached "
                                    f"(arqon serve {zgent})"))
            return
        self.handler_requests_total += 1
        if reply is None:
            handler.write(out)
            return
        if self.count_for(origin) >= MAX_PENDING_PER_ORIGIN:
            reply(jsonrpc.error(request.get("id"), RpcCode.BUSY,
                                f"more than {MAX_PENDING_PER_ORIGIN} requests waiting from "
                                "this client; wait for some replies"))
            return
        key = f"arqond-{next(self._numbers)}"
        deadline = self.clock() + timeout
        call = Call(key, request.get("id"), reply, origin, handler, zgent, timeout, deadline)
        self.waiting[key] = call
        self.by_origin[origin][key] = call
        self.by_handler[handler][key] = call
        if self.armed_for is None or deadline < self.armed_for:
            self.armed_for = deadline
            self.timers.arm(DEADLINES, timeout, self._expire)
        out["id"] = key
        handler.write(out)

    def answer(self, handler: Handler, obj: dict[str, Any]) -> bool:
        """A line from ``handler`` with an id and no method: the answer to one of its calls.
        False when no call of this handler has that id (it timed out, or never was)."""
        key = obj.get("id")
        call = self.waiting.get(key) if isinstance(key, str) else None
        if call is None or call.handler is not handler:
            self.late_replies_total += 1
            log.debug("Zgent %s: reply to unknown or expired id %r dropped", handler.zgent, key)
            return False
        self._remove(call)
        problem = jsonrpc.check_response(obj)
        if problem:
            log.warning("Zgent %s: handler sent an invalid reply: %s", handler.zgent, problem)
            call.reply(jsonrpc.error(call.original_id, RpcCode.INTERNAL_ERROR,
                                     f"{handler.zgent}'s handler sent an invalid reply: "
                                     f"{problem}"))
        else:
            call.reply({**obj, "jsonrpc": "2.0", "id": call.original_id})
        return True

    def count_for(self, origin: Hashable) -> int:
        return len(self.by_origin.get(origin, ()))

    def handler_gone(self, handler: Handler, why: str) -> None:
        """Every call ``handler`` still owed is answered -32001 with ``why``."""
        for call in list(self.by_handler.get(handler, {}).values()):
            self._remove(call)
            call.reply(jsonrpc.error(call.original_id, RpcCode.NOT_SERVING, why))

    def origin_gone(self, origin: Hashable) -> None:
        """The asker left: its calls are forgotten (a late answer counts as late)."""
        for call in list(self.by_origin.get(origin, {}).values()):
            self._remove(call)

    def stop(self, why: str) -> None:
        self.timers.disarm(DEADLINES)
        self.armed_for = None
        for call in list(self.waiting.values()):
            self._remove(call)
            call.reply(jsonrpc.error(call.original_id, RpcCode.NOT_SERVING, why))

    def _remove(self, call: Call) -> None:
        key = call.key
        del self.waiting[key]
        by_origin = self.by_origin[call.origin]
        del by_origin[key]
        if not by_origin:
            del self.by_origin[call.origin]
        by_handler = self.by_handler[call.handler]
        del by_handler[key]
        if not by_handler:
            del self.by_handler[call.handler]

    def _expire(self) -> None:
        """The timer fired: answer every call past its deadline, arm for the next one."""
        self.armed_for = None
        now = self.clock()
        due = [call for call in self.waiting.values() if call.deadline <= now]
        for call in due:
            self._remove(call)
            self.handler_timeouts_total += 1
            log.warning("Zgent %s: handler did not answer within %gs", call.zgent,
                        call.timeout)
            call.reply(jsonrpc.error(call.original_id, RpcCode.TIMEOUT,
                                     f"{call.zgent}'s handler did not answer within "
                                     f"{call.timeout:g}s"))
        if self.waiting:
            self.armed_for = min(call.deadline for call in self.waiting.values())
            self.timers.arm(DEADLINES, self.armed_for - now, self._expire)

