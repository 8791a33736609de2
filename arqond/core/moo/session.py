"""One connection to a Zgent socket (MOO_DIR/NAME.sock), with no I/O: bytes in, replies out
through its Link (the socket adapter, arqond/moo/sockets.py).

One JSON object per line each way, JSON-RPC 2.0 style. ``arqon.*`` methods are answered here
(``arqon.pane.*`` checked here, then carried out by the Zgent's handler); other requests go to
the Zgent's handler; a line with a ``type`` or ``command`` is a bus envelope. Everything written back is bounded by moo.client_buffer_bytes: a client whose
unsent replies pass it (it floods without reading) is cut off and counted, so it hurts only
itself.

The connection's mode is one state, changed only through ``_on`` and the table below:

- CLIENT: asks (arqon.* methods, requests for the handler, bus envelopes).
- SUBSCRIBED: after arqon.subscribe, bus frames for it go out as arqon.message notifications.
- SERVING: after arqon.serve, the Zgent's handler: a line with an id and no method answers
  one of the requests written to it. A connection serves or subscribes, not both: a handler
  would take each notification for a request.
- DRAINING: a client that shut down its writing side (socat does after its request) gets
  the answers still due to it, then the close.
- CLOSED: closed by either side; nothing more is written.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Protocol

from arqond.core import jsonrpc
from arqond.core.access import Action, Refused
from arqond.core.clients import Client
from arqond.core.envelope import now_iso
from arqond.core.errors import RpcCode
from arqond.core.moo import pane
from arqond.core.moo.inbox import ARQOND_METHODS
from arqond.core.principal import Principal
from arqond.core.framing import LineFramer, too_long
from arqond.core.jsonrpc import RpcError
from arqond.core.quotas import QuotaExceeded
from arqond.core.router import RoutingError, split_target
from arqond.log import log_event

if TYPE_CHECKING:
    from arqond.core.moo.zgents import Served, Zgents
    from arqond.unix import Peer

log = logging.getLogger("arqond.moo")

MAX_RECV_WAIT = 3600.0
NOTIFICATION = b'{"jsonrpc":"2.0","method":"arqon.message","params":%s}\n'


class Link(Protocol):
    """What the socket adapter gives a session. Every call returns at once."""

    def queue(self, data: bytes) -> int:
        """Send ``data`` when the socket can take it; the bytes now waiting unsent, or -1
        when the link is closing (a write that failed closes it: the bytes are lost)."""

    def queued(self) -> int:
        """Bytes waiting unsent."""

    def hung_up(self) -> bool:
        """Whether the peer is gone for good (closed both ways) or the link is closing."""

    def close(self) -> None:
        """Close once what is queued has been sent."""

    def abort(self) -> None:
        """Close now, dropping what is unsent."""


class Mode(Enum):
    CLIENT = "client"
    SUBSCRIBED = "subscribed"
    SERVING = "serving"
    DRAINING = "draining"
    CLOSED = "closed"


# The members by plain names, for the checks made on every line: reading a member off its Enum
# class costs about 0.1 us in Python 3.11, ten times a module global.
CLIENT, SUBSCRIBED, SERVING = Mode.CLIENT, Mode.SUBSCRIBED, Mode.SERVING
DRAINING, CLOSED = Mode.DRAINING, Mode.CLOSED


class Event(Enum):
    SUBSCRIBE = "subscribe"
    SERVE = "serve"
    END_OF_INPUT = "end of input"    # the peer shut down its writing side
    NOTHING_DUE = "nothing due"      # no answer owed any more
    CLOSE = "close"                  # closed by arqond or by the peer


# Mode changes, as data. A pair missing here is refused (subscribe while serving, ...),
# except CLOSE, which every mode takes.
TRANSITIONS = {
    (Mode.CLIENT, Event.SUBSCRIBE): Mode.SUBSCRIBED,
    (Mode.SUBSCRIBED, Event.SUBSCRIBE): Mode.SUBSCRIBED,
    (Mode.CLIENT, Event.SERVE): Mode.SERVING,
    (Mode.SERVING, Event.SERVE): Mode.SERVING,
    (Mode.CLIENT, Event.END_OF_INPUT): Mode.DRAINING,
    # A subscriber that stops writing still reads its notifications.
    (Mode.SUBSCRIBED, Event.END_OF_INPUT): Mode.SUBSCRIBED,
    # A handler that stops writing can answer nothing more: done at once.
    (Mode.SERVING, Event.END_OF_INPUT): Mode.CLOSED,
    (Mode.DRAINING, Event.NOTHING_DUE): Mode.CLOSED,
}


class Session:
    """The ArqonBus Sink of the connection too: bus frames for it come through ``send``."""

    def __init__(self, zgents: "Zgents", zgent: str, peer: "Peer", principal: Principal,
                 link: Link) -> None:
        self.zgents = zgents
        self.zgent = zgent
        self.peer = peer
        # Who the kernel says the peer is (arqond/principals.py): its bus client's principal.
        self.principal = principal
        self.link = link
        self.framer = LineFramer(zgents.config.moo.max_line_bytes)
        self.mode = CLIENT
        self.client: Client | None = None   # on the bus once it sends an envelope/subscribes
        if not zgents.connected(self):
            limit = zgents.config.moo.max_clients
            self.write(jsonrpc.error(None, RpcCode.BUSY, f"arqond serves {limit} Zgent "
                                     "socket clients already; try again later"))
            self.end()

    def _on(self, event: Event) -> None:
        new = CLOSED if event is Event.CLOSE else TRANSITIONS[self.mode, event]
        if new is not self.mode:
            log.debug("Zgent %s socket (%s): %s -> %s on %s", self.zgent, self.peer,
                      self.mode.value, new.value, event.value)
            self.mode = new

    # -- what the adapter feeds in ----------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        for line in self.framer.feed(data):
            if self.mode is CLOSED:
                return
            if line.cut:
                self._refuse(too_long(self.framer.max_bytes))
            elif line.data.strip():   # a blank line (Enter in socat) is no request
                self.line(line.data)

    def receive_eof(self) -> None:
        # The client may half-close after its last request (socat does): answer first. A last
        # line without its newline is whole.
        last = self.framer.finish()
        if last is not None and self.mode is not CLOSED:
            if last.cut:
                self._refuse(too_long(self.framer.max_bytes))
            elif last.data.strip():
                self.line(last.data)
        if self.mode is not CLOSED:
            self._on(Event.END_OF_INPUT)
            if self.mode is CLOSED:
                self.link.close()
            else:   # bus envelopes it sent are answered once stored
                self.zgents.bus.after_pending(self.finish_if_done)

    def lost(self) -> None:
        """The connection is gone (either side closed it)."""
        self._on(Event.CLOSE)
        self.zgents.gone(self)

    # -- writing back ------------------------------------------------------------------------

    def send(self, frame: bytes) -> bool:
        """A bus frame for this client (the Sink protocol); False when it was cut off."""
        if self.mode is SUBSCRIBED:
            return self.send_line(NOTIFICATION % frame)
        return self.send_line(frame + b"\n")

    def buffered(self) -> int:
        """Bytes queued for the peer (the Sink protocol)."""
        return 0 if self.mode is CLOSED else self.link.queued()

    def send_line(self, data: bytes) -> bool:
        """Queue one line; False (and the client cut off) when it is too far behind."""
        if self.mode is CLOSED:
            return True
        if self.link.queue(data) > self.zgents.config.moo.client_buffer_bytes:
            self.zgents.too_slow(self)
            return False
        return True

    def write(self, obj: dict[str, Any]) -> None:
        self.send_line(jsonrpc.line(obj))

    def answered(self, obj: dict[str, Any]) -> None:
        """The answer to one of this client's requests (from its Zgent's handler)."""
        self.write(obj)
        self.finish_if_done()

    def offer(self, obj: dict[str, Any]) -> bool:
        """Write a reply that must not be lost (a mailbox message): True only when a peer that
        is still there took it into its socket. False, with nothing written, when the peer has
        hung up (a client that half-closed after its request still reads, so only a full
        hang-up counts), the write failed, or the reply would push the client past its bound.
        """
        if self.mode is CLOSED or self.link.hung_up():
            return False
        data = jsonrpc.line(obj)
        if self.link.queued() + len(data) > self.zgents.config.moo.client_buffer_bytes:
            return False
        return self.link.queue(data) >= 0

    def finish_if_done(self) -> None:
        """Close a draining client once nothing more is due to it."""
        if self.mode is DRAINING and not self.zgents.expecting(self):
            self._on(Event.NOTHING_DUE)
            self.link.close()

    def close(self, code: int, reason: str) -> None:
        """The bus cuts this client off (the Sink protocol)."""
        self.abort()

    def abort(self) -> None:
        """Drop the connection now, unsent output included."""
        self._on(Event.CLOSE)
        self.link.abort()

    def end(self) -> None:
        """Close after what is queued has been sent."""
        self._on(Event.CLOSE)
        self.link.close()

    # -- one line in ----------------------------------------------------------------------------

    def _refuse(self, reason: str) -> None:
        self.zgents.socket_errors_total += 1
        log_event(log, logging.WARNING, "line_refused", f"{self.zgent}.sock: line refused: "
                  f"{reason}", zgent=self.zgent)
        self.write(jsonrpc.error(None, RpcCode.INVALID_REQUEST, f"refused: {reason}"))

    def line(self, raw: bytes) -> None:
        zgents = self.zgents
        zgents.socket_requests_total += 1
        obj: Any = None
        try:
            obj = jsonrpc.decode(raw, zgents.config.server.max_json_depth)
            if "method" not in obj:
                if self.mode is SERVING and "id" in obj and "type" not in obj:
                    if zgents.calls.answer(self, obj):   # a handler's answer
                        zgents.touch(self.zgent)
                elif "type" in obj or "command" in obj:
                    zgents.bus.receive(self._bus_client(), raw)
                else:
                    raise RpcError(RpcCode.INVALID_REQUEST, 'invalid request: no "method" '
                                   '(and not a bus envelope: no "type")', obj.get("id"))
                return
            jsonrpc.check_request(obj)
            served = zgents.served.get(self.zgent)
            if served is None:
                raise RpcError(RpcCode.NOT_SERVING, f"{self.zgent} is unregistered",
                               obj.get("id"))
            method = obj["method"]
            if method.startswith(ARQOND_METHODS):
                self._arqon(served, method, obj)
            else:
                zgents.calls.forward(self.zgent, served.handler, obj,
                                     self.answered if "id" in obj else None, self,
                                     zgents.config.moo.handler_timeout)
        except RpcError as exc:
            zgents.socket_errors_total += 1
            self.write(jsonrpc.error(exc.request_id, exc.code, exc.message))
        except Exception:
            zgents.internal_error(f"{self.zgent}.sock: a line failed inside arqond; answered "
                                  "-32603")
            zgents.socket_errors_total += 1
            request_id = obj.get("id") if isinstance(obj, dict) else None
            self.write(jsonrpc.error(request_id if jsonrpc.valid_id(request_id) else None,
                                     RpcCode.INTERNAL_ERROR, "internal error in arqond (it is "
                                     "logged); this connection stays usable"))

    def _bus_client(self, request_id: Any = None) -> Client:
        if self.client is None:
            try:
                self.client = self.zgents.bus.attach(
                    self, "moo", self.principal, welcome=False, join_default=False,
                    peer=f"{self.zgent}.sock {self.peer}")
            except QuotaExceeded as exc:
                raise RpcError(RpcCode.BUSY, str(exc), request_id) from None
        return self.client

    # -- arqon.* -------------------------------------------------------------------------------

    def _arqon(self, served: "Served", method: str, obj: dict[str, Any]) -> None:
        request_id = obj.get("id")
        params = jsonrpc.params_dict(obj)
        if method == "arqon.recv":
            self._recv(served, params, request_id)
            return
        if method in pane.METHODS:
            self._pane(served, method, params, obj)
            return
        answer = METHODS.get(method)
        if answer is None:
            raise RpcError(RpcCode.METHOD_NOT_FOUND, f"method not found: {method} (arqon.ping, "
                           "arqon.info, arqon.history, arqon.subscribe, arqon.recv, "
                           "arqon.serve, arqon.pane.capture, arqon.pane.send)", request_id)
        value = answer(self, served, params, request_id)
        if "id" in obj:
            self.write(jsonrpc.result(request_id, value))

    def _ping(self, served: "Served", params: dict[str, Any], request_id: Any) -> Any:
        return {"pong": True, "zgent": self.zgent, "timestamp": now_iso()}

    def _info(self, served: "Served", params: dict[str, Any], request_id: Any) -> Any:
        return served.zgent.entry()

    def _history(self, served: "Served", params: dict[str, Any], request_id: Any) -> Any:
        settings = self.zgents.bus.settings
        channel = params.get("channel")
        limit = params.get("limit", settings.history_default_limit)
        if channel is not None and not isinstance(channel, str):
            raise RpcError(RpcCode.INVALID_PARAMS, "channel must be a string", request_id)
        if not isinstance(limit, int) or not 0 < limit <= settings.history_size:
            raise RpcError(RpcCode.INVALID_PARAMS, "limit must be an integer from 1 to "
                           f"{settings.history_size}", request_id)
        reader = Client(None, "moo", self.principal, peer=f"{self.zgent}.sock {self.peer}")
        try:
            entries = self.zgents.bus.history_for(reader, self.zgent, channel)
        except RoutingError as exc:
            raise RpcError(RpcCode.FORBIDDEN, exc.message, request_id) from None
        return {"room": self.zgent, "channel": channel,
                "messages": [entry.envelope() for entry in entries[-limit:]]}

    def _subscribe(self, served: "Served", params: dict[str, Any], request_id: Any) -> Any:
        self._allowed(Event.SUBSCRIBE, request_id)
        extra = params.get("channels", [])
        if not isinstance(extra, list) or not all(isinstance(t, str) for t in extra):
            raise RpcError(RpcCode.INVALID_PARAMS, 'channels must be a list of "room:channel"',
                           request_id)
        targets = [(self.zgent, "*")]
        for text in extra:
            room, channel = split_target(text, None)
            if room is None or channel is None:
                raise RpcError(RpcCode.INVALID_PARAMS, f'{text!r} is not "room:channel"',
                               request_id)
            targets.append((room, channel))
        client = self._bus_client(request_id)
        try:
            for room, channel in targets:
                self.zgents.bus.join(client, room, channel)
        except RoutingError as exc:
            raise RpcError(RpcCode.INVALID_PARAMS, exc.message, request_id) from None
        self._on(Event.SUBSCRIBE)
        self.zgents.touch(self.zgent)
        return {"subscribed": [f"{r}:{c}" for r, c in targets], "method": "arqon.message"}

    def _here(self, served: "Served", what: str, request_id: Any) -> None:
        """Refused when another node of the cluster serves this Zgent: ``what`` is there."""
        if served.elsewhere is not None:
            raise RpcError(RpcCode.NOT_SERVING, f"{self.zgent} is served on node "
                           f"{served.elsewhere.node}: {what} there", request_id)

    def _recv(self, served: "Served", params: dict[str, Any], request_id: Any) -> None:
        self._here(served, "its inbox is read", request_id)
        self._require(Action.READ_INBOX, request_id)
        wait = params.get("wait", 0)
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or \
                not 0 <= wait <= MAX_RECV_WAIT:
            raise RpcError(RpcCode.INVALID_PARAMS, f"wait must be 0 to {MAX_RECV_WAIT:g} "
                           "seconds", request_id)
        self.zgents.recv(self, served, wait, request_id)

    def _pane(self, served: "Served", method: str, params: dict[str, Any],
              obj: dict[str, Any]) -> None:
        """arqon.pane.*: checked here, carried out by the Zgent's handler, which runs in the
        Zgent's tmux (arqond/core/moo/pane.py says why)."""
        zgents, name, request_id = self.zgents, self.zgent, obj.get("id")
        self._require(Action.MANAGE_ZGENT, request_id)
        target = served.zgent.spec.pane
        try:
            forwarded = pane.forwarded(method, params, target, zgents.pane_bound())
        except pane.BadParams as exc:
            raise RpcError(RpcCode.INVALID_PARAMS, str(exc), request_id) from None
        if method == pane.SEND and served.handler is not None:
            zgents.bus.audit(self.principal, f"Zgent {name}: typing into pane {target}: "
                             f"{pane.sent(forwarded)} ({self.peer})", zgent=name)
        reply = None
        if "id" in obj:
            reply = self.answered if method == pane.SEND else \
                lambda answer: self.answered(zgents.pane_captured(name, target, answer))
        zgents.calls.forward(name, served.handler, {**obj, "params": forwarded}, reply, self,
                             zgents.config.moo.handler_timeout)

    def _require(self, action: Action, request_id: Any) -> None:
        """Refused (-32003 naming the rule, logged with the peer) unless this peer may."""
        try:
            self.zgents.bus.access.check(self.principal, action, self.zgent)
        except Refused as refused:
            self.zgents.bus.refused(self.principal, refused, peer=f"{self.zgent}.sock "
                                    f"{self.peer}")
            raise RpcError(RpcCode.FORBIDDEN, str(refused), request_id) from None

    def _serve(self, served: "Served", params: dict[str, Any], request_id: Any) -> Any:
        zgents, name = self.zgents, self.zgent
        self._here(served, "its handler attaches", request_id)
        self._require(Action.SERVE_ZGENT, request_id)
        if served.handler is not None and served.handler is not self:
            raise RpcError(RpcCode.BUSY, f"{name} already has a handler "
                           f"({served.handler.peer})", request_id)
        self._allowed(Event.SERVE, request_id)
        self._on(Event.SERVE)
        zgents.attach(served, self)
        zgents.bus.audit(self.principal, f"Zgent {name}: handler attached ({self.peer})",
                         zgent=name)
        return {"serving": name}

    def _allowed(self, event: Event, request_id: Any) -> None:
        if (self.mode, event) not in TRANSITIONS:
            other = "arqon.serve" if event is Event.SUBSCRIBE else "arqon.subscribe"
            raise RpcError(RpcCode.INVALID_REQUEST, f"invalid request: this connection is "
                           f"{self.mode.value} ({other}); a connection serves or subscribes, "
                           "not both: open another one", request_id)


Method = Callable[[Session, "Served", dict[str, Any], Any], Any]
# The arqon.* methods answered at once (arqon.recv may wait, so it answers itself).
METHODS: dict[str, Method] = {"arqon.ping": Session._ping, "arqon.info": Session._info,
                              "arqon.history": Session._history,
                              "arqon.subscribe": Session._subscribe,
                              "arqon.serve": Session._serve}
