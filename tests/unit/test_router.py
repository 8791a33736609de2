"""Rooms, channels, memberships, wildcards and history windows (arqond/core/router.py)."""

from __future__ import annotations

import re

import orjson
import pytest

from arqond.core.clients import Client
from arqond.core.errors import ErrorCode
from arqond.core.history import History, HistoryLimits
from arqond.core.router import Router, RoutingError, check_name, split_target


def client() -> Client:
    return Client(None, "test")


def refusal(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(RoutingError) as refused:
        call(*args, **kwargs)
    return refused.value.code, refused.value.message


# Issue 19: names will accept any string within length and control-character limits; the
# rows marked "issue 19" flip to accepted then.
NAMES = [
    ("general", True),
    ("a", True),
    ("A.b_c-9", True),
    ("x" * 128, True),
    ("x" * 129, False),
    ("", False),
    ("-x", True),           # any string ArqonBus accepts (issue 19)
    (".hidden", True),
    ("a b", True),
    ("../x", True),
    ("team/alpha", True),
    ("alice@lab", True),
    ("_private", True),
    ("é", True),
    ("日本", True),
    ("a:b", False),         # ':' separates room from channel
    ("*", False),           # the wildcard
    ("a\x07b", False),      # control characters
    ("\x7f", False),
    ("tab\there", False),
]


@pytest.mark.parametrize("name, valid", NAMES)
def test_name_rule(name, valid):
    if valid:
        assert check_name("channel", name) == name
    else:
        assert refusal(check_name, "channel", name) == (
            ErrorCode.VALIDATION_ERROR,
            f"invalid channel name {name!r}: 1 to 128 characters, no control characters, no "
            "':' (it separates room from channel), and not '*' alone (the wildcard)")


def test_a_wildcard_is_a_name_only_where_allowed_and_a_non_string_never():
    assert check_name("room", "*", wildcard=True) == "*"
    assert refusal(check_name, "room", 5)[0] == ErrorCode.VALIDATION_ERROR   # type: ignore


@pytest.mark.parametrize("room, channel, expected", [
    ("science:explore", None, ("science", "explore")),
    (None, "science:explore", ("science", "explore")),
    ("science", "explore", ("science", "explore")),
    ("science:", None, ("science", None)),
    ("science:explore", "explore", ("science", "explore")),   # the same channel twice
    ("science:", "design", ("science", "design")),
    ("", "", (None, None)),
    (None, "explore", (None, "explore")),
    (":x", None, (None, "x")),
])
def test_split_target(room, channel, expected):
    assert split_target(room, channel) == expected


def test_a_room_that_names_a_channel_and_another_channel_are_refused_not_guessed():
    with pytest.raises(RoutingError, match=re.escape(
            "room science:explore names channel 'explore' and channel names 'design': ':' "
            "separates room from channel, so give one")):
        split_target("science:explore", "design")


def test_ensure_creates_once_and_create_refuses_an_existing_channel():
    router = Router(History(HistoryLimits(3, 1000, 10000)))
    channel, created = router.ensure_channel("lab", "bench", created_by="me", kind="k",
                                             description="d")
    assert created and router.ensure_channel("lab", "bench") == (channel, False)
    assert channel.metadata() == {"created_at": channel.created_at, "created_by": "me",
                                  "type": "k", "hardcoded": False, "description": "d"}
    assert channel.summary()["messages"] == 0 and len(channel.history) == 0
    assert refusal(router.create_channel, "lab", "bench") == (
        ErrorCode.CHANNEL_EXISTS, "channel lab:bench already exists")
    assert refusal(router.ensure_channel, "lab", "x\x00")[0] == ErrorCode.VALIDATION_ERROR
    assert refusal(router.ensure_channel, "a\x07", "x")[0] == ErrorCode.VALIDATION_ERROR
    assert router.channel_count() == 1 and router.channel("nope", "x") is None


def test_delete_refuses_hardcoded_and_non_empty_channels_and_drops_an_empty_room():
    router = Router()
    router.ensure_channel("science", "general", hardcoded=True)
    router.ensure_channel("lab", "bench")
    member = client()
    router.join(member, "lab", "bench")
    assert refusal(router.delete_channel, "science", "general") == (
        ErrorCode.CHANNEL_PROTECTED, "channel science:general is hard-coded and cannot be deleted")
    assert refusal(router.delete_channel, "lab", "bench")[0] == ErrorCode.CHANNEL_NOT_EMPTY
    router.leave(member, "lab", "bench")
    assert router.delete_channel("lab", "bench").name == "bench"
    assert "lab" not in router.rooms
    assert refusal(router.delete_channel, "lab", "bench") == (
        ErrorCode.NOT_FOUND, "channel lab:bench does not exist")


def test_recipients_are_each_subscriber_once_with_wildcards():
    router = Router()
    member = client()
    assert router.join(member, "a", "x") is True
    assert router.join(member, "a", "x") is False
    router.join(member, "a", "y")
    router.join(member, "*", "x")
    router.join(member, "a", "*")
    assert list(router.recipients("a", None)) == [member]
    assert list(router.recipients("a", "x")) == [member]
    assert list(router.recipients("b", "x")) == [member]
    assert list(router.recipients("b", "y")) == []
    assert list(router.recipients("b", None)) == [member]   # a room-wide message: *:x too
    router.drop(member)
    assert not router.patterns and not router.channel("a", "x").members
    assert member.subscriptions == set()
    assert refusal(router.join, member, "a", "bell\x07")[0] == ErrorCode.VALIDATION_ERROR


def test_recipients_keep_join_order_and_merge_room_patterns():
    router = Router()
    first, second, watcher = client(), client(), client()
    router.join(first, "lab", "bench")
    router.join(second, "lab", "bench")
    router.join(watcher, "lab", "*")
    assert list(router.recipients("lab", "bench")) == [first, second, watcher]
    assert list(router.recipients("lab", None)) == [first, second, watcher]
    assert list(router.recipients("ghost", "x")) == []
    assert list(router.recipients("ghost", None)) == []


def test_leave_refuses_a_non_member_and_forgets_an_empty_pattern():
    router = Router()
    one, two = client(), client()
    router.join(one, "*", "x")
    router.join(two, "*", "x")
    assert refusal(router.leave, one, "lab", "bench") == (ErrorCode.NOT_A_MEMBER,
                                                          "client is not in lab:bench")
    router.leave(one, "*", "x")
    assert router.patterns == {("*", "x"): {two: None}}
    router.leave(two, "*", "x")
    assert router.patterns == {}


def test_leaving_a_channel_that_is_gone_forgets_the_subscription():
    router = Router()
    member = client()
    member.subscriptions.add(("lab", "gone"))
    router.leave(member, "lab", "gone")
    assert member.subscriptions == set()


def test_history_records_channel_and_room_messages_in_order_within_the_window():
    router = Router(History(HistoryLimits(2, 1000, 10000)))
    router.ensure_channel("lab", "a")
    router.ensure_channel("lab", "b")
    for n, channel in enumerate(["a", None, "b", "a", "a"]):
        router.record("lab", channel, float(n), orjson.dumps({"n": n}))
    router.record("ghost", "x", 9.0, b'{"n":9}')   # no such room: not kept
    assert [e["n"] for e in router.history("lab", "a")] == [3, 4]
    assert [e["n"] for e in router.history("lab", None)] == [1, 2, 3, 4]
    found = router.channel("lab", "a")
    assert (found.message_count, found.summary()["last_activity"]) == (
        3, "1970-01-01T00:00:04")
    assert refusal(router.history, "ghost", None) == (ErrorCode.NOT_FOUND,
                                                      "room ghost does not exist")
    assert refusal(router.history, "lab", "c") == (ErrorCode.NOT_FOUND,
                                                   "channel lab:c does not exist")
    router.record("lab", "gone", 10.0, b'{"n":10}')   # no such channel: not kept
    assert [e["n"] for e in router.history("lab", None)] == [1, 2, 3, 4]
