"""HS256 tokens and where a handshake may carry one (arqond/core/auth.py)."""

from __future__ import annotations

import base64

import orjson
import pytest

from arqond.core.auth import AuthError, authenticate, issue_hs256, token_from, verify_hs256

SECRET = "k"


def segment(value) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()


def forged(header, claims, signature: str = "c2ln") -> str:
    return f"{segment(header)}.{segment(claims)}.{signature}"


def test_a_valid_token_gives_its_claims():
    token = issue_hs256({"role": "admin", "exp": 2000, "nbf": 999, "iat": 999.5}, SECRET)
    assert verify_hs256(token, SECRET, now=1000)["role"] == "admin"
    assert verify_hs256(issue_hs256({"sub": "x"}, SECRET), SECRET)["sub"] == "x"  # no clock


@pytest.mark.parametrize("token, now, why", [
    ("a.b", 1000, "Invalid token: not three base64url segments"),
    ("a.b.c.d", 1000, "Invalid token: not three base64url segments"),
    ("!!.!!.!!", 1000, "Invalid token: undecodable segment"),
    (forged({"alg": "none"}, {}), 1000, "Invalid token: only alg HS256 is accepted"),
    (forged(["HS256"], {}), 1000, "Invalid token: only alg HS256 is accepted"),
    (forged({"alg": "HS256"}, [1]), 1000, "Invalid token: claims are not an object"),
    (forged({"alg": "HS256"}, {"role": "admin"}), 1000, "Invalid token: bad signature"),
    (issue_hs256({"exp": 2000}, "other"), 1000, "Invalid token: bad signature"),
    (issue_hs256({"exp": 2000}, SECRET), 2000, "Invalid token: expired"),   # at the bound
    (issue_hs256({"nbf": 2000}, SECRET), 1999.9, "Invalid token: not valid yet"),
    (issue_hs256({"exp": "2000"}, SECRET), 1000, "Invalid token: exp is not a number"),
    (issue_hs256({"nbf": True}, SECRET), 1000, "Invalid token: nbf is not a number"),
    (issue_hs256({"iat": [1]}, SECRET), 1000, "Invalid token: iat is not a number"),
])
def test_invalid_tokens_say_why(token, now, why):
    with pytest.raises(AuthError) as refused:
        verify_hs256(token, SECRET, now=now)
    assert str(refused.value) == why


def test_a_token_is_valid_until_exp_and_from_nbf():
    assert verify_hs256(issue_hs256({"exp": 2000}, SECRET), SECRET, now=1999.9)
    assert verify_hs256(issue_hs256({"nbf": 2000}, SECRET), SECRET, now=2000)


@pytest.mark.parametrize("headers, query, token", [
    ({"Authorization": "Bearer abc"}, {"token": "q"}, "abc"),
    ({"authorization": "bearer  abc "}, {}, "abc"),
    ({"Authorization": "Basic abc"}, {}, None),
    ({"Authorization": "Bearer "}, {"access_token": "q"}, "q"),
    ({}, {"token": "t", "access_token": "a", "auth_token": "u"}, "t"),
    ({}, {"access_token": "a", "auth_token": "u"}, "a"),
    ({}, {"auth_token": "q"}, "q"),
    ({}, {"token": ""}, None),
    ({}, {}, None),
])
def test_where_a_token_is_taken_from(headers, query, token):
    assert token_from(headers, query) == token


def test_authenticate_needs_a_token_and_checks_it():
    with pytest.raises(AuthError, match="^Missing bearer token$"):
        authenticate({}, {}, SECRET)
    assert authenticate({}, {"token": issue_hs256({"sub": "s"}, SECRET)}, SECRET) == {"sub": "s"}
