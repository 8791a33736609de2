"""The telemetry WebSocket against the real daemon."""

from __future__ import annotations

import orjson
import pytest
from websockets.exceptions import InvalidStatus

from arqond.core.auth import issue_hs256
from tests.conftest import http_call

SECRET = "telemetry-secret"


async def stream_watcher(daemon, connect_peer, channel="telemetry-stream"):
    """A bus client following integriguard:<channel> and nothing else."""
    watcher = await connect_peer(daemon.ws_url)
    await watcher.command("join_channel", {"room": "integriguard", "channel": channel})
    await watcher.command("leave_channel", {"room": "science", "channel": "general"})
    return watcher


async def test_connected_frame_then_ping_pong(daemon, connect_peer):
    peer = await connect_peer(daemon.telemetry_url)
    hello = peer.welcome
    assert hello["event_type"] == "telemetry_connected"
    assert hello["message"] == "Connected to ArqonBus telemetry"
    host, port = daemon.listeners["telemetry"].rsplit(":", 1)
    assert hello["server_config"] == {"host": host, "port": int(port), "filtered_events": []}
    await peer.send({"type": "ping"})
    pong = await peer.recv()
    assert pong["type"] == "pong" and pong["timestamp"]
    await peer.expect_silence(0.2)


async def test_valid_event_reaches_other_watchers_and_the_bus(daemon, connect_peer):
    bus_watcher = await stream_watcher(daemon, connect_peer)
    sender = await connect_peer(daemon.telemetry_url)
    other = await connect_peer(daemon.telemetry_url)
    await sender.send({"eventType": "cpu_load", "payload": {"load": 0.75, "host": "a"}})
    seen = await other.recv_event("cpu_load")
    assert seen["eventType"] == "cpu_load"
    assert seen["payload"] == {"load": 0.75, "host": "a"}
    assert seen["source"].startswith("arq_client_")
    env = await bus_watcher.recv_type("telemetry")
    assert (env["room"], env["channel"]) == ("integriguard", "telemetry-stream")
    assert env["payload"] == {"eventType": "cpu_load", "client_id": seen["source"],
                              "payload": {"load": 0.75, "host": "a"}}
    assert env["sender"] == seen["source"]
    await sender.expect_silence(0.2)  # no echo to the sender
    await other.expect_silence(0.1)
    await bus_watcher.expect_silence(0.1)


# Each rule of what an event may be is a row of tests/unit/test_telemetry.py; here one
# daemon shows every refusal as a telemetry client sees it (and the binary frame, which only
# the port itself can refuse).
BAD_EVENTS = [
    ('{"payload": {"a": 1}}', "eventType is required"),
    ('{"eventType": "", "payload": {}}', "eventType must not be empty"),
    ('{"eventType": ["x"], "payload": {}}', "eventType must be a string, not an array"),
    ('{"eventType": "' + "e" * 200 + '", "payload": {}}', "at most 128 characters"),
    ('{"eventType": "cpu", "payload": "high"}', "payload must be a JSON object, not a string"),
    ('{"eventType": "cpu"}', "payload is required"),
    ('{"eventType": "cpu", "payload": {}, "room": "x"}', "unknown key(s) 'room'"),
    ('{"eventType": "cpu", "payload": {"blob": "' + "b" * 70000 + '"}}',
     "limited to 65536 bytes"),
    ("not json", "not valid JSON"),
    ("42", "must be a JSON object, not a number"),
    (b'{"eventType": "cpu", "payload": {}}', "binary frames are not supported"),
    ('{"type": "subscribe", "events": "all"}',
     "subscribe: events must be an array of event type names (strings), not a string"),
]


async def test_invalid_events_get_errors_and_reach_nobody(daemon, connect_peer):
    bus_watcher = await stream_watcher(daemon, connect_peer)
    sender = await connect_peer(daemon.telemetry_url)
    other = await connect_peer(daemon.telemetry_url)
    for n, (frame, complaint) in enumerate(BAD_EVENTS):
        await sender.connection.send(frame)
        error = await sender.recv()
        assert error["type"] == "error" and error["error_code"] == "VALIDATION_ERROR"
        assert complaint in error["error"], error
        # The connection stays usable, and the next valid event is delivered whole: it is
        # the first thing the others get, so the refused one reached nobody.
        await sender.send({"eventType": "after", "payload": {"n": n}})
        assert (await other.recv_event("after"))["payload"] == {"n": n}
        assert (await bus_watcher.recv_type("telemetry"))["payload"]["eventType"] == "after"
    await other.expect_silence(0.2)
    await bus_watcher.expect_silence(0.1)
    metrics = http_call(daemon, "GET", "/metrics").body.decode()
    assert f"arqonbus_telemetry_rejected_total {len(BAD_EVENTS)}\n" in metrics
    assert f"arqonbus_telemetry_events_total {len(BAD_EVENTS)}\n" in metrics


async def test_arqonbus_subscribe_is_taken_silently_and_filters_nothing(daemon, connect_peer):
    # ArqonBus's telemetry server logs subscribe/unsubscribe and sends every event anyway.
    watcher = await connect_peer(daemon.telemetry_url)
    sender = await connect_peer(daemon.telemetry_url)
    await watcher.send({"type": "subscribe", "events": ["cpu_load"]})
    await watcher.send({"type": "unsubscribe", "events": ["cpu_load"]})
    await watcher.send({"type": "subscribe"})
    await watcher.send({"type": "ping"})
    assert (await watcher.recv())["type"] == "pong"  # the subscriptions got no answer
    await sender.send({"eventType": "disk_full", "payload": {"n": 1}})
    assert (await watcher.recv_event("disk_full"))["payload"] == {"n": 1}
    # arqond's own events too: the event made integriguard:telemetry-stream on the bus.
    assert (await watcher.recv_event("channel_created"))["payload"]["room"] == "integriguard"
    await watcher.expect_silence(0.2)
    metrics = http_call(daemon, "GET", "/metrics").body.decode()
    assert "arqonbus_telemetry_subscriptions_total 3\n" in metrics
    assert "arqonbus_telemetry_rejected_total 0\n" in metrics


