"""The I/O-free core, without any socket: envelopes, routing, fan-out, commands."""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
import pytest

from arqond.core import envelope
from arqond.core.auth import AuthError, issue_hs256, token_from, verify_hs256
from arqond.core.bus import Bus, BusSettings
from arqond.core.envelope import EnvelopeError
from arqond.core.router import Router, RoutingError, split_target


class ListSink:
    def __init__(self, capacity: int = 10**9) -> None:
        self.frames: list[dict] = []
        self.capacity = capacity
        self.closed: tuple[int, str] | None = None

    def send(self, frame: bytes) -> bool:
        if len(self.frames) >= self.capacity:
            return False
        self.frames.append(orjson.loads(frame))
        return True

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def test_serialize_key_order_and_optional_keys():
    out = orjson.loads(envelope.serialize({"id": "i", "timestamp": "t", "type": "message",
                                           "room": "r", "status": None}))
    assert list(out) == ["id", "timestamp", "type", "version", "payload", "args", "metadata",
                         "room"]


def test_parse_aliases_and_errors():
    env = envelope.parse('{"type":"message","payload":{"a":1},"from":"x"}', 64)
    assert env["from_client"] == "x" and "from" not in env
    with pytest.raises(EnvelopeError) as exc:
        envelope.parse('{"payload":{},"content":1}', 64)
    assert "'content'" in exc.value.message
    assert envelope.parse('{"payload":{"a":1}}', 64)["type"] == "message"  # the default type
    name, args = envelope.command_of(envelope.parse(
        '{"type":"command","payload":{"command":"ping","parameters":{"x":1}}}', 64))
    assert (name, args) == ("ping", {"x": 1})


def test_ids_are_unique_and_shaped():
    ids = envelope.IdGenerator()
    seen = {ids.next() for _ in range(1000)}
    assert len(seen) == 1000
    parts = next(iter(seen)).split("_")
    assert parts[0] == "arq" and len(parts) == 4 and len(parts[3]) == 6


@pytest.mark.parametrize("ns", [
    1_700_000_000_000_000_000,          # whole second: no fraction, as isoformat leaves it out
    1_700_000_000_000_001_999,          # one microsecond; nanoseconds are dropped, not rounded
    1_700_000_000_999_999_999,          # the last microsecond of a second
    1_700_000_001_000_000_000,          # the next second: the cached date and time move on
    1_704_067_199_500_000_000,          # the last second of 2023
    1_704_067_200_000_250_000,          # and the first of 2024
])
def test_now_iso_matches_datetime_isoformat(monkeypatch, ns):
    clock = envelope._IsoClock()
    monkeypatch.setattr(envelope.time, "time_ns", lambda: ns - 1_000_000_000)
    clock()   # a second earlier, so the cache holds another second
    monkeypatch.setattr(envelope.time, "time_ns", lambda: ns)
    expected = (datetime(1970, 1, 1) + timedelta(microseconds=ns // 1000)).isoformat()
    assert clock() == expected


def test_split_target():
    assert split_target("science:explore", None) == ("science", "explore")
    assert split_target(None, "science:explore") == ("science", "explore")
    assert split_target("science", "explore") == ("science", "explore")
    assert split_target("science:", None) == ("science", None)


def test_router_dedups_room_and_wildcards():
    router = Router()
    bus = Bus(BusSettings(default_room=None, default_channel=None), router)
    sink = ListSink()
    client = bus.attach(sink, "test")
    router.join(client, "a", "x")
    router.join(client, "a", "y")
    router.join(client, "*", "x")
    router.join(client, "a", "*")
    assert list(router.recipients("a", None)) == [client]
    assert list(router.recipients("a", "x")) == [client]
    assert list(router.recipients("b", "x")) == [client]
    assert list(router.recipients("b", "y")) == []
    router.drop(client)
    assert not router.patterns and not router.channel("a", "x").members
    with pytest.raises(RoutingError):
        router.join(client, "a", "bell\x07")  # control characters are never in a name


def test_fanout_serializes_once_and_cuts_off_full_sinks():
    bus = Bus()
    sender_sink, fast_sink, full_sink = ListSink(), ListSink(), ListSink(capacity=1)
    sender = bus.attach(sender_sink, "test")
    bus.attach(fast_sink, "test")
    full = bus.attach(full_sink, "test")  # holds only its welcome
    bus.receive(sender, '{"type":"message","payload":{"n":1}}')
    assert fast_sink.frames[-1]["payload"] == {"n": 1}
    assert full_sink.closed == (4008, "slow consumer: outgoing buffer full")
    assert full.id not in bus.clients and bus.stats.slow_consumers_total == 1
    assert sender_sink.frames[-1]["type"] == "message_response"
    bus.receive(sender, '{"type":"message","payload":{"n":2}}')
    assert fast_sink.frames[-1]["payload"] == {"n": 2}
    assert bus.stats.deliveries_total == 2


def test_server_publish_creates_channel_and_reaches_wildcards():
    bus = Bus(BusSettings(default_room=None, default_channel=None))
    sink = ListSink()
    client = bus.attach(sink, "test")
    bus.router.join(client, "*", "narrative")
    events = []
    bus.plug(on_event=lambda event, fields: events.append(event))
    delivered = bus.publish({"room": "dreader", "channel": "narrative", "sender": "dreader",
                             "payload": {"content": "x"}})
    assert delivered == 1
    assert sink.frames[-1]["type"] == "event" and sink.frames[-1]["room"] == "dreader"
    assert "channel_created" in events
    assert bus.router.history("dreader", "narrative")[0]["payload"] == {"content": "x"}


def test_jwt_round_trip_and_token_locations():
    token = issue_hs256({"role": "admin", "exp": 2000}, "k")
    assert verify_hs256(token, "k", now=1000)["role"] == "admin"
    with pytest.raises(AuthError, match="expired"):
        verify_hs256(token, "k", now=3000)
    with pytest.raises(AuthError, match="bad signature"):
        verify_hs256(token, "other", now=1000)
    assert token_from({"Authorization": "Bearer abc"}, {"token": "q"}) == "abc"
    assert token_from({}, {"auth_token": "q"}) == "q"
    assert token_from({"Authorization": "Basic abc"}, {}) is None
