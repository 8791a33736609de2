"""HTTP/1.1 with h11 (sans-I/O parsing) on asyncio streams.

Monitoring: GET /health, /version, /status (JSON) and /metrics (Prometheus text, or JSON to a
client that prefers it); ArqonBus's /metrics/prometheus, /system/*, /storage/stats,
/telemetry/* and, with its X-API-Key or an admin token, POST /admin/* (their bodies:
arqond/transports/monitoring.py).
curl-first bus access: GET /v1/history, GET /v1/stream (NDJSON, one envelope per line, or
server-sent events when the client accepts text/event-stream, as a browser's EventSource
does), POST /v1/publish; the /v1 endpoints follow the WebSocket's JWT rules. A stream of one
channel resumes after a message it saw (``since``/``epoch``, or ``Last-Event-ID``) as
join_channel does.

HEAD is answered wherever GET is, as GET would be but without the body.

Bounds: request head ``MAX_HEAD_BYTES`` (431 past it) and ``MAX_HEADERS`` headers (431), body
server.max_message_size (413), ``IDLE_TIMEOUT`` seconds to send a whole request (a trickle of
bytes does not extend it: a slow sender is closed and counted), server.max_connections
connections (503). A stream has the bus's per-client buffer (server.client_buffer_bytes); one
that falls further behind is cut off and counted like any slow bus client.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import time
from http import HTTPStatus
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, urlsplit

import h11
import orjson

from arqond import PROTOCOL_VERSION, SERVICE_NAME, __version__
from arqond.config import Config
from arqond.core import envelope as envelopes
from arqond.core import metrics, payload
from arqond.core.auth import AuthError, authenticate
from arqond.core.bus import Bus
from arqond.core.clients import CLOSE_SLOW_CONSUMER, Client, identity_from_query
from arqond.core.envelope import EnvelopeError, now_iso
from arqond.core.errors import ErrorCode
from arqond.core.metrics import MetricSource, Sample, counter, gauge
from arqond.core.position import parse_position, position_text
from arqond.core.principal import Principal
from arqond.core.protocol import error_frame
from arqond.core.quotas import QuotaExceeded
from arqond.core.replay import Replay
from arqond.core.router import WILDCARD, RoutingError, check_name, split_target
from arqond.core.webhooks import HOPS, HOPS_HEADER
from arqond.log import Throttle, log_event
from arqond.principals import PrincipalResolver
from arqond.transports import monitoring

log = logging.getLogger("arqond.http")

MAX_HEAD_BYTES = 16384
MAX_HEADERS = 64
HEAD_TOO_LARGE = f"request line and headers exceed {MAX_HEAD_BYTES} bytes"
IDLE_TIMEOUT = 30.0
READ_CHUNK = 65536
PUBLISH_TYPES = ("message", "event")
# Bus error codes as HTTP statuses, for /v1/publish refusals.
ERROR_STATUS = {ErrorCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
                ErrorCode.TARGET_NOT_FOUND: HTTPStatus.NOT_FOUND,
                ErrorCode.AUTHORIZATION_ERROR: HTTPStatus.FORBIDDEN}
SERVER_HEADER = f"arqond/{__version__}".encode()
EVENT_STREAM = "text/event-stream"
# What a resumed /v1/stream says in its head (and, as server-sent events, in its first event).
RESUME_HEADERS = (("X-Resume-Recovered", "recovered"), ("X-Resume-Reason", "reason"),
                  ("X-Resume-Epoch", "epoch"), ("X-Resume-Earliest-Seq", "earliest_seq"),
                  ("X-Resume-Last-Seq", "last_seq"))
API_KEY_HEADER = "x-api-key"   # ArqonBus's admin key header (h11 gives names lower-cased)
# ArqonBus's refusal of /admin/* without its key, word for word.
ADMIN_REFUSAL = "Valid X-API-Key required"
VARY_ACCEPT = (("Vary", "Accept"),)

StatusProvider = Callable[[], Mapping[str, Any]]


class HttpError(Exception):
    """Answered as ``{"error": <reason>, "details": <text>}`` with the given status."""

    def __init__(self, status: HTTPStatus, details: str, *,
                 headers: tuple[tuple[str, str], ...] = (), close: bool = False) -> None:
        super().__init__(details)
        self.status = status
        self.details = details
        self.headers = headers
        self.close = close


class Request:
    __slots__ = ("method", "path", "query", "headers", "body")

    def __init__(self, event: h11.Request, body: bytes) -> None:
        if event.http_version not in (b"1.0", b"1.1"):  # h11 takes any digit.digit
            raise HttpError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                            f"HTTP/{event.http_version.decode()} is not supported; speak "
                            "HTTP/1.1", close=True)
        target = event.target.decode("ascii", "replace")
        try:
            if "://" in target and not target.startswith("/"):  # absolute-form
                parts = urlsplit(target)
                self.path, query = parts.path, parts.query
            else:  # origin-form ("//x" is a path, not a host), "*", authority-form
                self.path, _, query = target.partition("?")
            # Strict: two different bytes that are not UTF-8 must not name the same room.
            self.query = dict(parse_qsl(query, keep_blank_values=True, errors="strict"))
        except ValueError as exc:  # "http://[x/": h11 takes any visible bytes as a target
            raise HttpError(HTTPStatus.BAD_REQUEST, f"malformed request target: {exc}") \
                from None
        self.method = event.method.decode("ascii", "replace")
        self.headers = {name.decode("latin-1"): value.decode("latin-1")
                        for name, value in event.headers}
        self.body = body

    def identity(self) -> dict[str, str]:
        """Identity query parameters; ``type`` is the envelope type here, so only client_type."""
        return identity_from_query({k: v for k, v in self.query.items() if k != "type"})


class Exchange:
    """One connection: its h11 state machine and its stream writer."""

    __slots__ = ("conn", "reader", "writer", "host", "peer", "head", "deadline", "status")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.host = peer[0] if isinstance(peer, tuple) else "unix"
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "unix")
        self.head = False  # the request being answered is a HEAD: headers only
        self.deadline = 0.0  # loop time by which the request being read must be complete
        self.status = 0      # of the response sent to the request being answered (0: none)

    def write(self, *events: Any) -> None:
        for event in events:
            data = self.conn.send(event)
            if data:
                self.writer.write(data)

    async def next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            remaining = self.deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise asyncio.TimeoutError
            data = await asyncio.wait_for(self.reader.read(READ_CHUNK), remaining)
            self.conn.receive_data(data)

    @property
    def partial(self) -> bool:
        """Whether part of a request has come (a slow sender), not merely nothing (an idle
        keep-alive connection)."""
        return bool(self.conn.trailing_data[0]) or self.conn.their_state is h11.SEND_BODY


def ndjson_line(frame: bytes) -> bytes:
    return frame + b"\n"


def sse_event(frame: bytes) -> bytes:
    return b"data: " + frame + b"\n\n"


def sse_event_with_id(room: str, channel: str) -> Callable[[bytes], bytes]:
    """Server-sent events of one channel: each message of its stream with ``id: SEQ:EPOCH``,
    so an EventSource that reconnects sends the last one as Last-Event-ID and resumes after
    it. A frame that is not in the stream (to the whole room, say) has no id, and leaves the
    client's last one as it was."""
    def event(frame: bytes) -> bytes:
        env = orjson.loads(frame)
        metadata = env.get("metadata") or {}
        seq, epoch = metadata.get("seq"), metadata.get("epoch")
        if (env.get("room"), env.get("channel")) != (room, channel) or \
                not isinstance(seq, int) or not isinstance(epoch, str):
            return sse_event(frame)
        return f"id: {position_text(seq, epoch)}\n".encode() + sse_event(frame)
    return event