async def test_arqond_events_go_to_watchers(daemon, connect_peer):
    watcher = await connect_peer(daemon.telemetry_url)
    client = await connect_peer(daemon.ws_url + "?client_type=ai-agent")
    connected = await watcher.recv_event("client_connected")
    assert connected["source"] == "arqonbus"
    assert connected["payload"]["client_id"] == client.id
    assert connected["payload"]["transport"] == "ws"
    assert connected["payload"]["client_type"] == "ai-agent"
    await client.command("join_channel", {"room": "lab", "channel": "notes"})
    created = await watcher.recv_event("channel_created")
    # Who created it, as the kernel says (a loopback peer: root here).
    assert created["payload"] == {"room": "lab", "channel": "notes", "created_by": client.id,
                                  "principal": "uid:0", "uid": 0}
    await client.close()
    gone = await watcher.recv_event("client_disconnected")
    assert gone["payload"]["client_id"] == client.id
    await watcher.expect_silence(0.2)


async def test_agent_activity_is_coalesced_into_dashboard_events(make_daemon, connect_peer):
    daemon = make_daemon({"server": {"activity_interval": 0.2}})
    dashboard = await stream_watcher(daemon, connect_peer, "dashboard-events")
    human = await connect_peer(daemon.ws_url + "?client_type=human")
    await human.send({"type": "message", "room": "science:explore", "payload": {"n": 0}})
    await human.recv_type("message_response")
    agent = await connect_peer(daemon.ws_url + "?client_type=ai-agent&screen_name=chatty")
    sent = 25
    for n in range(sent):
        await agent.send({"type": "message", "room": "science:explore", "payload": {"n": n}})
    for _ in range(sent):
        await agent.recv_type("message_response")
    reports = []
    while sum(r["payload"]["messages"] for r in reports) < sent:
        reports.append(await dashboard.recv_type("telemetry"))
    await dashboard.expect_silence(0.5)  # two idle intervals: nothing more, nothing for human
    first = reports[0]
    assert (first["room"], first["channel"]) == ("integriguard", "dashboard-events")
    assert first["payload"]["eventType"] == "agent_activity"
    assert first["payload"]["messages"] == 1
    assert all(r["payload"]["client_id"] == agent.id for r in reports)
    assert all(r["payload"]["screen_name"] == "chatty" for r in reports)
    assert reports[-1]["payload"]["last_message_id"] is not None
    metrics = http_call(daemon, "GET", "/metrics").body.decode()
    assert f"arqonbus_agent_activity_total {len(reports)}\n" in metrics
    assert f"arqonbus_agent_activity_coalesced_total {sent - 1}\n" in metrics


async def test_slow_watcher_is_cut_off_and_others_get_everything(make_daemon, connect_peer):
    daemon = make_daemon({"server": {"client_buffer_bytes": 65536}})
    sender = await connect_peer(daemon.telemetry_url)
    fast = await connect_peer(daemon.telemetry_url)
    # max_queue=1 makes the client stop reading from its socket after one unread frame.
    slow = await connect_peer(daemon.telemetry_url, max_queue=1)
    # The first event creates integriguard:telemetry-stream, which is itself an event.
    await sender.send({"eventType": "warmup", "payload": {}})
    await fast.recv_event("warmup")
    created = await fast.recv_event("channel_created")
    assert (created["payload"]["room"], created["payload"]["channel"]) == \
        ("integriguard", "telemetry-stream")
    blob = "z" * 60000
    cut_off = []
    count = 0
    while not cut_off:
        await sender.send({"eventType": "bulk", "payload": {"n": count, "blob": blob}})
        # client_slow follows right after the bulk frame whose broadcast found the slow one.
        frame = await fast.recv()
        if frame["event_type"] == "client_slow":
            cut_off.append(frame)
            frame = await fast.recv()
        assert (frame["event_type"], frame["payload"]["n"]) == ("bulk", count)
        count += 1
        assert count < 2000, "the slow watcher was never cut off"
    assert cut_off[0]["payload"]["transport"] == "telemetry"
    await sender.send({"eventType": "bulk", "payload": {"n": count, "blob": ""}})
    assert (await fast.recv_event("bulk"))["payload"]["n"] == count
    await fast.expect_silence(0.2)
    daemon.wait_for_line("telemetry watcher cut off")
    metrics = http_call(daemon, "GET", "/metrics").body.decode()
    assert "arqonbus_telemetry_slow_consumers_total 1\n" in metrics
    assert "arqonbus_telemetry_connections 2\n" in metrics
    assert slow.connection.close_code in (None, 4008)  # it has not read that far yet


async def test_telemetry_handshake_follows_jwt_rules(make_daemon, connect_peer):
    daemon = make_daemon({"auth": {"enabled": True, "jwt_secret": SECRET}})
    with pytest.raises(InvalidStatus) as refused:
        await connect_peer(daemon.telemetry_url)
    assert refused.value.response.status_code == 401
    assert orjson.loads(refused.value.response.body) == {"error": "Unauthorized",
                                                         "details": "Missing bearer token"}
    token = issue_hs256({"sub": "dash"}, SECRET)
    peer = await connect_peer(daemon.telemetry_url + f"?token={token}")
    assert peer.welcome["event_type"] == "telemetry_connected"
