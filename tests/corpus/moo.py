"""Lines for the MOO surfaces: a Zgent socket (JSON-RPC, one object per line), an inbox FIFO
and a narrative file (lines that are never refused: each becomes an envelope), and the names
of files in the log dir."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import orjson

from tests.corpus.bus import DEEP
from tests.corpus.json_text import json_cases
from tests.corpus.oracle import type_name

MAX_LINE = 4096     # moo.max_line_bytes and narrative.max_line_bytes of the corpus daemon
ZGENT = "corpus"
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, NOT_SERVING = \
    -32700, -32600, -32601, -32602, -32001
ARQON_METHODS = "arqon.ping, arqon.info, arqon.history, arqon.subscribe, arqon.recv, arqon.serve, " \
    "arqon.pane.capture, arqon.pane.send"
NO_METHOD = 'invalid request: no "method" (and not a bus envelope: no "type")'


@dataclass(frozen=True)
class RpcAnswer:
    """A JSON-RPC error ``code``/``message`` (None: the reference decoder's syntax error
    after "parse error: not valid JSON: "), or ``result_of`` a method that answers; None for
    both and ``silent``: a notification, answered with nothing."""

    id: Any = None
    code: int | None = None
    message: str | None = None
    silent: bool = False


@dataclass(frozen=True)
class SocketCase:
    name: str
    line: bytes
    expect: RpcAnswer


def rpc(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def socket_cases(max_depth: int) -> Iterator[SocketCase]:
    deep = DEEP.format(max_depth=max_depth)
    for case in json_cases(max_depth):
        if case.has_newline or len(case.text) > MAX_LINE:
            continue  # a line surface splits it; long lines are their own cases below
        if not case.text.strip():
            yield SocketCase(case.name, case.text, RpcAnswer(silent=True))
            continue
        if case.verdict == "invalid":
            expect = RpcAnswer(None, PARSE_ERROR, None)
        elif case.verdict == "deep":
            expect = RpcAnswer(None, INVALID_REQUEST, f"invalid request: {deep}")
        else:
            value = orjson.loads(case.text)
            expect = RpcAnswer(None, INVALID_REQUEST, NO_METHOD) if isinstance(value, dict) \
                else RpcAnswer(None, INVALID_REQUEST,
                               f"a line must be a JSON object, not {type_name(value)}")
        yield SocketCase(case.name, case.text, expect)
    for value in (5, "", None, [], {"a": 1}, True):
        yield SocketCase(f"method {orjson.dumps(value).decode()}", rpc(method=value, id=1),
                         RpcAnswer(1, INVALID_REQUEST,
                                   'invalid request: "method" must be a non-empty string'))
    for value in (True, 1.5, [1], {"a": 1}, 1e300):
        yield SocketCase(f"id {orjson.dumps(value).decode()}", rpc(method="arqon.ping", id=value),
                         RpcAnswer(None, INVALID_REQUEST,
                                   'invalid request: "id" must be a string, an integer or null'))
    for value in ("1.0", "2", 2.0, None, ""):
        yield SocketCase(f"jsonrpc {orjson.dumps(value).decode()}",
                         rpc(jsonrpc=value, method="arqon.ping", id=2),
                         RpcAnswer(2, INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"'))
    for value in (5, "p", True, None):
        yield SocketCase(f"params {orjson.dumps(value).decode()}",
                         rpc(method="arqon.ping", id=3, params=value),
                         RpcAnswer(3, INVALID_REQUEST,
                                   'invalid request: "params" must be an object or an array'))
    for method in ("arqon.history", "arqon.recv", "arqon.subscribe", "arqon.ping"):
        yield SocketCase(f"{method} with params an array",
                         rpc(method=method, id=4, params=[1]),
                         RpcAnswer(4, INVALID_PARAMS,
                                   '"params" must be an object for this method'))
    for value in (5, [], {"z": 1}):
        yield SocketCase(f"replyTo {orjson.dumps(value).decode()}",
                         rpc(method="work", id=5, replyTo=value),
                         RpcAnswer(5, INVALID_REQUEST,
                                   'invalid request: "replyTo" must be a Zgent name'))
    for keys in (["extra"], ["result", "error"], ["Method"]):
        yield SocketCase(f"unknown members {keys}",
                         rpc(method="arqon.ping", id=6, **{key: 1 for key in keys}),
                         RpcAnswer(6, INVALID_REQUEST, "invalid request: unknown member(s) " +
                                   ", ".join(repr(k) for k in sorted(keys))))
    yield SocketCase("every member wrong at once",
                     rpc(jsonrpc=1, method=2, id=[3], params=4, replyTo=5, more=6),
                     RpcAnswer(None, INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"; '
                               '"method" must be a non-empty string; "id" must be a string, an '
                               'integer or null; "params" must be an object or an array; '
                               '"replyTo" must be a Zgent name; unknown member(s) \'more\''))
    for method in ("arqon.nope", "arqon.", "arqon.PING", "arqon.ping "):
        yield SocketCase(f"method {method!r}", rpc(method=method, id=7),
                         RpcAnswer(7, METHOD_NOT_FOUND,
                                   f"method not found: {method} ({ARQON_METHODS})"))
    yield SocketCase("a method for a Zgent that serves nobody", rpc(method="work", id=8),
                     RpcAnswer(8, NOT_SERVING,
                               f"{ZGENT} is not serving: no handler attached (arqon serve "
                               f"{ZGENT})"))
    yield SocketCase("a reply from a peer that is no handler", rpc(id=9, result=1),
                     RpcAnswer(9, INVALID_REQUEST, NO_METHOD))
    yield SocketCase("a notification (no id) is answered with nothing",
                     rpc(method="arqon.ping"), RpcAnswer(silent=True))
    yield SocketCase("a notification that is wrong is still refused",
                     rpc(method="arqon.nope"), RpcAnswer(None, METHOD_NOT_FOUND,
                                                         f"method not found: arqon.nope "
                                                         f"({ARQON_METHODS})"))
    yield SocketCase("a line of max_line_bytes", rpc(method="arqon.ping", id="x" * (
        MAX_LINE - len(rpc(method="arqon.ping", id="")))), RpcAnswer(
            "x" * (MAX_LINE - len(rpc(method="arqon.ping", id=""))), None, None))
    for size in (MAX_LINE + 1, 10 * MAX_LINE):
        yield SocketCase(f"a line of {size} bytes", b"x" * size, RpcAnswer(
            None, INVALID_REQUEST, f"refused: line longer than {MAX_LINE} bytes"))
    yield SocketCase("a request ending in CR", rpc(method="arqon.ping", id=10) + b"\r",
                     RpcAnswer(10, None, None))


@dataclass(frozen=True)
class LineCase:
    """A line written to an inbox FIFO or a narrative file: ``payload`` is what it is
    published as (None: refused, nothing published), ``malformed`` why it is raw."""

    name: str
    line: bytes
    payload: Any
    malformed: str | None = None


def raw(line: bytes) -> dict[str, str]:
    return {"raw": line.decode("utf-8", "replace")}


def inbox_cases(max_depth: int) -> Iterator[LineCase]:
    """An inbox line is never refused for what it holds: JSON objects as they are, anything
    else as {"raw": line}."""
    for case in json_cases(max_depth):
        if case.has_newline or len(case.text) > MAX_LINE:
            continue
        value = orjson.loads(case.text) if case.verdict == "valid" else None
        if isinstance(value, dict):
            yield LineCase(case.name, case.text, value)
        else:
            yield LineCase(case.name, case.text, raw(case.text))
    for line in (b"plain words", b"a\rb", b"\x00", b"\xff\xfe bytes", b"\x1b[31mred\x1b[0m"):
        yield LineCase(f"line {line[:12]!r}", line, raw(line))
    yield LineCase("a line of max_line_bytes", b"y" * MAX_LINE, raw(b"y" * MAX_LINE))
    yield LineCase("a line one byte past max_line_bytes", b"y" * (MAX_LINE + 1), None)


SCHEMA = "breaks the message schema: "
JSON_SYNTAX = "not valid JSON: "  # and the reference decoder's words about the line


def good_line(**fields: Any) -> dict[str, Any]:
    return {"ts": "2026-01-01T00:00:00Z", "from": "someone", "type": "note",
            "content": "c", **fields}


def narrative_cases(max_depth: int) -> Iterator[LineCase]:
    deep = DEEP.format(max_depth=max_depth)
    for case in json_cases(max_depth):
        if case.has_newline or len(case.text) > MAX_LINE:
            continue
        if case.verdict == "invalid":
            malformed = JSON_SYNTAX
        elif case.verdict == "deep":
            malformed = deep
        else:
            value = orjson.loads(case.text)
            malformed = "not a JSON object" if not isinstance(value, dict) else \
                SCHEMA + "ts missing; from missing; type missing; content missing"
        if not case.text.strip():
            malformed = "empty line"
        yield LineCase(case.name, case.text, raw(case.text), malformed)
    fields = [
        ({"ts": 5}, "ts must be an ISO 8601 string"), ({"ts": "yesterday"},
                                                       "ts 'yesterday' is not ISO 8601"),
        ({"ts": None}, "ts missing"), ({"from": ""}, "from must be a non-empty string"),
        ({"from": 5}, "from must be a non-empty string"), ({"type": []},
                                                           "type must be a non-empty string"),
        ({"content": 5}, "content must be a string or an object"),
        ({"content": None}, "content missing"), ({"content": ["a"]},
                                                 "content must be a string or an object"),
        ({"tags": "t"}, "tags must be an array of strings"),
        ({"tags": [1]}, "tags must be an array of strings"),
        ({"queryId": 5}, "queryId must be a string"),
        ({"correlationId": []}, "correlationId must be a string"),
        ({"ttl": -1}, "ttl must be a number of seconds"),
        ({"ttl": True}, "ttl must be a number of seconds"),
        ({"ttl": "60"}, "ttl must be a number of seconds"),
    ]
    for changes, problem in fields:
        line = orjson.dumps(good_line(**changes))
        yield LineCase(f"schema {orjson.dumps(changes).decode()}", line, raw(line),
                       SCHEMA + problem)
    for changes in ({"tags": []}, {"ttl": 0}, {"content": {"any": ["thing"]}},
                    {"extra": "kept"}, {"ts": "2026-01-01"}):
        line = orjson.dumps(good_line(**changes))
        yield LineCase(f"schema {orjson.dumps(changes).decode()} accepted", line,
                       orjson.loads(line))
    for line in (b"  ", b"\t", b"\r"):
        yield LineCase(f"blank line {line!r}", line, raw(line), "empty line")
    long = b"z" * (MAX_LINE + 10)
    yield LineCase("a line past max_line_bytes, published cut", long, raw(long[:MAX_LINE]),
                   f"line of {len(long)} bytes is longer than max_line_bytes ({MAX_LINE}); "
                   "published cut to that length")


# (file name, where its lines go (room, channel) or None, and why it is refused (logged and
# counted) or None; a name that is no .jsonl file is passed over in silence)
FILE_NAMES = [
    ("corpus-events.jsonl", ("corpus", "events"), None),
    ("presence.jsonl", ("moo", "presence"), None),
    ("a-b-c.jsonl", ("a-b", "c"), None),
    ("UPPER-narrative.jsonl", None, "'UPPER' is not a valid Zgent name (invalid Zgent name "
     "'UPPER': 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit, without '..')"),
    ("corpus-.jsonl", None, "'' is not a valid channel name"),
    ("-narrative.jsonl", None, "'' is not a valid Zgent name (invalid Zgent name '': 1 to 63 of "
                               "a-z 0-9 . _ -, starting with a letter or digit, without '..')"),
    ("corpus-bad kind.jsonl", None, "'bad kind' is not a valid channel name"),
    ("has space.jsonl", None, "'has space' is not a valid channel name"),
    ("notes.txt", None, None),
    ("corpus-narrative.jsonl.1", None, None),
    (".hidden.jsonl", None, None),
    ("ünïcode.jsonl", None, "'ünïcode' is not a valid channel name"),
    ("corpus-x\n.jsonl", None, "'x\\n' is not a valid channel name"),
]
