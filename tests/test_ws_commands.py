"""Every built-in command over a real WebSocket, with real results."""

from __future__ import annotations

import pytest

from arqond.core.auth import issue_hs256

SECRET = "command-secret"
SCIENCE = ["general", "explore", "hypothesize", "design", "execute", "interpret", "share"]


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


async def test_status_reports_real_counts(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url)
    b = await connect_peer(daemon.ws_url)
    await a.send({"type": "message", "payload": {"n": 1}})
    await b.recv_type("message")
    await a.recv_type("message_response")
    data = (await a.command("status"))["payload"]["data"]
    assert data["connections"]["active"] == 2
    assert data["connections"]["total"] == 2
    assert data["rooms"] == 1 and data["channels"] == 7
    assert data["messages"]["total"] == 1 and data["messages"]["deliveries"] == 1
    assert data["server"]["version"] == "0.1.0"
    assert data["client"]["client_id"] == a.id


async def test_science_room_is_bootstrapped_with_metadata(daemon, connect_peer):
    peer = await connect_peer(daemon.ws_url)
    data = (await peer.command("list_channels", {"room": "science"}))["payload"]["data"]
    assert [c["channel"] for c in data["channels"]] == SCIENCE
    general = data["channels"][0]
    assert general["participants"] == 1  # this peer, auto-joined
    assert general["hardcoded"] is True and general["type"] == "general"
    assert general["created_by"] == "arqonbus" and general["created_at"]
    assert all(c["participants"] == 0 for c in data["channels"][1:])


async def test_join_auto_creates_and_channel_info_lists_participants(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url)
    b = await connect_peer(daemon.ws_url + "?type=ai-agent&screen_name=bee")
    joined = (await a.command("join_channel", {"room": "lab", "channel": "bench"}))
    data = joined["payload"]["data"]
    assert data["created"] is True and (data["room"], data["channel"]) == ("lab", "bench")
    assert data["created_by"] == a.id and data["hardcoded"] is False
    again = (await b.command("join_channel", {"room": "lab:bench"}))["payload"]["data"]
    assert again["created"] is False
    info = (await a.command("channel_info", {"room": "lab:bench"}))["payload"]["data"]
    assert [p["client_id"] for p in info["participants"]] == [a.id, b.id]
    assert info["participants"][1]["type"] == "ai-agent"
    assert info["metadata"]["created_by"] == a.id
    listing = (await a.command("list_channels"))["payload"]["data"]
    counts = {(c["room"], c["channel"]): c["participants"] for c in listing["channels"]}
    assert counts[("lab", "bench")] == 2 and counts[("science", "general")] == 2


async def test_leave_channel_stops_delivery(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url)
    b = await connect_peer(daemon.ws_url)
    left = await b.command("leave_channel", {"room": "science", "channel": "general"})
    assert left["status"] == "success"
    await a.send({"type": "message", "payload": {"x": 1}})
    await a.recv_type("message_response")
    await b.expect_silence(0.3)
    again = await b.command("leave_channel", {"room": "science:general"})
    assert again["status"] == "error" and again["error_code"] == "NOT_A_MEMBER"


async def test_history_keeps_a_window_and_returns_last_50(make_daemon, connect_peer):
    daemon = make_daemon({"server": {"history_size": 600}})
    a = await connect_peer(daemon.ws_url)
    for n in range(620):
        await a.send({"type": "message", "payload": {"n": n}})
    for _ in range(620):
        await a.recv_type("message_response")
    data = (await a.command("history", {"room": "science", "channel": "general"}))
    data = data["payload"]["data"]
    assert [h["payload"]["n"] for h in data["history"]] == list(range(570, 620))
    assert data["total_messages"] == 600 and data["limit"] == 50
    data = (await a.command("history", {"room": "science:general", "limit": 600}))
    assert [h["payload"]["n"] for h in data["payload"]["data"]["history"]] == \
        list(range(20, 620))
    room = (await a.command("history", {"room": "science", "limit": 3}))["payload"]["data"]
    assert [h["payload"]["n"] for h in room["history"]] == [617, 618, 619]
    too_many = await a.command("history", {"room": "science", "limit": 601})
    assert too_many["status"] == "error" and "limit" in too_many["error"]