class StreamSink:
    """A stream response as a bus client's sink: each frame written as one NDJSON line or
    one server-sent event (``shape``), without waiting, bounded."""

    __slots__ = ("exchange", "limit", "adapter", "open", "shape")

    def __init__(self, exchange: Exchange, limit: int, adapter: "HttpAdapter",
                 shape: Callable[[bytes], bytes] = ndjson_line) -> None:
        self.exchange = exchange
        self.limit = limit
        self.adapter = adapter
        self.open = True
        self.shape = shape

    def send(self, frame: bytes) -> bool:
        transport = self.exchange.writer.transport
        if not self.open or transport.is_closing():
            return True  # going away already: the adapter detaches it when the read ends
        if transport.get_write_buffer_size() > self.limit:
            return False
        self.exchange.write(h11.Data(data=self.shape(frame)))
        return True

    def buffered(self) -> int:
        return self.exchange.writer.transport.get_write_buffer_size()

    def close(self, code: int, reason: str) -> None:
        if not self.open:
            return
        self.open = False
        if code == CLOSE_SLOW_CONSUMER:
            # Its buffer is full: ending the chunked body politely would only queue more.
            self.adapter.streams_cut_total += 1
            self.exchange.writer.transport.abort()
        else:
            self.exchange.write(h11.EndOfMessage())
            self.exchange.writer.close()


