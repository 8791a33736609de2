"""Requests for the HTTP port: every endpoint with wrong methods, unknown paths, heads h11
refuses or arqond bounds, publish bodies (the JSON corpus), and bad query parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Iterator

import orjson

from tests.corpus.bus import DEEP, NAME_RULE
from tests.corpus.json_text import json_cases

MAX_BODY = 65536   # the corpus daemon's server.max_message_size
GET_ROUTES = ("/health", "/version", "/status", "/metrics", "/v1/history", "/v1/stream",
              # ArqonBus's monitoring endpoints
              "/metrics/prometheus", "/system/info", "/system/config", "/storage/stats",
              "/telemetry/events", "/telemetry/stats")
POST_ROUTES = ("/v1/publish", "/admin/shutdown", "/admin/restart")
# In the order the daemon lists them: its own, then ArqonBus's.
ROUTES = ", ".join([*(f"GET {path}" for path in GET_ROUTES[:6]), "POST /v1/publish",
                    *(f"GET {path}" for path in GET_ROUTES[6:]),
                    *(f"POST {path}" for path in POST_ROUTES[1:])])
SENTINEL = "/v1/publish?room=corpus&channel=sentinel"
NO_ROOM = "query parameter room is required (channel is optional)"
NO_LIMIT = "limit must be a whole number from 1 to 500"


@dataclass(frozen=True)
class Answer:
    """The response: status, and the JSON error's details (``{"error": reason, "details":
    ..., "status": code}``), or ``envelope`` (code, text) for a bus refusal of a publish, or
    ``published`` for an accepted one (the sentinel receives it). ``closes``: the server ends
    the connection after it."""

    status: int
    details: str | None = None
    envelope: tuple[str, str] | None = None
    published: Any = field(default=None)
    closes: bool = False
    allow: str | None = None
    json_syntax: bool = False   # details: the reference decoder's words about the body


@dataclass(frozen=True)
class HttpCase:
    name: str
    request: bytes
    expect: Answer
    head: bool = False   # a HEAD request: no body comes back


def request(method: str, target: str, body: bytes | None = None,
            headers: tuple[str, ...] = (), version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {target} {version}", "Host: corpus", *headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def methods() -> Iterator[HttpCase]:
    for path in (*GET_ROUTES, *POST_ROUTES):
        allowed = "POST" if path in POST_ROUTES else "GET, HEAD"
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO", "get",
                       "GET", "HEAD"):
            if method in allowed.split(", "):
                continue
            words = " and ".join(allowed.split(", "))
            yield HttpCase(f"{method} {path}", request(method, path),
                           Answer(405, f"{path} accepts {words} only, not {method}",
                                  allow=allowed), head=method == "HEAD")


def paths() -> Iterator[HttpCase]:
    for path in ("/", "/v1", "/health/", "/HEALTH", "/v1/publish/", "//health", "//[x",
                 "/%2e%2e/health", "/health;x", "/v1/history/..", "/" + "a" * 1000, "x:443"):
        yield HttpCase(f"GET {path[:30]}", request("GET", path),
                       Answer(404, f"no endpoint {path}; try {ROUTES}"))
    yield HttpCase("OPTIONS *", request("OPTIONS", "*"),
                   Answer(404, f"no endpoint *; try {ROUTES}"))
    yield HttpCase("an absolute target names its path", request("GET", "http://corpus/nope"),
                   Answer(404, f"no endpoint /nope; try {ROUTES}"))


def malformed(text: str) -> str:
    return f"malformed request: {text}"


def illegal(what: str, line: bytes) -> str:
    """h11's words for a line it cannot parse (it quotes the line as a bytearray)."""
    return malformed(f"illegal {what}: {bytearray(line)!r}")


