"""Routing over real WebSockets against the real daemon: the welcome, one message to many,
identity from the handshake, frames of every size in bursts, and the uvloop event loop.

Each routing rule (targets, private, system and telemetry frames, refusals) is checked
in-process in tests/unit/test_protocol.py; this file proves the wire."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from websockets.frames import Frame, Opcode

from arqond.transports.wsbase import text_frame
from tests.conftest import settle

CLIENT_ID_RE = re.compile(r"^arq_client_[0-9a-f]{32}$")
ALWAYS_KEYS = ["id", "timestamp", "type", "version", "payload", "args", "metadata"]


async def test_welcome_is_first_frame(daemon, connect_peer):
    peer = await connect_peer(daemon.ws_url)
    welcome = peer.welcome
    assert list(welcome)[:7] == ALWAYS_KEYS
    assert welcome["type"] == "message"
    assert welcome["sender"] == "arqonbus"
    assert welcome["version"] == "1.0"
    assert welcome["payload"]["welcome"] == "Connected to ArqonBus"
    assert CLIENT_ID_RE.match(welcome["payload"]["client_id"])


async def test_message_reaches_others_once_and_sender_gets_only_ack(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url)
    b = await connect_peer(daemon.ws_url)
    c = await connect_peer(daemon.ws_url)
    await a.send({"type": "message", "room": "science", "channel": "general",
                  "payload": {"content": "hi"}, "sender": "forged"})
    for peer in (b, c):
        got = await peer.recv_type("message")
        assert got["payload"] == {"content": "hi"}
        assert (got["room"], got["channel"]) == ("science", "general")
        assert got["sender"] == a.id  # overwritten, never the client's claim
        await peer.expect_silence(0.2)  # exactly one copy
    ack = await a.recv_type("message_response")
    assert ack["id"] == got["id"]
    assert ack["payload"] == {"content": "hi"}
    assert ack["sender"] == "arqonbus"
    await a.expect_silence(0.2)


async def test_identity_from_query_string_and_identify(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url + "?client_type=ai-agent&screen_name=Ada&avatar=a.png")
    data = (await a.command("status"))["payload"]["data"]["client"]
    assert (data["type"], data["screen_name"], data["avatar"]) == ("ai-agent", "Ada", "a.png")
    connected = datetime.fromisoformat(data["connected_at"])
    first_activity = datetime.fromisoformat(data["last_activity"])
    assert connected <= first_activity  # the status command itself was activity
    await settle(0.05)
    response = await a.command("identify", {"personality": "curious", "type": "dashboard"})
    assert datetime.fromisoformat(response["payload"]["data"]["last_activity"]) > first_activity
    assert response["status"] == "success"
    assert response["payload"]["data"]["personality"] == "curious"
    assert response["payload"]["data"]["type"] == "dashboard"
    bad = await a.command("identify", {"screen_name": 5, "colour": "red"})
    assert bad["status"] == "error" and bad["error_code"] == "VALIDATION_ERROR"
    assert "colour" in bad["error"] and "screen_name" in bad["error"]
    data = (await a.command("status"))["payload"]["data"]["client"]
    assert data["screen_name"] == "Ada"  # nothing applied from the refused identify


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_text_frames_are_encoded_as_websockets_encodes_them(size):
    payload = b"x" * size
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


async def test_burst_of_all_frame_sizes_arrives_whole_and_in_order(daemon, connect_peer):
    """Frames queued together are written in one batch: each recipient must still get every
    frame whole, in order, across the 7-bit, 16-bit and 64-bit WebSocket length encodings."""
    sender = await connect_peer(daemon.ws_url)
    receivers = [await connect_peer(daemon.ws_url) for _ in range(3)]
    sizes = [1, 125, 126, 200, 65535, 65536, 70000] * 5
    for seq, size in enumerate(sizes):
        await sender.send({"type": "message", "payload": {"seq": seq, "text": "x" * size}})
    for peer in receivers:
        for seq, size in enumerate(sizes):
            got = await peer.recv_type("message")
            assert got["payload"] == {"seq": seq, "text": "x" * size}
        await peer.expect_silence(0.2)
    acks = [(await sender.recv_type("message_response"))["payload"]["seq"] for _ in sizes]
    assert acks == list(range(len(sizes)))


async def test_uvloop_event_loop_serves_the_same_protocol(make_daemon, connect_peer):
    pytest.importorskip("uvloop")
    daemon = make_daemon({"server": {"event_loop": "uvloop"}})
    a = await connect_peer(daemon.ws_url)
    b = await connect_peer(daemon.ws_url)
    await a.send({"type": "message", "payload": {"content": "on uvloop"}})
    got = await b.recv_type("message")
    assert got["payload"] == {"content": "on uvloop"}
    assert (await a.recv_type("message_response"))["id"] == got["id"]