def resume_headers(resume: dict[str, Any] | None) -> list[tuple[str, str]]:
    """What a resumed stream's head says of it: recovered or not, why not, and the stream's
    epoch, earliest and last seq."""
    if resume is None:
        return []
    return [(name, str(resume[key]).lower() if key == "recovered" else str(resume[key]))
            for name, key in RESUME_HEADERS if resume[key] is not None]


def health(state: str) -> tuple[HTTPStatus, dict[str, Any]]:
    """/health: 200 only while the daemon is ready ("starting" and "stopping" are 503)."""
    body = {"status": "healthy" if state == "ready" else state, "service": SERVICE_NAME,
            "version": __version__, "timestamp": now_iso()}
    return (HTTPStatus.OK if state == "ready" else HTTPStatus.SERVICE_UNAVAILABLE), body


class HttpAdapter:
    name = "http"

    def __init__(self, bus: Bus, config: Config, sock: socket.socket, *,
                 principals: PrincipalResolver, state: Callable[[], str],
                 listeners: Mapping[str, str]) -> None:
        self.bus = bus
        self.config = config
        self.principals = principals
        self.max_body = config.server.max_message_size
        self.sock = sock
        self.state = state
        self.listeners = listeners
        # Other parts add /status sections and /metrics samples here.
        self.status_providers: list[StatusProvider] = []
        # What stopped working or gave up a promise, one line each: /health says "degraded".
        self.fault_sources: list[Callable[[], list[str]]] = []
        self.metric_sources: list[MetricSource] = [lambda: metrics.bus_samples(bus)]
        self.server: asyncio.Server | None = None
        self.exchanges: dict[Exchange, StreamSink | None] = {}
        self.routes: dict[str, tuple[str, Callable[[Exchange, Request], Any]]] = {
            "/health": ("GET", self._health), "/version": ("GET", self._version),
            "/status": ("GET", self._status), "/metrics": ("GET", self._metrics),
            "/v1/history": ("GET", self._history), "/v1/stream": ("GET", self._stream),
            "/v1/publish": ("POST", self._publish)}
        self.requests_by_status: dict[int, int] = {}
        self.connections_total = 0
        self.refused_total = 0
        self.streams_cut_total = 0
        self.published_total = 0
        self.timeouts_total = 0
        self.timeout_lines = Throttle()
        # ArqonBus's endpoints: its request statistics in /status and /metrics, the views
        # app.py provides ("storage", "telemetry_events", "telemetry_stats") and the acts
        # /admin/* asks for ("shutdown", "restart").
        self.routes.update({
            "/metrics/prometheus": ("GET", self._metrics_prometheus),
            "/system/info": ("GET", self._system_info),
            "/system/config": ("GET", self._system_config),
            "/storage/stats": ("GET", self._storage_stats),
            "/telemetry/events": ("GET", self._telemetry_events),
            "/telemetry/stats": ("GET", self._telemetry_stats),
            "/admin/shutdown": ("POST", self._admin_shutdown),
            "/admin/restart": ("POST", self._admin_restart)})
        self.request_stats = monitoring.RequestStats()
        self.reports: dict[str, Callable[[], dict[str, Any]]] = {}
        self.admin_acts: dict[str, Callable[[], None]] = {}
        self.status_providers.append(self._arqonbus_status)
        self.metric_sources.append(self._request_samples)
        self.admin_refused_total = 0
        self.admin_refusal_lines = Throttle()

    def reload(self, config: Config) -> None:
        self.config = config

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, sock=self.sock,
                                                 limit=READ_CHUNK)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for exchange, stream in list(self.exchanges.items()):
            if stream is not None:
                stream.close(1001, "going away")
            else:
                exchange.writer.close()
        if self.server is not None:
            await self.server.wait_closed()

    # -- connections -----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        exchange = Exchange(reader, writer)
        over_limit = len(self.exchanges) >= self.config.server.max_connections
        self.exchanges[exchange] = None
        self.connections_total += 1
        try:
            while await self._one_request(exchange, over_limit):
                exchange.conn.start_next_cycle()
        except asyncio.TimeoutError:
            if exchange.partial:
                self.timeouts_total += 1
                due, count = self.timeout_lines("slow")
                if due:
                    log_event(log, logging.WARNING, "limit_reached",
                              f"HTTP request from {exchange.peer} not complete within "
                              f"{IDLE_TIMEOUT:g} s; connection closed ({count} so far)",
                              peer=exchange.peer)
        except ConnectionError:
            pass
        finally:
            self.exchanges.pop(exchange, None)
            writer.close()

    async def _one_request(self, exchange: Exchange, over_limit: bool) -> bool:
        """Read and answer one request; True when the connection may carry another."""
        conn = exchange.conn
        request = None
        try:
            request = await self._read_request(exchange)
            if request is None:
                return False
            if over_limit:
                self.refused_total += 1
                raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "connection limit reached",
                                close=True)
            await self._dispatch(exchange, request)
        except h11.RemoteProtocolError as exc:
            if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                return False
            status = HTTPStatus(exc.error_status_hint)
            self._error(exchange, HttpError(status, HEAD_TOO_LARGE if status == 431
                                            else f"malformed request: {exc}", close=True))
        except HttpError as exc:
            if conn.our_state is not h11.SEND_RESPONSE:
                return False
            self._error(exchange, exc)
        except (asyncio.TimeoutError, ConnectionError):
            raise
        except Exception:  # noqa: BLE001 - a 500 for this request, never a dropped server
            self.bus.internal_error(self.name, f"{request.method} {request.path}"
                                    if request is not None else "a request head")
            if conn.our_state is not h11.SEND_RESPONSE:
                return False
            self._error(exchange, HttpError(HTTPStatus.INTERNAL_SERVER_ERROR,
                                            "internal error; see the arqond log", close=True))
        await asyncio.wait_for(exchange.writer.drain(), IDLE_TIMEOUT)
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def _read_request(self, exchange: Exchange) -> Request | None:
        exchange.head = False
        exchange.deadline = asyncio.get_running_loop().time() + IDLE_TIMEOUT
        event = await exchange.next_event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        exchange.head = event.method == b"HEAD"
        if len(event.headers) > MAX_HEADERS:
            raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                            f"more than {MAX_HEADERS} header fields", close=True)
        # h11 bounds only heads still incomplete in its buffer; a complete one read in a
        # single chunk is measured here.
        if len(event.method) + len(event.target) + sum(
                len(name) + len(value) + 4 for name, value in event.headers) > MAX_HEAD_BYTES:
            raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, HEAD_TOO_LARGE,
                            close=True)
        limit = self.max_body
        length = dict(event.headers).get(b"content-length")
        if length is not None and int(length) > limit:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"body of {int(length)} bytes exceeds the limit of {limit} bytes "
                            "(server.max_message_size)", close=True)
        if exchange.conn.they_are_waiting_for_100_continue:
            exchange.write(h11.InformationalResponse(status_code=100, headers=[]))
        body = bytearray()
        while True:
            part = await exchange.next_event()
            if isinstance(part, h11.EndOfMessage):
                return Request(event, bytes(body))
            if isinstance(part, h11.ConnectionClosed):
                return None
            body += part.data
            if len(body) > limit:
                raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                f"body exceeds the limit of {limit} bytes "
                                "(server.max_message_size)", close=True)

    async def _dispatch(self, exchange: Exchange, request: Request) -> None:
        route = self.routes.get(request.path)
        if route is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no endpoint {request.path}; try "
                            + ", ".join(f"{m} {p}" for p, (m, _) in self.routes.items()))
        method, handler = route
        began = time.perf_counter()
        exchange.status = 0
        error = True   # unless the handler ends without an exception and without a 4xx/5xx
        try:
            allowed = ("GET", "HEAD") if method == "GET" else (method,)
            if request.method not in allowed:
                raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED,
                                f"{request.path} accepts {' and '.join(allowed)} only, "
                                f"not {request.method}",
                                headers=(("Allow", ", ".join(allowed)),))
            result = handler(exchange, request)
            if asyncio.iscoroutine(result):
                await result
            error = exchange.status >= 400
        finally:
            # A /v1/stream's time is how long it streamed.
            self.request_stats.record(request.path, (time.perf_counter() - began) * 1000,
                                      error)

    # -- responses -------------------------------------------------------------------------

    def _respond(self, exchange: Exchange, status: HTTPStatus, body: bytes,
                 content_type: str = "application/json",
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.requests_by_status[status.value] = self.requests_by_status.get(status.value, 0) + 1
        exchange.status = status.value
        response = h11.Response(status_code=status.value, reason=status.phrase.encode(),
                                headers=[("Content-Type", content_type),
                                         ("Content-Length", str(len(body))),
                                         ("Server", SERVER_HEADER), *headers])
        if exchange.head:  # the length GET would send, and no body (RFC 9110 9.3.2)
            exchange.write(response, h11.EndOfMessage())
        else:
            exchange.write(response, h11.Data(data=body), h11.EndOfMessage())

    def _json(self, exchange: Exchange, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._respond(exchange, status, orjson.dumps(value))

    def _error(self, exchange: Exchange, error: HttpError) -> None:
        headers = error.headers + ((("Connection", "close"),) if error.close else ())
        self._respond(exchange, error.status, orjson.dumps(
            {"error": error.status.phrase, "details": error.details,
             "status": error.status.value}), headers=headers)

    def _principal(self, exchange: Exchange, request: Request) -> Principal:
        """Who sends this request: a verified token's subject when auth is on (else 401),
        else as any TCP peer (arqond/principals.py)."""
        auth = self.config.auth
        claims: dict[str, Any] = {}
        if auth.enabled:
            try:
                claims = authenticate(request.headers, request.query, auth.jwt_secret)
            except AuthError as exc:
                log_event(log, logging.WARNING, "auth_refused",
                          f"HTTP {request.method} {request.path} refused: {exc}")
                raise HttpError(HTTPStatus.UNAUTHORIZED, str(exc),
                                headers=(("WWW-Authenticate", 'Bearer realm="arqonbus"'),)) \
                    from None
        sock = exchange.writer.get_extra_info("socket")
        return self.principals.tcp(sock, claims, exchange.host)

    # -- monitoring endpoints --------------------------------------------------------------

    def _health(self, exchange: Exchange, request: Request) -> None:
        status, body = health(self.state())
        body["uptime_seconds"] = round(time.time() - self.bus.started, 3)
        faults = [fault for source in self.fault_sources for fault in source()]
        if faults:
            # Serving still (200), but a part stopped or gave up a promise: say which.
            body.update(status="degraded" if status == HTTPStatus.OK else body["status"],
                        faults=faults)
        self._json(exchange, body, status)

    def _version(self, exchange: Exchange, request: Request) -> None:
        self._json(exchange, {"service": SERVICE_NAME, "version": __version__,
                              "protocol": PROTOCOL_VERSION, "timestamp": now_iso()})

    def _status(self, exchange: Exchange, request: Request) -> None:
        body = self.bus.snapshot()
        state = self.state()
        body.update(status="healthy" if state == "ready" else state, timestamp=now_iso(),
                    listeners=dict(self.listeners),
                    http={"connections": len(self.exchanges),
                          "streams": self._stream_count()})
        for provider in self.status_providers:
            body.update(provider())
        if body["status"] == "healthy" and any(source() for source in self.fault_sources):
            body["status"] = "degraded"  # as /health says, and ArqonBus when storage fails
        self._json(exchange, body)

    def _metrics(self, exchange: Exchange, request: Request) -> None:
        """Prometheus text, or ArqonBus's JSON to a client that ranks JSON above text."""
        if not monitoring.prefers_json(request.headers.get("accept")):
            self._prometheus(exchange, VARY_ACCEPT)
            return
        bus, stats = self.bus, self.bus.stats
        body = monitoring.metrics_json(
            self._samples(), started=bus.started, active_connections=len(bus.clients),
            messages=stats.messages_total, commands=stats.commands_total,
            errors=stats.errors_total, http_server=self._request_report())
        self._respond(exchange, HTTPStatus.OK, orjson.dumps(body), headers=VARY_ACCEPT)

    def _prometheus(self, exchange: Exchange,
                    headers: tuple[tuple[str, str], ...] = ()) -> None:
        self._respond(exchange, HTTPStatus.OK, metrics.render(self._samples()).encode(),
                      metrics.CONTENT_TYPE, headers=headers)

    def _samples(self) -> list[Sample]:
        return [sample for source in self.metric_sources for sample in source()]

    # -- ArqonBus's monitoring endpoints -------------------------------------------------------

    def _request_report(self) -> dict[str, Any]:
        return self.request_stats.report(round(time.time() - self.bus.started, 3))

    def _arqonbus_status(self) -> dict[str, Any]:
        """ArqonBus's /status objects: which parts serve, and the request statistics."""
        return {"endpoints": {"http": True, "websocket": True, "storage": True,
                              "telemetry": True},
                "requests": self._request_report()}

    def _metrics_prometheus(self, exchange: Exchange, request: Request) -> None:
        self._prometheus(exchange)

    def _system_info(self, exchange: Exchange, request: Request) -> None:
        self._json(exchange, monitoring.system_info(self.config, dict(self.listeners)))

    def _system_config(self, exchange: Exchange, request: Request) -> None:
        self._json(exchange, monitoring.system_config(self.config, dict(self.listeners)))

    def _storage_stats(self, exchange: Exchange, request: Request) -> None:
        self._json(exchange, self.reports["storage"]())

    def _telemetry_events(self, exchange: Exchange, request: Request) -> None:
        self._json(exchange, self.reports["telemetry_events"]())

    def _telemetry_stats(self, exchange: Exchange, request: Request) -> None:
        self._json(exchange, self.reports["telemetry_stats"]())

    async def _admin_shutdown(self, exchange: Exchange, request: Request) -> None:
        await self._admin_act(exchange, request, "shutdown")

    async def _admin_restart(self, exchange: Exchange, request: Request) -> None:
        await self._admin_act(exchange, request, "restart")

    async def _admin_act(self, exchange: Exchange, request: Request, act: str) -> None:
        """ArqonBus's answer, then the act once the answer is on its way (stopping closes
        this connection)."""
        principal, means = self._admin(exchange, request)
        self.bus.audit(principal, f"{act} requested over HTTP (POST {request.path}, by "
                       f"{means}) from {exchange.peer}", peer=exchange.peer)
        self._json(exchange, {"status": f"{act}_initiated",
                              "message": f"Server {act} initiated"})
        await exchange.writer.drain()
        self.admin_acts[act]()

    def _admin(self, exchange: Exchange, request: Request) -> tuple[Principal, str]:
        """Who asks for /admin/*, and by what they may: http.admin_api_key in X-API-Key, or a
        verified token with role admin (auth.enabled). Anyone else gets ArqonBus's 401."""
        claims: dict[str, Any] = {}
        if self.config.auth.enabled:
            try:
                claims = authenticate(request.headers, request.query,
                                      self.config.auth.jwt_secret)
            except AuthError:
                pass  # no token, or a bad one: no admin by token, the key may still do
        principal = self.principals.tcp(exchange.writer.get_extra_info("socket"), claims,
                                        exchange.host)
        key = self.config.http.admin_api_key
        given = request.headers.get(API_KEY_HEADER)
        if key and given is not None and \
                hmac.compare_digest(given.encode("latin-1"), key.encode()):
            return principal, "the admin API key"
        if principal.admin:
            return principal, "an admin token"
        self.admin_refused_total += 1
        due, count = self.admin_refusal_lines("admin")
        if due:
            why = "a wrong X-API-Key" if given is not None and key else \
                "an X-API-Key, but http.admin_api_key is not set" if given is not None else \
                "no X-API-Key and no admin token"
            log_event(log, logging.WARNING, "auth_refused",
                      f"HTTP {request.method} {request.path} from {exchange.peer} refused: "
                      f"{why} ({count} refused so far)", peer=exchange.peer,
                      **principal.log_fields())
        raise HttpError(HTTPStatus.UNAUTHORIZED, ADMIN_REFUSAL)

    def _request_samples(self) -> list[Sample]:
        by_endpoint = sorted(self.request_stats.by_endpoint.items())
        return [*(counter("arqonbus_http_requests_total", "HTTP requests, by endpoint (the "
                          "routes only; other paths are 404s).", entry["count"], endpoint=path)
                  for path, entry in by_endpoint),
                *(counter("arqonbus_http_errors_total", "HTTP requests answered 4xx or 5xx, "
                          "or failed, by endpoint.", entry["errors"], endpoint=path)
                  for path, entry in by_endpoint),
                counter("arqonbus_http_admin_refused_total", "/admin/* requests refused "
                        "(no valid X-API-Key and no admin token).", self.admin_refused_total)]

    def _stream_count(self) -> int:
        return sum(1 for stream in self.exchanges.values() if stream is not None)

    def samples(self) -> list[Sample]:
        out = [counter("arqonbus_http_connections_total", "HTTP connections accepted.",
                       self.connections_total),
               counter("arqonbus_http_refused_total",
                       "HTTP requests refused because server.max_connections was reached.",
                       self.refused_total),
               counter("arqonbus_http_published_total", "Messages accepted by /v1/publish.",
                       self.published_total),
               counter("arqonbus_http_stream_cutoffs_total",
                       "/v1/stream clients cut off because their buffer was full.",
                       self.streams_cut_total),
               counter("arqonbus_http_timeouts_total",
                       "HTTP connections closed because a request was not complete within "
                       f"{IDLE_TIMEOUT:g} s of reading it began.", self.timeouts_total),
               gauge("arqonbus_http_streams", "Open /v1/stream responses.",
                     self._stream_count())]
        out.extend(counter("arqonbus_http_responses_total", "HTTP responses sent, by status.",
                           count, code=str(code))
                   for code, count in sorted(self.requests_by_status.items()))
        return out

    # -- bus endpoints ---------------------------------------------------------------------

    def _target(self, request: Request, *, channel_required: bool,
                wildcard: bool = False) -> tuple[str, str | None]:
        room, channel = split_target(request.query.get("room"), request.query.get("channel"))
        if room is None or (channel_required and channel is None):
            raise HttpError(HTTPStatus.BAD_REQUEST, "query parameters room and channel are "
                            "required (room=R&channel=C, or room=R:C)" if channel_required
                            else "query parameter room is required (channel is optional)")
        try:
            check_name("room", room, wildcard=wildcard)
            if channel is not None:
                check_name("channel", channel, wildcard=wildcard)
        except RoutingError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, exc.message) from None
        return room, channel

    def _history(self, exchange: Exchange, request: Request) -> None:
        reader = Client(None, "http", self._principal(exchange, request), peer=exchange.peer)
        room, channel = self._target(request, channel_required=False)
        maximum = self.bus.settings.history_size
        raw_limit = request.query.get("limit", str(self.bus.settings.history_default_limit))
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not 0 < int(raw_limit) <= maximum:
            raise HttpError(HTTPStatus.BAD_REQUEST,
                            f"limit must be a whole number from 1 to {maximum}")
        limit = int(raw_limit)
        try:
            # An unknown name is a mistake worth a 404 here (the commands answer nothing).
            if channel is None:
                self.bus.router.require_room(room)
            else:
                self.bus.router.require_channel(room, channel)
            entries = self.bus.history_for(reader, room, channel)
        except RoutingError as exc:
            raise HttpError(ERROR_STATUS.get(exc.code, HTTPStatus.NOT_FOUND), exc.message) \
                from None
        kept = entries[-limit:]
        self._json(exchange, {"room": room, "channel": channel, "limit": limit,
                              "total": len(entries), "count": len(kept),
                              "messages": [orjson.Fragment(entry.frame) for entry in kept]})

    async def _stream(self, exchange: Exchange, request: Request) -> None:
        principal = self._principal(exchange, request)
        room, channel = self._target(request, channel_required=True, wildcard=True)
        assert channel is not None
        since = self._since(request)
        events = EVENT_STREAM in request.headers.get("accept", "")
        shape = ndjson_line if not events else sse_event if WILDCARD in (room, channel) \
            else sse_event_with_id(room, channel)
        bus = self.bus
        sink = StreamSink(exchange, self.config.server.client_buffer_bytes, self, shape)
        try:
            client = bus.attach(sink, "http", principal, peer=exchange.peer, welcome=False,
                                join_default=False)
        except QuotaExceeded as exc:
            raise HttpError(HTTPStatus.TOO_MANY_REQUESTS, str(exc)) from None
        problems = client.identify(request.identity())
        resume: dict[str, Any] | None = None
        replay: Replay | None = None
        try:
            if problems:
                raise HttpError(HTTPStatus.BAD_REQUEST, "; ".join(problems))
            if since is None:
                bus.join(client, room, channel)
            else:
                resume, replay = self._resume(client, room, channel, *since)
        except RoutingError as exc:
            bus.detach(client, reason="refused")
            raise HttpError(ERROR_STATUS.get(exc.code, HTTPStatus.BAD_REQUEST), exc.message) \
                from None
        except HttpError:
            bus.detach(client, reason="refused")
            raise
        self.requests_by_status[200] = self.requests_by_status.get(200, 0) + 1
        head = h11.Response(status_code=200, reason=b"OK", headers=[
            ("Content-Type", EVENT_STREAM if events else "application/x-ndjson"),
            ("Cache-Control", "no-cache"), ("X-Client-Id", client.id), ("Server", SERVER_HEADER),
            *resume_headers(resume)])
        if exchange.head:  # the same checks and headers as GET, then no stream
            bus.detach(client, reason="HEAD request")   # and its replay with it
            exchange.write(head, h11.EndOfMessage())
            return
        self.exchanges[exchange] = sink
        exchange.write(head)
        if replay is not None:
            if events:  # an EventSource cannot read the head: the first event says it too
                exchange.write(h11.Data(data=b"event: resume\ndata: " + orjson.dumps(resume)
                                        + b"\n\n"))
            replay.step()
        try:
            # Nothing more is expected from the client: read until it goes away.
            while sink.open and await exchange.reader.read(READ_CHUNK):
                pass
        finally:
            sink.open = False
            bus.detach(client, reason="stream closed")

    @staticmethod
    def _since(request: Request) -> tuple[int, str | None] | None:
        """Where a stream resumes: after the message of Last-Event-ID (what an EventSource
        sends when it reconnects, so it wins), else of the since and epoch parameters."""
        last_event = request.headers.get("last-event-id", "")
        given = request.query.get("since")
        epoch = request.query.get("epoch")
        if epoch is not None and given is None:
            raise HttpError(HTTPStatus.BAD_REQUEST, "epoch goes with since: since=SEQ&epoch="
                            "EPOCH of the last message seen")
        try:
            if last_event:
                return parse_position(last_event)
            if given is not None:
                return parse_position(given if epoch is None else f"{given}:{epoch}")
        except ValueError as exc:
            where = "Last-Event-ID" if last_event else "since and epoch"
            raise HttpError(HTTPStatus.BAD_REQUEST, f"{where}: {exc}") from None
        return None

    def _resume(self, client: Client, room: str, channel: str, seq: int,
                epoch: str | None) -> tuple[dict[str, Any], Replay]:
        """Join as one that saw message ``seq`` of ``epoch``, as join_channel's since does;
        without an epoch, of the stream's epoch now, so the channel must exist."""
        if epoch is None and WILDCARD not in (room, channel):
            found = self.bus.router.channel(room, channel)
            if found is None:
                raise HttpError(HTTPStatus.NOT_FOUND, f"channel {room}:{channel} does not "
                                "exist, so it has no epoch to resume in; give the epoch")
            epoch = found.stream.epoch
        _, resume, replay = self.bus.resume(client, room, channel, seq, epoch or "")
        return resume, replay

    async def _publish(self, exchange: Exchange, request: Request) -> None:
        principal = self._principal(exchange, request)
        room, channel = self._target(request, channel_required=False)
        kind = request.query.get("type", "message")
        if kind not in PUBLISH_TYPES:
            raise HttpError(HTTPStatus.BAD_REQUEST,
                            f"type must be one of {', '.join(PUBLISH_TYPES)}, not {kind!r}")
        bus = self.bus
        try:
            body = payload.loads(request.body, bus.settings.max_json_depth)
        except payload.PayloadError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"body is {exc.message} (it is the message "
                            "payload)" if exc.code == ErrorCode.INVALID_JSON
                            else f"body refused: {exc.message}") from None
        # The request's sender: a client of the bus's rules, but not a connection.
        sender = Client(None, "http", principal, peer=exchange.peer)
        problems = sender.identify(request.identity())
        try:
            if problems:
                raise EnvelopeError(ErrorCode.VALIDATION_ERROR, "; ".join(problems), problems)
            env = envelopes.validate({"type": kind, "room": room, "channel": channel,
                                      "payload": body})
        except EnvelopeError as exc:
            reply = error_frame(exc.code, exc.message, errors=exc.errors)
        else:
            hops = request.headers.get(HOPS_HEADER.lower(), "")
            if hops.isascii() and hops.isdigit():  # came through a webhook: counted, not looped
                env[HOPS] = int(hops)
            answered: asyncio.Future[dict[str, Any]] = \
                asyncio.get_running_loop().create_future()
            bus.publish_as(sender, env, answered.set_result)
            reply = await answered      # the ack comes once the message is stored
        if reply["type"] == "message_response":
            self.published_total += 1
            status = HTTPStatus.OK
        else:
            status = ERROR_STATUS.get(reply.get("error_code"), HTTPStatus.BAD_REQUEST)
        self._respond(exchange, status, bus.encode(reply))
