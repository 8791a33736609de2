"""JSON-RPC 2.0 as Zgents speak it: one object per line, requests, replies, error shapes.

The seed's requests carry no ``"jsonrpc"`` member, so it is optional inbound (but must be
"2.0" when present); every reply arqond writes carries it.
"""

from __future__ import annotations

from typing import Any

import orjson

from arqond.core import payload
from arqond.core.envelope import json_type
from arqond.core.errors import ErrorCode, RpcCode

# A request line may name its reply inbox; the seed's pipe protocol does.
REQUEST_KEYS = frozenset({"jsonrpc", "id", "method", "params", "replyTo"})
RESPONSE_KEYS = frozenset({"jsonrpc", "id", "result", "error"})


class RpcError(Exception):
    def __init__(self, code: int, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


def error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def result(request_id: Any, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def line(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


def decode(raw: bytes, max_depth: int) -> dict[str, Any]:
    """One line to a JSON object, or RpcError(-32700 / -32600)."""
    try:
        data = payload.loads(raw, max_depth)
    except payload.PayloadError as exc:
        if exc.code == ErrorCode.INVALID_JSON:
            raise RpcError(RpcCode.PARSE_ERROR, f"parse error: {exc.message}") from None
        raise RpcError(RpcCode.INVALID_REQUEST, f"invalid request: {exc.message}") from None
    if not isinstance(data, dict):
        raise RpcError(RpcCode.INVALID_REQUEST,
                       f"a line must be a JSON object, not {json_type(data)}")
    return data


def valid_id(value: Any) -> bool:
    return value is None or isinstance(value, str) or (
        isinstance(value, int) and not isinstance(value, bool))


def check_request(obj: dict[str, Any]) -> None:
    """Raise RpcError(-32600) naming what is wrong with a request object."""
    request_id = obj.get("id") if valid_id(obj.get("id")) else None
    problems = []
    if obj.get("jsonrpc", "2.0") != "2.0":
        problems.append('"jsonrpc" must be "2.0"')
    if not isinstance(obj.get("method"), str) or not obj["method"]:
        problems.append('"method" must be a non-empty string')
    if not valid_id(obj.get("id")):
        problems.append('"id" must be a string, an integer or null')
    if "params" in obj and not isinstance(obj["params"], (dict, list)):
        problems.append('"params" must be an object or an array')
    if "replyTo" in obj and not isinstance(obj["replyTo"], str):
        problems.append('"replyTo" must be a Zgent name')
    unknown = obj.keys() - REQUEST_KEYS
    if unknown:
        problems.append("unknown member(s) " + ", ".join(sorted(repr(k) for k in unknown)))
    if problems:
        raise RpcError(RpcCode.INVALID_REQUEST,
                       "invalid request: " + "; ".join(problems), request_id)


def check_response(obj: dict[str, Any]) -> str | None:
    """What is wrong with a handler's reply, or None."""
    if ("result" in obj) == ("error" in obj):
        return 'a reply has exactly one of "result" and "error"'
    err = obj.get("error")
    if "error" in obj and not (isinstance(err, dict) and isinstance(err.get("code"), int)
                               and isinstance(err.get("message"), str)):
        return '"error" must be {"code": integer, "message": string}'
    unknown = obj.keys() - RESPONSE_KEYS
    if unknown:
        return "unknown member(s) " + ", ".join(sorted(repr(k) for k in unknown))
    return None


def params_dict(obj: dict[str, Any]) -> dict[str, Any]:
    params = obj.get("params", {})
    if not isinstance(params, dict):
        raise RpcError(RpcCode.INVALID_PARAMS, '"params" must be an object for this method',
                       obj.get("id"))
    return params

