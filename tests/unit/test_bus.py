"""The Bus's delivery engine in-process (arqond/core/bus.py): attaching and detaching
clients, one serialization per fan-out, cutting off a full sink, server publishes, parts
plugged in, and the snapshot that status and /status report."""

from __future__ import annotations

import pytest

from arqond.core.bus import Bus, BusSettings
from arqond.core.clients import CLOSE_SLOW_CONSUMER
from arqond.core.errors import ErrorCode
from tests.unit.harness import BusHarness, ListSink, assert_error


def test_attach_welcomes_joins_the_default_channel_and_announces_the_client():
    bus = BusHarness()
    client = bus.connect(transport="ws", peer="127.0.0.1:5")
    welcome = client.welcome
    assert list(welcome)[:7] == ["id", "timestamp", "type", "version", "payload", "args",
                                 "metadata"]
    assert (welcome["type"], welcome["sender"], welcome["version"]) == ("message", "arqonbus",
                                                                        "1.0")
    assert welcome["payload"] == {"welcome": "Connected to ArqonBus", "client_id": client.id}
    assert client.client.subscriptions == {("science", "general")}
    assert (client.client.room, client.client.channel) == ("science", "general")
    assert bus.events_named("client_connected") == [{
        "client_id": client.id, "transport": "ws", "client_type": "human",
        "peer": "127.0.0.1:5"}]
    assert bus.bus.stats.by_transport == {"ws": 1}


def test_by_default_a_new_client_joins_science_general():
    # Issue 19: clients are no longer joined anywhere by default; this row flips then.
    assert (BusSettings().default_room, BusSettings().default_channel) == ("science", "general")
    client = Bus().attach(ListSink(), "test")
    assert client.subscriptions == {("science", "general")}


def test_a_transport_may_skip_the_welcome_and_the_default_channel():
    bus = BusHarness()
    client = bus.connect(welcome=False, join_default=False)
    client.assert_silent()
    assert client.client.subscriptions == set() and client.client.room is None


def test_without_a_default_channel_nobody_is_joined():
    bus = BusHarness(default_room=None, default_channel=None)
    assert bus.connect().client.subscriptions == set()


def test_bad_identity_at_attach_is_reported_and_nothing_of_it_applied():
    bus = BusHarness()
    client = bus.connect(identity={"type": "ai-agent", "colour": "red", "avatar": ""})
    error = assert_error(client.take(), ErrorCode.VALIDATION_ERROR,
                         "unknown identity field 'colour'; avatar must be a string of 1 to 256 "
                         "characters")
    assert error["payload"]["errors"] == ["unknown identity field 'colour'",
                                          "avatar must be a string of 1 to 256 characters"]
    assert client.client.type == "human"
    assert client.id in bus.bus.clients   # still connected


def test_detach_leaves_every_subscription_once():
    bus = BusHarness()
    client = bus.connect()
    client.ok("join_channel", {"room": "*:narrative"})
    bus.bus.detach(client.client, reason="closed by peer")
    bus.bus.detach(client.client)
    assert bus.events_named("client_disconnected") == [{
        "client_id": client.id, "transport": "test", "reason": "closed by peer"}]
    assert not client.client.open and not bus.bus.router.patterns
    assert not bus.bus.router.channel("science", "general").members


def test_fanout_serializes_once_and_cuts_off_full_sinks():
    bus = BusHarness()
    sender, fast = bus.connect(), bus.connect()
    full = bus.connect(capacity=1)   # holds only its welcome
    sender.send({"type": "message", "payload": {"n": 1}})
    assert fast.next("message")["payload"] == {"n": 1}
    assert full.sink.closed == (CLOSE_SLOW_CONSUMER, "slow consumer: outgoing buffer full")
    assert full.id not in bus.bus.clients and bus.bus.stats.slow_consumers_total == 1
    assert bus.events_named("client_slow") == [{"client_id": full.id, "transport": "test"}]
    assert bus.events_named("client_disconnected")[-1]["reason"] == "slow consumer"
    sender.send({"type": "message", "payload": {"n": 2}})
    assert fast.next("message")["payload"] == {"n": 2}
    assert bus.bus.stats.deliveries_total == 2


