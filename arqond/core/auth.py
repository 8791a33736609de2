"""HS256 JWT verification (stdlib only) and where a token may travel in a handshake."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any, Mapping

import orjson

TOKEN_QUERY_KEYS = ("token", "access_token", "auth_token")


class AuthError(Exception):
    """The handshake is refused with HTTP 401; the text goes in the JSON body's ``details``."""


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def issue_hs256(claims: Mapping[str, Any], secret: str) -> str:
    """Mint a token; used by tests, the benchmark and ``arqon`` helpers."""
    header = _b64encode(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    body = _b64encode(orjson.dumps(dict(claims)))
    signature = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64encode(signature)}"


def verify_hs256(token: str, secret: str, now: float | None = None) -> dict[str, Any]:
    """Return the claims of a valid token, or raise AuthError saying why it is not valid."""
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("Invalid token: not three base64url segments")
    try:
        header = orjson.loads(_b64decode(parts[0]))
        claims = orjson.loads(_b64decode(parts[1]))
        signature = _b64decode(parts[2])
    except (ValueError, orjson.JSONDecodeError):
        raise AuthError("Invalid token: undecodable segment") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise AuthError("Invalid token: only alg HS256 is accepted")
    if not isinstance(claims, dict):
        raise AuthError("Invalid token: claims are not an object")
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode(),
                        hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise AuthError("Invalid token: bad signature")
    now = time.time() if now is None else now
    for claim in ("exp", "nbf", "iat"):
        value = claims.get(claim)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise AuthError(f"Invalid token: {claim} is not a number")
    if claims.get("exp") is not None and now >= claims["exp"]:
        raise AuthError("Invalid token: expired")
    if claims.get("nbf") is not None and now < claims["nbf"]:
        raise AuthError("Invalid token: not valid yet")
    return claims


def token_from(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The bearer token of a handshake: Authorization header first, then query parameters."""
    authorization = headers.get("Authorization") or headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for key in TOKEN_QUERY_KEYS:
        if query.get(key):
            return query[key]
    return None


def authenticate(headers: Mapping[str, str], query: Mapping[str, str],
                 secret: str) -> dict[str, Any]:
    token = token_from(headers, query)
    if token is None:
        raise AuthError("Missing bearer token")
    return verify_hs256(token, secret)
