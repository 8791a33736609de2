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
from tests.conftest import metrics_of, settle

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


async def test_by_default_a_client_joins_nothing_and_a_roomless_message_goes_nowhere(
        make_daemon, connect_peer):
    """ArqonBus's clients expect to get only what they join; a message naming no room is
    acknowledged and dropped there, and so here."""
    daemon = make_daemon({"server": {"default_channel": ""}})
    a = await connect_peer(daemon.ws_url)
    b = await connect_peer(daemon.ws_url)
    await b.command("join_channel", {"room": "science:general"})
    await a.send({"type": "message", "id": "arq_1_7_abcdef", "payload": {"x": 1}})
    ack = await a.recv_type("message_response")
    assert (ack["id"], ack["payload"]) == ("arq_1_7_abcdef", {"x": 1})
    await a.send({"type": "message", "room": "nosuchroom", "payload": {"x": 2}})
    await a.recv_type("message_response")  # a whole room that does not exist: also nowhere
    await b.expect_silence(0.3)
    status = await a.command("status")
    assert status["payload"]["data"]["client"]["subscriptions"] == []
    assert status["payload"]["data"]["client"]["room"] is None
    assert metrics_of(daemon)["arqonbus_unrouted_total"] == 2


async def test_publishing_to_a_channel_nobody_created_creates_it_for_the_publisher(
        make_daemon, connect_peer):
    daemon = make_daemon({"server": {"default_channel": ""}})
    watcher = await connect_peer(daemon.ws_url)
    await watcher.command("join_channel", {"room": "*", "channel": "bots"})
    bot = await connect_peer(daemon.ws_url)
    await bot.send({"type": "message", "room": "lab", "channel": "bots", "payload": {"hi": 1}})
    await bot.recv_type("message_response")
    assert (await watcher.recv_type("message"))["payload"] == {"hi": 1}
    info = (await watcher.command("channel_info", {"room": "lab:bots"}))["payload"]["data"]
    assert info["metadata"]["created_by"] == bot.id


@pytest.mark.parametrize("room, channel", [("team/alpha", "general"), ("alice@lab", "x"),
                                           ("Lab Room", "_private"), ("été", "日本")])
async def test_names_are_any_string_arqonbus_accepts(make_daemon, connect_peer, room, channel):
    daemon = make_daemon({"server": {"default_channel": ""}})
    listener = await connect_peer(daemon.ws_url)
    joined = await listener.command("join_channel", {"room": room, "channel": channel})
    assert joined["status"] == "success", joined
    sender = await connect_peer(daemon.ws_url)
    await sender.send({"type": "message", "room": room, "channel": channel, "payload": {"n": 1}})
    got = await listener.recv_type("message")
    assert (got["room"], got["channel"], got["payload"]) == (room, channel, {"n": 1})


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