def test_a_reply_that_does_not_fit_cuts_the_client_off_once():
    bus = BusHarness()
    client = bus.connect(capacity=1)
    assert client.send({"type": "command", "command": "ping"}) == []
    assert client.sink.closed is not None and client.id not in bus.bus.clients
    bus.bus.cut_off(client.client)   # already gone: nothing more happens
    assert bus.bus.stats.slow_consumers_total == 1
    bus.bus.send(client.client, {"type": "message", "payload": {}})   # to a closed client
    assert len(client.sink.frames) == 1


def test_server_publish_creates_the_channel_and_reaches_wildcards():
    bus = BusHarness(default_room=None, default_channel=None)
    client = bus.connect()
    client.ok("join_channel", {"room": "*", "channel": "narrative"})
    delivered = bus.bus.publish({"room": "dreader", "channel": "narrative", "sender": "dreader",
                                 "payload": {"content": "x"}})
    assert delivered == 1
    got = client.next("event")   # a server publish without a type is an event
    assert (got["room"], got["sender"]) == ("dreader", "dreader") and got["id"] and \
        got["timestamp"]
    assert bus.events_named("channel_created") == [
        {"room": "dreader", "channel": "narrative", "created_by": "dreader"}]
    assert bus.bus.router.history("dreader", "narrative")[0]["payload"] == {"content": "x"}


def test_server_publish_keeps_given_ids_may_skip_creation_and_excludes_one():
    bus = BusHarness()
    a, b = bus.connect(), bus.connect()
    seen = []
    bus.bus.plug(on_message=lambda env, client: seen.append(client))
    assert bus.bus.publish({"id": "x1", "timestamp": "t", "type": "message", "room": "science",
                            "channel": "general", "payload": {}}, exclude=a.client) == 1
    assert b.next("message")["id"] == "x1" and a.take() == []
    assert seen == [None]   # observers see server publishes without a client
    assert bus.bus.publish({"room": "lab", "channel": "bench", "payload": {}},
                           create=False) == 0
    assert bus.bus.router.channel("lab", "bench") is None
    assert bus.bus.publish({"room": "science", "payload": {"whole": "room"}}) == 2


def test_plug_adds_commands_listeners_observers_intercepts_and_the_inspector():
    bus = Bus(BusSettings())
    inspector = object()
    bus.plug(inspector=inspector)   # type: ignore[arg-type]
    bus.plug()
    assert bus.inspector is inspector
    assert bus.listeners == [] and bus.observers == [] and bus.intercepts == {}


def test_the_snapshot_counts_what_happened():
    bus = BusHarness()
    a, b = bus.connect(), bus.connect(transport="ws", identity={"type": "bot"})
    a.send({"type": "message", "payload": {"n": 1}})
    a.command("nope")
    snapshot = bus.bus.snapshot()
    assert snapshot["service"] == "arqonbus" and snapshot["protocol"] == "1.0"
    assert snapshot["connections"] == {"active": 2, "total": 2,
                                       "by_transport": {"test": 1, "ws": 1},
                                       "by_type": {"human": 1, "bot": 1}}
    assert (snapshot["rooms"], snapshot["channels"]) == (1, 7)
    assert snapshot["messages"] == {"total": 1, "deliveries": 1, "commands": 1, "errors": 1,
                                    "policy_blocks": 0, "slow_consumers": 0}
    assert snapshot["uptime_seconds"] >= 0
    assert b.take()[0]["payload"] == {"n": 1}


@pytest.mark.parametrize("settings, hardcoded", [(BusSettings(), 7),
                                                 (BusSettings(history_size=3), 7)])
def test_the_science_channels_are_there_from_the_start_and_hardcoded(settings, hardcoded):
    bus = Bus(settings)
    room = bus.router.rooms["science"]
    assert sum(channel.hardcoded for channel in room.channels.values()) == hardcoded
    assert bus.router.histories.limits.messages == settings.history_size
    assert all(channel.history in bus.router.histories.windows
               for channel in room.channels.values())


@pytest.mark.parametrize("capacity, identity", [(0, None), (1, {"colour": "red"})],
                         ids=["welcome refused", "identity error refused"])
def test_a_client_cut_off_while_attaching_is_left_in_no_channel(capacity, identity):
    bus = BusHarness()
    client = bus.bus.attach(ListSink(capacity), "test", identity=identity)
    assert not client.open and client.id not in bus.bus.clients
    assert client not in bus.bus.router.channel("science", "general").members
    assert [event for event, _ in bus.events][-1] == "client_disconnected"