TLS_HELLO = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 50
# (name, raw request, status, details, whether the connection is closed after the answer):
# heads h11 refuses or arqond bounds close it (nothing after them can be trusted); a target
# arqond cannot read is refused, and the connection serves on.
BAD_HEADS = [
    ("request line of one word", b"GARBAGE\r\n\r\n", 400,
     illegal("request line", b"GARBAGE"), True),
    ("nothing before the blank line", b"\r\n\r\n", 400,
     malformed("no request line received"), True),
    ("a TLS ClientHello", TLS_HELLO + b"\r\n\r\n", 400, illegal("request line", TLS_HELLO),
     True),
    ("space in the target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400,
     illegal("request line", b"GET /a b HTTP/1.1"), True),
    ("NUL in the target", b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400,
     illegal("request line", b"GET /\x00 HTTP/1.1"), True),
    ("raw UTF-8 in the target", "GET /héalth HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400,
     illegal("request line", "GET /héalth HTTP/1.1".encode()), True),
    ("HTTP/2.0 request line", request("GET", "/health", version="HTTP/2.0"), 505,
     "HTTP/2.0 is not supported; speak HTTP/1.1", True),
    ("HTTP/1.2 request line", request("GET", "/health", version="HTTP/1.2"), 505,
     "HTTP/1.2 is not supported; speak HTTP/1.1", True),
    ("HTTP/1.1 without Host", b"GET /health HTTP/1.1\r\n\r\n", 400,
     malformed("Missing mandatory Host: header"), True),
    ("header without a colon", request("GET", "/health", headers=("NoColon",)), 400,
     illegal("header line", b"NoColon"), True),
    ("space before a header's colon", request("GET", "/health", headers=("X-A : a",)), 400,
     illegal("header line", b"X-A : a"), True),
    ("NUL in a header value", request("GET", "/health", headers=("X-A: a\x00b",)), 400,
     illegal("header line", b"X-A: a\x00b"), True),
    ("Content-Length not a number", request("POST", SENTINEL, headers=("Content-Length: abc",)),
     400, malformed("bad Content-Length"), True),
    ("Content-Length negative", request("POST", SENTINEL, headers=("Content-Length: -1",)),
     400, malformed("bad Content-Length"), True),
    ("two Content-Lengths that differ",
     request("POST", SENTINEL, headers=("Content-Length: 1", "Content-Length: 2")) + b"ab",
     400, malformed("conflicting Content-Length headers"), True),
    ("Transfer-Encoding gzip", request("POST", SENTINEL, headers=("Transfer-Encoding: gzip",)),
     501, malformed("Only Transfer-Encoding: chunked is supported"), True),
    ("chunk size not hex",
     request("POST", SENTINEL, headers=("Transfer-Encoding: chunked",)) + b"zz\r\n", 400,
     illegal("chunk header", b"zz\r\n"), True),
    ("a header line of 17000 bytes", request("GET", "/health", headers=("X-L: " + "a" * 17000,)),
     431, "request line and headers exceed 16384 bytes", True),
    ("65 header fields", request("GET", "/health", headers=tuple(
        f"X-{n}: v" for n in range(64))), 431, "more than 64 header fields", True),
    ("a body declared over server.max_message_size",
     request("POST", SENTINEL, headers=(f"Content-Length: {MAX_BODY + 1}",)), 413,
     f"body of {MAX_BODY + 1} bytes exceeds the limit of {MAX_BODY} bytes "
     "(server.max_message_size)", True),
    ("a chunked body over server.max_message_size",
     request("POST", SENTINEL, headers=("Transfer-Encoding: chunked",)) +
     b"%x\r\n" % (MAX_BODY + 1) + b"x" * (MAX_BODY + 1) + b"\r\n0\r\n\r\n", 413,
     f"body exceeds the limit of {MAX_BODY} bytes (server.max_message_size)", True),
    ("an absolute target urlsplit cannot read", request("GET", "http://[x/health"), 400,
     "malformed request target: Invalid IPv6 URL", False),
    ("a query that is not UTF-8", request("GET", "/v1/history?room=%FF"), 400,
     "malformed request target: 'utf-8' codec can't decode byte 0xff in position 0: invalid "
     "start byte", False),
]


def heads() -> Iterator[HttpCase]:
    for name, raw, status, details, closes in BAD_HEADS:
        yield HttpCase(name, raw, Answer(status, details, closes=closes))


