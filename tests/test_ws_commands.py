"""Commands over a real WebSocket: both command shapes and their two answers, and admin
rights from a token's role. Every built-in command, each refusal and each limit is checked
in-process in tests/unit/test_commands.py."""

from __future__ import annotations

import pytest

from arqond.core.auth import issue_hs256

SECRET = "command-secret"


@pytest.fixture
def auth_daemon(make_daemon):
    return make_daemon({"auth": {"enabled": True, "jwt_secret": SECRET}})


def bearer(claims):
    return {"Authorization": "Bearer " + issue_hs256(claims, SECRET)}


async def test_both_command_shapes_get_their_answer_then_the_ack(daemon, connect_peer):
    peer = await connect_peer(daemon.ws_url)
    await peer.send({"type": "command", "id": "arq_1_1_abcdef", "command": "ping", "args": {}})
    response = await peer.recv_type("response")
    assert (response["request_id"], response["status"]) == ("arq_1_1_abcdef", "success")
    assert response["payload"]["message"] == "pong"
    ack = await peer.recv_type("command_response")
    assert ack["id"] == "arq_1_1_abcdef" and ack["payload"] == {"result": "ok"}
    assert ack["command"] == "ping"
    # The legacy shape is answered as ArqonBus answers its built-ins: a message first (its
    # load test and end-to-end tests accept only message, command_response or error there).
    await peer.send({"type": "command", "id": "arq_1_2_abcdef",
                     "payload": {"command": "ping", "parameters": {}}})
    response = await peer.recv_type("message")
    assert response["request_id"] == "arq_1_2_abcdef" and response["status"] == "success"
    assert response["payload"]["message"] == "pong" and response["command"] == "ping"
    ack = await peer.recv_type("command_response")
    assert ack["id"] == "arq_1_2_abcdef" and ack["command"] == "ping"


async def test_admin_commands_need_an_admin(auth_daemon, connect_peer):
    admin = await connect_peer(auth_daemon.ws_url, additional_headers=bearer({"role": "admin"}))
    user = await connect_peer(auth_daemon.ws_url, additional_headers=bearer({"role": "user"}))
    refused = await user.command("create_channel", {"room": "ops", "channel": "alerts"})
    assert refused["status"] == "error" and refused["error_code"] == "AUTHORIZATION_ERROR"
    assert "admin" in refused["error"]
    listing = (await user.command("list_channels"))["payload"]["data"]
    assert "ops" not in {c["room"] for c in listing["channels"]}  # nothing was created
    created = await admin.command("create_channel", {"room": "ops:alerts",
                                                     "description": "pager"})
    assert created["status"] == "success"
    assert created["payload"]["data"]["description"] == "pager"
    duplicate = await admin.command("create_channel", {"room": "ops:alerts"})
    assert duplicate["error_code"] == "CHANNEL_EXISTS"
    refused = await user.command("delete_channel", {"room": "ops:alerts"})
    assert refused["error_code"] == "AUTHORIZATION_ERROR"
    deleted = await admin.command("delete_channel", {"room": "ops:alerts"})
    assert deleted["status"] == "success"
