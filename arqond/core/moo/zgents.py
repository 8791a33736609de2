"""The served Zgents and what happens to messages to them.

A message to NAME (a FIFO line, a reply routed by replyTo, a narrative query) is published on
NAME:inbox, then handed to NAME's handler when it is a request for it (arqond/core/moo/inbox.py
decides), else to a reader waiting in ``arqon.recv``, else kept in NAME's mailbox. A message
leaves the mailbox only once a reader that is still there has it.

No I/O: the bus, the timers (Timers port), the clock, the user database and the registry
writer (``on_change``) come in from the adapter (arqond/moo/layer.py), which also creates and
removes each Zgent's files around ``add`` and ``remove``.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Protocol

from arqond.core import jsonrpc
from arqond.core.access import Owners
from arqond.core.bus import Bus
from arqond.core.envelope import SERVER_SENDER
from arqond.core.errors import RpcCode
from arqond.core.moo import inbox, pane
from arqond.core.moo.inbox import MESSAGE, NOTIFICATION, REFUSED
from arqond.core.moo.mailbox import Mailbox
from arqond.core.moo.registry import Registry, Zgent
from arqond.core.moo.rpc import Calls
from arqond.core.principal import Principal
from arqond.core.quotas import Quota
from arqond.core.timers import Timers
from arqond.log import log_event

if TYPE_CHECKING:
    from arqond.config import Config
    from arqond.core.moo.session import Session

log = logging.getLogger("arqond.moo")

# The Timers key of the periodic registry sweep (stale statuses, purges).
SWEEP = ("moo", "sweep")
MAX_SWEEP_INTERVAL = 60.0


class TooManyZgents(Exception):
    """moo.max_zgents Zgents are served already."""


class Waiter:
    """A reader waiting in ``arqon.recv`` for NAME's next message (also its Timers key)."""

    __slots__ = ("session", "request_id")

    def __init__(self, session: "Session", request_id: Any) -> None:
        self.session = session
        self.request_id = request_id


class Elsewhere(Protocol):
    """A Zgent another node of a cluster serves (arqond/cluster/zgents.py): its handler here
    carries requests there, and every message to it goes there (its inbox and mailbox are
    there)."""

    zgent: str
    node: str

    def write(self, obj: dict[str, Any]) -> None:
        """A request or notification for its handler on ``node`` (Calls' Handler)."""

    def line(self, message: dict[str, Any]) -> None:
        """A message to it, as if read from its inbox on ``node``."""


class Served:
    """A registered Zgent's live parts next to its model."""

    __slots__ = ("zgent", "mailbox", "waiters", "handler", "elsewhere")

    def __init__(self, zgent: Zgent, mailbox: Mailbox) -> None:
        self.zgent = zgent
        self.mailbox = mailbox
        self.waiters: deque[Waiter] = deque()
        self.handler: "Session | Elsewhere | None" = None
        # Set when another node serves it: this node's files only pass on to there.
        self.elsewhere: Elsewhere | None = None