async def test_history_get_and_replay(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url)
    for n in range(1, 4):
        await a.send({"type": "message", "payload": {"idx": n}, "metadata": {"sequence": n}})
        await a.recv_type("message_response")
    got = (await a.command("history.get", {"room": "science", "channel": "general"}))
    data = got["payload"]["data"]
    assert data["count"] == 3
    assert [e["envelope"]["payload"]["idx"] for e in data["entries"]] == [3, 2, 1]
    replay = await a.command("op.history.replay", {
        "room": "science", "channel": "general", "from_ts": "2000-01-01T00:00:00Z",
        "to_ts": "2999-01-01T00:00:00Z"})
    assert [e["envelope"]["payload"]["idx"] for e in replay["payload"]["data"]["entries"]] == \
        [1, 2, 3]
    denied = await a.command("history.get", {})
    assert denied["status"] == "error" and denied["error_code"] == "AUTHORIZATION_ERROR"
    missing = await a.command("history.replay", {"room": "science"})
    assert missing["status"] == "error" and "from_ts" in missing["error"]


async def test_ping_help_and_store(daemon, connect_peer):
    a = await connect_peer(daemon.ws_url)
    helped = (await a.command("help"))["payload"]["data"]["commands"]
    names = {c["command"]: c["admin"] for c in helped}
    for name in ("status", "create_channel", "delete_channel", "join_channel", "leave_channel",
                 "list_channels", "channel_info", "ping", "history", "help"):
        assert name in names
    assert names["create_channel"] is True and names["join_channel"] is False
    stored = await a.command("op.store.set", {"key": "k", "value": {"a": 1}})
    assert stored["payload"]["data"] == {"namespace": "default", "key": "k", "updated": False}
    got = (await a.command("op.store.get", {"key": "k"}))["payload"]["data"]
    assert got["found"] is True and got["value"] == {"a": 1}
    listed = (await a.command("op.store.list"))["payload"]["data"]
    assert listed["keys"] == ["k"]
    deleted = (await a.command("op.store.delete", {"key": "k"}))["payload"]["data"]
    assert deleted["deleted"] is True


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


async def test_delete_channel_refuses_hardcoded_and_non_empty(auth_daemon, connect_peer):
    admin = await connect_peer(auth_daemon.ws_url, additional_headers=bearer({"role": "admin"}))
    user = await connect_peer(auth_daemon.ws_url, additional_headers=bearer({}))
    hard = await admin.command("delete_channel", {"room": "science:explore"})
    assert hard["error_code"] == "CHANNEL_PROTECTED" and "hard-coded" in hard["error"]
    await user.command("join_channel", {"room": "lab:bench"})
    busy = await admin.command("delete_channel", {"room": "lab:bench"})
    assert busy["error_code"] == "CHANNEL_NOT_EMPTY" and "1 participant" in busy["error"]
    await user.command("leave_channel", {"room": "lab:bench"})
    gone = await admin.command("delete_channel", {"room": "lab:bench"})
    assert gone["status"] == "success"
    missing = await admin.command("delete_channel", {"room": "lab:bench"})
    assert missing["error_code"] == "NOT_FOUND"


async def test_wildcard_join_follows_every_matching_channel(daemon, connect_peer):
    watcher = await connect_peer(daemon.ws_url)
    a = await connect_peer(daemon.ws_url)
    await watcher.command("join_channel", {"room": "*", "channel": "narrative"})
    await watcher.command("leave_channel", {"room": "science:general"})
    for zgent in ("alpha", "beta"):
        await a.command("join_channel", {"room": f"{zgent}:narrative"})
        await a.send({"type": "message", "room": f"{zgent}:narrative", "payload": {"z": zgent}})
        await a.recv_type("message_response")
        got = await watcher.recv_type("message")
        assert got["room"] == zgent and got["payload"] == {"z": zgent}
    await a.command("join_channel", {"room": "alpha:events"})
    await a.send({"type": "message", "room": "alpha:events", "payload": {"no": 1}})
    await watcher.expect_silence(0.3)
