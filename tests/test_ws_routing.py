"""Routing over real WebSockets against the real daemon."""

from __future__ import annotations

import asyncio
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


async def test_missing_defaults_are_filled_and_client_values_kept(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url)
    b = await connect_peer(daemon.ws_url)
    await a.send({"type": "message", "id": "arq_1_2_abcdef", "timestamp": "2025-01-01T12:00:00Z",
                  "room": "science:general", "payload": {"n": 1}})
    got = await b.recv_type("message")
    assert got["id"] == "arq_1_2_abcdef"
    assert got["timestamp"] == "2025-01-01T12:00:00Z"
    assert got["version"] == "1.0"
    assert got["channel"] == "general"
    await a.send({"type": "event", "payload": {"n": 2}})
    got = await b.recv_type("event")
    assert (got["room"], got["channel"]) == ("science", "general")  # the current channel
    assert got["id"].startswith("arq_") and got["timestamp"]


@pytest.mark.parametrize("target", [
    {"room": "science", "channel": "explore"},
    {"room": "science:explore"},
    {"channel": "science:explore"},
    {"channel": "explore"},  # channel only: the current room
])
async def test_target_forms(daemon, connect_peer, target):
    a = await connect_peer(daemon.ws_url)
    b = await connect_peer(daemon.ws_url)
    general = await connect_peer(daemon.ws_url)
    await b.command("join_channel", {"room": "science", "channel": "explore"})
    await a.send({"type": "message", "payload": {"x": 1}, **target})
    got = await b.recv_type("message")
    assert (got["room"], got["channel"]) == ("science", "explore")
    await a.recv_type("message_response")
    await general.expect_silence(0.2)


async def test_message_without_channel_reaches_whole_room_once(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url)
    b = await connect_peer(daemon.ws_url)
    await b.command("join_channel", {"room": "science:explore"})
    await b.command("join_channel", {"room": "science:design"})
    other = await connect_peer(daemon.ws_url)
    await other.command("join_channel", {"room": "lab:bench"})
    await other.command("leave_channel", {"room": "science:general"})
    await a.send({"type": "message", "room": "science", "payload": {"all": True}})
    got = await b.recv_type("message")
    assert got["room"] == "science" and "channel" not in got
    await b.expect_silence(0.2)  # member of three science channels, one copy
    await other.expect_silence(0.2)
    await a.recv_type("message_response")


async def test_private_message_to_client_ids_and_pm_channel(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url)
    b = await connect_peer(daemon.ws_url)
    c = await connect_peer(daemon.ws_url)
    await a.send({"type": "private", "payload": {"target": b.id, "text": "psst"}})
    got = await b.recv_type("private")
    assert got["payload"]["text"] == "psst" and got["sender"] == a.id
    await a.recv_type("message_response")
    await a.send({"type": "message", "room": "science", "channel": "pm",
                  "to_client": [c.id], "payload": {"text": "pm"}})
    got = await c.recv_type("private")
    assert got["payload"] == {"text": "pm"}
    await a.recv_type("message_response")
    await b.expect_silence(0.2)


async def test_private_to_unknown_client_is_refused_and_nobody_gets_it(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url)
    b = await connect_peer(daemon.ws_url)
    await a.send({"type": "private", "payload": {"target": [b.id, "arq_client_" + "0" * 32]}})
    error = await a.recv_type("error")
    assert error["error_code"] == "TARGET_NOT_FOUND"
    assert "arq_client_" + "0" * 32 in error["error"]
    await b.expect_silence(0.2)


async def test_system_messages_only_from_admins(make_daemon, connect_peer):
    from arqond.core.auth import issue_hs256
    daemon = make_daemon({"auth": {"enabled": True, "jwt_secret": "s3cret"}})
    admin = await connect_peer(daemon.ws_url, additional_headers={
        "Authorization": "Bearer " + issue_hs256({"role": "admin"}, "s3cret")})
    user = await connect_peer(daemon.ws_url + "?token=" + issue_hs256({"sub": "u"}, "s3cret"))
    lab = await connect_peer(daemon.ws_url + "?token=" + issue_hs256({"sub": "v"}, "s3cret"))
    await lab.command("leave_channel", {"room": "science:general"})
    await user.send({"type": "system", "payload": {"text": "fake"}})
    error = await user.recv_type("error")
    assert error["error_code"] == "AUTHORIZATION_ERROR"
    await lab.expect_silence(0.2)
    await admin.send({"type": "system", "payload": {"text": "maintenance"}})
    for peer in (user, lab):  # no room: every client, joined or not
        got = await peer.recv_type("system")
        assert got["payload"] == {"text": "maintenance"}
    await admin.recv_type("message_response")


async def test_telemetry_envelope_defaults_to_integriguard(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url)
    watcher = await connect_peer(daemon.ws_url)
    await a.send({"type": "telemetry", "payload": {"eventType": "x"}})
    await watcher.command("join_channel", {"room": "integriguard:telemetry-stream"})
    await a.send({"type": "telemetry", "payload": {"eventType": "y"}})
    got = await watcher.recv_type("telemetry")
    assert (got["room"], got["channel"]) == ("integriguard", "telemetry-stream")
    assert got["payload"] == {"eventType": "y"}


async def test_default_channel_can_be_turned_off(make_daemon, connect_peer):
    daemon = make_daemon({"server": {"default_channel": ""}})
    a = await connect_peer(daemon.ws_url)
    await a.send({"type": "message", "payload": {"x": 1}})
    error = await a.recv_type("error")
    assert error["error_code"] == "VALIDATION_ERROR"
    assert "no current room" in error["error"]
    status = await a.command("status")
    assert status["payload"]["data"]["client"]["subscriptions"] == []


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
