"""Slow and broken clients, and JWT authentication at the handshake."""

from __future__ import annotations

import asyncio
import base64
import time

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from arqond.core.auth import issue_hs256
from tests.conftest import scaled, settle

SECRET = "handshake-secret"


async def test_stalled_reader_is_cut_off_and_others_get_everything(make_daemon, connect_peer):
    daemon = make_daemon({"server": {"client_buffer_bytes": 65536}})
    publisher = await connect_peer(daemon.ws_url)
    fast = await connect_peer(daemon.ws_url)
    stalled = await connect_peer(daemon.ws_url, max_size=None)
    stalled.connection.transport.pause_reading()  # it reads nothing from now on
    count, blob = 3000, "x" * 10000

    async def read_all() -> list[int]:
        return [(await fast.recv(10))["payload"]["n"] for _ in range(count)]

    reader = asyncio.create_task(read_all())
    for n in range(count):  # 30 MB: far more than the stalled client's kernel buffers hold
        await publisher.send({"type": "message", "payload": {"n": n, "blob": blob}})
        await publisher.recv_type("message_response")
    assert await reader == list(range(count))  # every message, in order, despite the stall
    status = (await publisher.command("status"))["payload"]["data"]
    assert status["messages"]["slow_consumers"] == 1
    assert status["connections"]["active"] == 2
    daemon.wait_for_line("client slow")
    stalled.connection.transport.resume_reading()
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await stalled.recv(10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
    assert "slow consumer" in closed.value.rcvd.reason


async def test_broken_socket_is_cleaned_up_at_once(daemon, connect_peer):
    watcher = await connect_peer(daemon.ws_url)
    doomed = await connect_peer(daemon.ws_url)
    doomed.connection.transport.abort()  # no close frame: a vanished peer
    for _ in range(50):
        status = (await watcher.command("status"))["payload"]["data"]
        if status["connections"]["active"] == 1:
            break
        await settle(0.05)
    assert status["connections"]["active"] == 1
    info = (await watcher.command("channel_info", {"room": "science:general"}))
    assert [p["client_id"] for p in info["payload"]["data"]["participants"]] == [watcher.id]


@pytest.fixture
def auth_daemon(make_daemon):
    return make_daemon({"auth": {"enabled": True, "jwt_secret": SECRET}})


def unsigned_token(claims) -> str:
    def part(obj):
        return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


# Where a bad token travels, and what the client is told. Each token rule is a row of
# tests/unit/test_auth.py; here one daemon shows each refusal as a client sees it.
BAD_TOKENS = [
    ("none", "Missing bearer token"),
    ("garbage", "Invalid token: not three base64url segments"),
    ("wrong-secret", "Invalid token: bad signature"),
    ("expired", "Invalid token: expired"),
    ("alg-none", "Invalid token: only alg HS256 is accepted"),
    ("not-yet", "Invalid token: not valid yet"),
]


def bad_handshake(url: str, how: str) -> tuple[str, dict[str, str]]:
    now = time.time()
    if how == "garbage":
        return url, {"Authorization": "Bearer invalid.token"}
    if how == "wrong-secret":
        return url + "?token=" + issue_hs256({"sub": "x"}, "other"), {}
    if how == "expired":
        return url, {"Authorization": "Bearer " + issue_hs256({"exp": now - 5}, SECRET)}
    if how == "alg-none":
        return url + "?access_token=" + unsigned_token({"role": "admin"}), {}
    if how == "not-yet":
        return url + "?auth_token=" + issue_hs256({"nbf": now + 3600}, SECRET), {}
    return url, {}


async def test_bad_tokens_get_401_json(auth_daemon, connect_peer):
    bystander = await connect_peer(auth_daemon.ws_url + "?token=" + issue_hs256({}, SECRET))
    for how, details in BAD_TOKENS:
        url, headers = bad_handshake(auth_daemon.ws_url, how)
        mark = len(auth_daemon.lines)
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, additional_headers=headers, open_timeout=scaled(5))
        response = refused.value.response
        assert response.status_code == 401, how
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="arqonbus"'
        assert orjson.loads(response.body) == {"error": "Unauthorized", "details": details}
        auth_daemon.wait_for_line("handshake refused", start=mark)
    status = (await bystander.command("status"))["payload"]["data"]
    assert status["connections"]["total"] == 1  # none of the refused ones became a client


async def test_claims_are_kept_on_the_client(auth_daemon, connect_peer):
    token = issue_hs256({"sub": "alice", "tenant_id": "t1", "role": "user",
                         "exp": time.time() + 60}, SECRET)
    peer = await connect_peer(auth_daemon.ws_url,
                              additional_headers={"Authorization": f"bearer {token}"})
    client = (await peer.command("status"))["payload"]["data"]["client"]
    assert (client["subject"], client["tenant_id"], client["role"]) == ("alice", "t1", "user")
    assert client["admin"] is False
    stored = (await peer.command("op.store.set", {"key": "k", "value": 1}))["payload"]["data"]
    assert stored["namespace"] == "tenant:t1"


async def test_tokens_are_ignored_when_auth_is_off(daemon, connect_peer):
    peer = await connect_peer(daemon.ws_url + "?token=" + issue_hs256({"role": "admin"}, "x"))
    client = (await peer.command("status"))["payload"]["data"]["client"]
    assert client["admin"] is False  # no secret to check it against: nobody is admin


async def test_connection_limit_refuses_with_503(make_daemon, connect_peer):
    daemon = make_daemon({"server": {"max_connections": 2}})
    first = await connect_peer(daemon.ws_url)
    await connect_peer(daemon.ws_url)
    with pytest.raises(InvalidStatus) as refused:
        await connect(daemon.ws_url, open_timeout=scaled(5))
    assert refused.value.response.status_code == 503
    assert orjson.loads(refused.value.response.body)["details"] == "connection limit reached"
    await first.send({"type": "message", "payload": {"still": "fine"}})
    assert (await first.recv_type("message_response"))["payload"] == {"still": "fine"}