class Zgents:
    def __init__(self, bus: Bus, config: "Config", timers: Timers, clock: Callable[[], float],
                 monotonic: Callable[[], float], *, on_change: Callable[[], None]) -> None:
        self.bus = bus
        self.config = config
        self.timers = timers
        self.clock = clock                # wall time, for lastSeen
        self.changed = on_change          # registry.json is out of date
        self.served: dict[str, Served] = {}
        self.registry = Registry()
        self.calls = Calls(timers, monotonic)
        self.sessions: set["Session"] = set()
        self.inbox_lines_total = 0
        self.inbox_refused_total = 0
        self.mailbox_dropped_total = 0
        self.socket_connections_total = 0
        self.socket_requests_total = 0
        self.socket_errors_total = 0
        self.socket_clients_cut_total = 0
        self.socket_clients_refused_total = 0
        self.internal_errors_total = 0
        self.abandoned_waits_total = 0
        self.registry_purged_total = 0
        self.zgents_refused_total = 0
        self.pane_captures_cut_total = 0

    # -- registration -----------------------------------------------------------------------

    def check_room(self, principal: Principal | None) -> None:
        """Room for one more Zgent, registered by ``principal`` (None: brought in by a
        narrative file): within moo.max_zgents, those the configuration declares aside, and
        within the principal's quotas.zgents. TooManyZgents or QuotaExceeded, logged."""
        limit = self.config.moo.max_zgents
        declared = sum(served.zgent.spec.source == "config" for served in self.served.values())
        if len(self.served) - declared >= limit:
            self.zgents_refused_total += 1
            self.bus.emit("limit_reached", limit="moo.max_zgents", value=limit,
                          **(principal.log_fields() if principal else {}))
            raise TooManyZgents(f"moo.max_zgents ({limit}) Zgents are registered already; "
                                "unregister one first")
        if principal is not None:
            owned = sum(served.zgent.spec.owner == principal.key
                        for served in self.served.values())
            self.bus.charges.check(principal, Quota.ZGENTS, owned)

    def add(self, zgent: Zgent, mailbox: Mailbox, owners: Owners) -> Served:
        served = self.served[zgent.id] = Served(zgent, mailbox)
        self.bus.access.owners[zgent.id] = owners
        self.registry.add(zgent)
        self.changed()
        return served

    def remove(self, name: str) -> dict[str, Any]:
        """NAME is no longer served: what its handler owed is answered, its connections are
        ended, its waiting readers dropped; its entry stays in the registry, offline."""
        served = self.served.pop(name)
        del self.bus.access.owners[name]
        if served.handler is not None:
            self.calls.handler_gone(served.handler, f"{name} was unregistered")
        for session in [s for s in self.sessions if s.zgent == name]:
            session.end()
        self._drop_waiters(served)
        entry = self.registry.retire(name, self.clock())
        self.changed()
        return entry

    def touch(self, name: str) -> None:
        """A sign of life from NAME: lastSeen now, status active."""
        if self.registry.touch(name, self.clock()):
            self.changed()

    def schedule_sweep(self) -> None:
        moo = self.config.moo
        interval = min(moo.stale_after / 4, MAX_SWEEP_INTERVAL)
        if moo.purge_offline_after:
            interval = min(interval, moo.purge_offline_after / 4)
        self.timers.arm(SWEEP, max(0.5, interval), self.sweep)

    def sweep(self) -> None:
        moo = self.config.moo
        # An attached handler is a standing sign of life.
        attended = {name for name, served in self.served.items()
                    if served.handler is not None and served.elsewhere is None}
        changed, purged = self.registry.sweep(self.clock(), moo.stale_after,
                                              moo.purge_offline_after, attended)
        for name in purged:
            self.registry_purged_total += 1
            log.info("Zgent %s purged from the registry: offline for more than %gs "
                     "(moo.purge_offline_after)", name, moo.purge_offline_after)
        if changed:
            self.changed()
        self.schedule_sweep()

    def reload(self, config: "Config") -> None:
        self.config = config
        for served in self.served.values():
            self.mailbox_dropped_total += served.mailbox.resize(config.moo.mailbox_size)
        self.changed()
        self.schedule_sweep()

    def stop(self) -> None:
        """Answer and end everything; every Zgent offline (the caller writes the registry)."""
        self.timers.disarm(SWEEP)
        self.calls.stop("arqond is stopping")
        for session in list(self.sessions):
            session.end()
        for name, served in self.served.items():
            self._drop_waiters(served)
            self.registry.set_offline(name)

    # -- messages to a Zgent ----------------------------------------------------------------

    def fifo_line(self, name: str, raw: bytes) -> None:
        """JSON objects as they are, any other line as {"raw": line}; a line that fails inside
        arqond is logged, counted and delivered as raw, never lost."""
        message = None
        try:
            message, malformed, refused = inbox.decode(raw, self.config.server.max_json_depth)
            if refused:
                log_event(log, logging.WARNING, "line_malformed",
                          f"{name}-inbox: {malformed}; delivered as raw", zgent=name)
            self.inbox_line(name, message, malformed)
        except Exception:
            self.internal_error(f"{name}-inbox: a line failed inside arqond; delivered as raw")
            if message is None or message.keys() != {"raw"}:
                try:
                    self.inbox_line(name, {"raw": raw.decode("utf-8", "replace")})
                except Exception:
                    log.exception("%s-inbox: delivering it as raw failed too; the line was %r",
                                  name, raw)

    def fifo_refused(self, name: str, reason: str, size: int) -> None:
        self.inbox_refused_total += 1
        log_event(log, logging.WARNING, "line_refused",
                  f"{name}-inbox: {size} byte(s) refused: {reason}", zgent=name)

    def inbox_line(self, name: str, message: dict[str, Any],
                   malformed: str | None = None) -> None:
        """One message to NAME, exactly as if read from NAME-inbox; ``malformed``: why a
        line is delivered as {"raw": ...} (its metadata says so on the bus)."""
        served = self.served.get(name)
        if served is not None and served.elsewhere is not None:
            self.inbox_lines_total += 1
            served.elsewhere.line(message)     # published and kept where it is served
            return
        way, why = inbox.route(name, message, self.served,
                               served is not None and served.handler is not None)
        if way is REFUSED:
            self.inbox_refused_total += 1
            log_event(log, logging.WARNING, "line_refused", why, zgent=name)
            return
        assert served is not None
        self.inbox_lines_total += 1
        sender = message.get("from")
        self.bus.publish({"type": "message", "room": name, "channel": "inbox",
                          "sender": sender if isinstance(sender, str) else SERVER_SENDER,
                          "payload": message, "metadata": {"zgent": name, **(
                              {"malformed": malformed} if malformed else {})}})
        if why:
            log_event(log, logging.WARNING, "line_refused", why, zgent=name)
        if way is MESSAGE:
            self.deliver(served, message)
            return
        timeout = self.config.moo.handler_timeout
        if way is NOTIFICATION:
            self.calls.forward(name, served.handler, message, None, None, timeout)
            return
        # The requesting Zgent is the origin: its waiting requests are capped like a socket
        # client's, and the answer is a message to it.
        reply_to = message["replyTo"]
        self.calls.forward(name, served.handler, message,
                           lambda answer: self.inbox_line(reply_to, answer), reply_to, timeout)

    def pane_bound(self) -> int:
        moo = self.config.moo
        return pane.bound(moo.pane_max_bytes, moo.max_line_bytes)

    def pane_captured(self, name: str, target: str, answer: dict[str, Any]) -> dict[str, Any]:
        """The caller's answer to an arqon.pane.capture, from the handler's: its text held
        to moo.pane_max_bytes, the cut counted and logged."""
        if "result" not in answer:
            return answer
        limit = self.pane_bound()
        try:
            result, cut = pane.captured(answer["result"], target, limit)
        except pane.BadParams as exc:
            log.warning("Zgent %s: handler answered %s wrongly: %s", name, pane.CAPTURE, exc)
            return jsonrpc.error(answer["id"], RpcCode.INTERNAL_ERROR, f"{name}'s handler "
                                 f"answered {pane.CAPTURE} wrongly: {exc}")
        if cut:
            self.pane_captures_cut_total += 1
            self.bus.emit("limit_reached", limit="moo.pane_max_bytes", value=limit, zgent=name)
        return {**answer, "result": result}

    def deliver(self, served: Served, message: dict[str, Any]) -> None:
        """To the first reader still waiting for it, else into the mailbox."""
        waiters = served.waiters
        while waiters:
            waiter = waiters.popleft()
            self.timers.disarm(waiter)
            if waiter.session.offer(jsonrpc.result(waiter.request_id, message)):
                waiter.session.finish_if_done()
                return
            # The waiter went away (socat's -t ran out, Ctrl-C): the message stays.
            self.abandoned(served, waiter.session)
        mailbox = served.mailbox
        if mailbox.put(message):
            return
        self.mailbox_dropped_total += 1
        if not mailbox.full_since_drain:
            mailbox.full_since_drain = True
            log_event(log, logging.WARNING, "mailbox_full",
                      f"mailbox of {served.zgent.id} full ({mailbox.size}): dropping the "
                      "oldest messages until it reads some", zgent=served.zgent.id)

    def recv(self, session: "Session", served: Served, wait: float, request_id: Any) -> None:
        """``arqon.recv``: the oldest message, or a wait of up to ``wait`` seconds for one."""
        self.touch(served.zgent.id)
        mailbox = served.mailbox
        message = mailbox.peek()
        if message is not None or wait == 0:
            # Taken out of the mailbox only once a live reader's socket has it.
            if not session.offer(jsonrpc.result(request_id, message)):
                if message is not None:
                    self.abandoned(served, session)
            elif message is not None:
                mailbox.take()
            return
        waiter = Waiter(session, request_id)
        served.waiters.append(waiter)
        self.timers.arm(waiter, wait, lambda: self._recv_expired(served, waiter))

    def _recv_expired(self, served: Served, waiter: Waiter) -> None:
        served.waiters.remove(waiter)   # every other way out disarms its timer
        waiter.session.write(jsonrpc.result(waiter.request_id, None))
        waiter.session.finish_if_done()

    def abandoned(self, served: Served, session: "Session") -> None:
        self.abandoned_waits_total += 1
        log.info("Zgent %s: arqon.recv reader (%s) went away; the message stays in the "
                 "mailbox", served.zgent.id, session.peer)
        session.abort()

    def _drop_waiters(self, served: Served, session: "Session | None" = None) -> None:
        """Forget the waiting readers (of ``session`` only, when given), unanswered."""
        for waiter in [w for w in served.waiters if session in (None, w.session)]:
            served.waiters.remove(waiter)
            self.timers.disarm(waiter)

    # -- handlers and socket sessions ---------------------------------------------------------

    def attach(self, served: Served, session: "Session") -> None:
        served.handler = session
        self.registry.touch(served.zgent.id, self.clock())
        self.changed()
        log.info("Zgent %s: handler attached (%s)", served.zgent.id, session.peer)

    def connected(self, session: "Session") -> bool:
        """A new socket client; False when it is one too many (moo.max_clients)."""
        self.socket_connections_total += 1
        limit = self.config.moo.max_clients
        if len(self.sessions) >= limit:
            self.socket_clients_refused_total += 1
            log_event(log, logging.WARNING, "connection_refused",
                      f"{session.zgent}.sock: client ({session.peer}) refused: "
                      f"moo.max_clients ({limit}) reached", zgent=session.zgent)
            return False
        self.sessions.add(session)
        return True

    def gone(self, session: "Session") -> None:
        self.sessions.discard(session)
        if session.client is not None:
            self.bus.detach(session.client, reason="socket closed")
        self.calls.origin_gone(session)
        self.calls.handler_gone(session,
                                f"{session.zgent}'s handler went away before answering")
        served = self.served.get(session.zgent)
        if served is None:
            return
        self._drop_waiters(served, session)
        if served.handler is session:
            served.handler = None
            log.info("Zgent %s: handler detached (%s)", session.zgent, session.peer)
            if self.config.moo.offline_without_handler and \
                    self.registry.set_offline(session.zgent):
                self.changed()

    def expecting(self, session: "Session") -> bool:
        """Whether an answer is still due to ``session`` (a call, or a wait in recv)."""
        if self.calls.count_for(session):
            return True
        served = self.served.get(session.zgent)
        return served is not None and any(w.session is session for w in served.waiters)

    def too_slow(self, session: "Session") -> None:
        self.socket_clients_cut_total += 1
        log_event(log, logging.WARNING, "client_slow",
                  f"{session.zgent}.sock: client ({session.peer}) fell more than "
                  f"{self.config.moo.client_buffer_bytes} bytes behind; disconnected",
                  zgent=session.zgent)
        session.abort()

    def internal_error(self, what: str) -> None:
        """A record that failed inside arqond (a bug): counted, logged with its traceback."""
        self.internal_errors_total += 1
        log.exception("%s", what)