def bodies(max_depth: int) -> Iterator[HttpCase]:
    deep = DEEP.format(max_depth=max_depth)
    for case in json_cases(max_depth):
        if case.verdict == "invalid":
            expect = Answer(400, json_syntax=True)
        elif case.depth > max_depth:
            expect = Answer(400, f"body refused: {deep}")
        else:
            value = orjson.loads(case.text)
            expect = Answer(400, envelope=("VALIDATION_ERROR", "payload is required for a "
                                           "message")) if value is None or value == "" \
                else Answer(200, published=value)
        yield HttpCase(f"body: {case.name}", request("POST", SENTINEL, case.text), expect)
    at_bound = b'{"s":"' + b"x" * (MAX_BODY - 8) + b'"}'
    yield HttpCase("a body of exactly server.max_message_size bytes",
                   request("POST", SENTINEL, at_bound), Answer(200, published=orjson.loads(
                       at_bound)))
    yield HttpCase("a chunked body in three chunks", request(
        "POST", SENTINEL, headers=("Transfer-Encoding: chunked",)) +
        b"3\r\n{\"a\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n", Answer(200, published={"a": 1}))
    yield HttpCase("Expect: 100-continue", request("POST", SENTINEL, b'{"c":1}',
                                                   headers=("Expect: 100-continue",)),
                   Answer(200, published={"c": 1}))


def queries() -> Iterator[HttpCase]:
    body = b'{"q":1}'
    publish = [
        ("/v1/publish?channel=sentinel", Answer(400, NO_ROOM)),
        ("/v1/publish", Answer(400, NO_ROOM)),
        ("/v1/publish?room=", Answer(400, NO_ROOM)),
        ("/v1/publish?room=a%00b", Answer(400, f"invalid room name 'a\\x00b': {NAME_RULE}")),
        ("/v1/publish?room=corpus&channel=*",
         Answer(400, f"invalid channel name '*': {NAME_RULE}")),
        ("/v1/publish?room=corpus&channel=" + "x" * 129,
         Answer(400, f"invalid channel name {'x' * 129!r}: {NAME_RULE}")),
        ("/v1/publish?room=corpus:sentinel&type=command",
         Answer(400, "type must be one of message, event, not 'command'")),
        ("/v1/publish?room=corpus:sentinel&type=EVENT",
         Answer(400, "type must be one of message, event, not 'EVENT'")),
        ("/v1/publish?room=corpus:sentinel&client_type=",
         Answer(400, envelope=("VALIDATION_ERROR",
                               "type must be a string of 1 to 256 characters"))),
        ("/v1/publish?room=corpus:sentinel&screen_name=" + "s" * 257,
         Answer(400, envelope=("VALIDATION_ERROR",
                               "screen_name must be a string of 1 to 256 characters"))),
        ("/v1/publish?room=corpus:sentinel&type=event", Answer(200, published={"q": 1})),
        ("/v1/publish?room=corpus&channel=sentinel&unknown=1&room=corpus",
         Answer(200, published={"q": 1})),
    ]
    for target, expect in publish:
        yield HttpCase(f"POST {target[:60]}", request("POST", target, body), expect)
    yield HttpCase("a hop header that is no number is ignored",
                   request("POST", SENTINEL, body, headers=("X-Arqond-Hops: -1",)),
                   Answer(200, published={"q": 1}))
    reads = [
        ("/v1/history", Answer(400, NO_ROOM)),
        ("/v1/history?room=absent-room", Answer(404, "room absent-room does not exist")),
        ("/v1/history?room=science&channel=absent",
         Answer(404, "channel science:absent does not exist")),
        ("/v1/history?room=tab%09room", Answer(400, f"invalid room name 'tab\\troom': "
                                                    f"{NAME_RULE}")),
        ("/v1/stream?room=science", Answer(400, "query parameters room and channel are "
                                               "required (room=R&channel=C, or room=R:C)")),
        ("/v1/stream?room=a%0Ab&channel=c", Answer(400, f"invalid room name 'a\\nb': "
                                                        f"{NAME_RULE}")),
    ]
    for limit in ("0", "-1", "abc", "501", "1.5", "", "%EF%BC%91", "99999999999999999999",
                  "%205", "0x10", "%D9%A1"):
        reads.append((f"/v1/history?room=science&limit={limit}", Answer(400, NO_LIMIT)))
    for target, expect in reads:
        yield HttpCase(f"GET {target[:60]}", request("GET", target), expect)


def http_corpus(max_depth: int) -> list[HttpCase]:
    return [*methods(), *paths(), *heads(), *bodies(max_depth), *queries()]


def reason(status: int) -> str:
    return HTTPStatus(status).phrase
