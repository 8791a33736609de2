"""Every built-in command in-process (arqond/core/commands.py): what it answers, each refusal
with its exact code and text, who may run it, and its limits at their bound."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from arqond.core.commands import (HISTORY_GET_MAX, HISTORY_REPLAY_MAX, CommandRegistry,
                                  builtin_commands)
from arqond.core.errors import ErrorCode
from tests.unit.harness import BusHarness, assert_refused, beside_stream

SCIENCE = ["general", "explore", "hypothesize", "design", "execute", "interpret", "share"]
TARGET_NEEDED = "{} requires room and channel (as {{\"room\": R, \"channel\": C}} or \"R:C\")"
BAD_CHANNEL = ("invalid channel name 'x\\x07': 1 to 128 characters, no control characters, "
               "no ':' (it separates room from channel), and not '*' alone (the wildcard)")


@pytest.fixture
def bus():
    return BusHarness()


# -- arguments, admin, unknown commands: the rules every command shares ------------------------

@pytest.mark.parametrize("name, args, code, text", [
    ("op.nope", {}, ErrorCode.UNKNOWN_COMMAND,
     "unknown command 'op.nope'; the help command lists them"),
    ("history", {"room": "science", "limit": "ten"}, ErrorCode.VALIDATION_ERROR,
     "argument 'limit' must be int, not a string"),
    ("history", {"room": "science", "limit": True}, ErrorCode.VALIDATION_ERROR,
     "argument 'limit' must be int, not a boolean"),
    ("history", {"room": 5}, ErrorCode.VALIDATION_ERROR,
     "argument 'room' must be str, not a number"),
    ("op.store.get", {}, ErrorCode.VALIDATION_ERROR, "op.store.get requires argument 'key'"),
    ("channel_info", {"room": "science", "channel": ["general"]}, ErrorCode.VALIDATION_ERROR,
     "argument 'channel' must be str, not an array"),
    ("history.replay", {"room": "science", "from_ts": "2000-01-01", "to_ts": "2999-01-01",
                        "strict_sequence": "yes"}, ErrorCode.VALIDATION_ERROR,
     "argument 'strict_sequence' must be bool, not a string"),
])
def test_bad_arguments_and_unknown_commands_are_refused_by_name(bus, name, args, code, text):
    client = bus.connect()
    assert_refused(client.command(name, args), code, text)
    assert client.ok("ping")["pong"] is True   # nothing else was disturbed


@pytest.mark.parametrize("name, args", [
    ("create_channel", {"room": "ops:alerts"}),
    ("delete_channel", {"room": "science:share"}),
])
def test_admin_commands_refuse_other_clients_and_change_nothing(bus, name, args):
    user = bus.connect()
    assert_refused(user.command(name, args), ErrorCode.AUTHORIZATION_ERROR,
                   f"{name} is for admin clients only")
    assert [c["channel"] for c in user.ok("list_channels")["channels"]] == SCIENCE


def test_a_token_with_role_admin_makes_an_admin_client(bus):
    admin = bus.connect(claims={"role": "Admin"})
    assert admin.ok("create_channel", {"room": "ops:alerts"})["channel"] == "alerts"


def test_a_handler_that_fails_with_a_routing_error_answers_its_code():
    registry = CommandRegistry()
    registry.register("lookup", lambda ctx: ctx.bus.router.require_room("atlantis"))
    harness = BusHarness()
    harness.bus.commands = registry
    client = harness.connect()
    assert_refused(client.command("lookup"), ErrorCode.NOT_FOUND, "room atlantis does not exist")


# -- status, ping, help, identify ------------------------------------------------------------

def test_status_reports_counts_server_and_the_asking_client(bus):
    a, b = bus.connect(), bus.connect(transport="control")
    a.send({"type": "message", "payload": {"n": 1}})
    data = a.ok("status")
    assert data["connections"] == {"active": 2, "total": 2,
                                   "by_transport": {"test": 1, "control": 1},
                                   "by_type": {"human": 2}}
    assert (data["rooms"], data["channels"]) == (1, 7)
    assert data["messages"] == {"total": 1, "deliveries": 1, "commands": 1, "errors": 0,
                                "policy_blocks": 0, "slow_consumers": 0}
    assert data["server"]["status"] == "running" and data["server"]["version"] == "0.1.0"
    assert data["server"]["uptime"] == data["uptime_seconds"]
    assert data["client"]["client_id"] == a.id and data["service"] == "arqonbus"
    assert b.take()[0]["payload"] == {"n": 1}


def test_ping_answers_pong_with_the_client_id(bus):
    client = bus.connect()
    response = client.command("ping")
    assert response["payload"]["message"] == "pong" and response["command"] == "ping"
    data = response["payload"]["data"]
    assert data["pong"] is True and data["client_id"] == client.id and data["timestamp"]


def test_help_lists_every_command_with_its_admin_flag(bus):
    response = bus.connect().command("help")
    commands = {c["command"]: c["admin"] for c in response["payload"]["data"]["commands"]}
    assert response["payload"]["message"] == f"{len(commands)} command(s)"
    assert commands == {name: name in ("create_channel", "delete_channel")
                        for name in [*builtin_commands().names(), *bus.store.commands()]}
    assert sorted(commands) == list(commands)


@pytest.mark.parametrize("name", ["identify", "hello"])
def test_identify_sets_identity_fields_up_to_their_bound(bus, name):
    client = bus.connect()
    data = client.ok(name, {"type": "ai-agent", "screen_name": "s" * 256, "avatar": "a.png",
                            "personality": "curious"})
    assert (data["type"], data["screen_name"], data["avatar"], data["personality"]) == \
        ("ai-agent", "s" * 256, "a.png", "curious")
    assert client.client.is_agent


@pytest.mark.parametrize("args, text", [
    ({"colour": "red"}, "unknown identity field 'colour'"),
    ({"screen_name": "s" * 257}, "screen_name must be a string of 1 to 256 characters"),
    ({"screen_name": ""}, "screen_name must be a string of 1 to 256 characters"),
    ({"avatar": 5, "colour": "red"},
     "avatar must be a string of 1 to 256 characters; unknown identity field 'colour'"),
])
def test_identify_refuses_bad_fields_and_applies_none_of_them(bus, args, text):
    client = bus.connect()
    client.ok("identify", {"screen_name": "Ada"})
    assert_refused(client.command("identify", {"type": "bot", **args}),
                   ErrorCode.VALIDATION_ERROR, text)
    assert (client.client.screen_name, client.client.type) == ("Ada", "human")


# -- channels ------------------------------------------------------------------------------

def test_create_channel_makes_and_announces_a_channel(bus):
    admin = bus.admin()
    response = admin.command("create_channel", {"room": "ops", "channel": "alerts",
                                                "type": "alerts", "description": "pager"})
    assert response["payload"]["message"] == "Channel ops:alerts created"
    data = response["payload"]["data"]
    assert (data["room"], data["channel"], data["type"], data["description"]) == \
        ("ops", "alerts", "alerts", "pager")
    assert (data["created_by"], data["hardcoded"], data["participants"]) == (admin.id, False, 0)
    assert bus.events_named("channel_created")[-1] == {
        "room": "ops", "channel": "alerts", "created_by": admin.id, "principal": "uid:0",
        "uid": 0}


def test_a_channel_created_with_a_retention_keeps_it_over_the_defaults(bus):
    admin = bus.admin()
    default = bus.bus.router.retention
    data = admin.ok("create_channel", {"room": "ops:alerts",
                                       "retention": {"messages": 3, "age": 60}})
    assert data["stream"]["retention"] == {"messages": 3, "bytes": default.bytes, "age": 60}
    assert bus.bus.router.channel("ops", "alerts").stream.retention == \
        default._replace(messages=3, age=60)
    # Without one, a channel's stream keeps what the [streams] settings say.
    assert admin.ok("create_channel", {"room": "ops:pages"})["stream"]["retention"] == \
        default._asdict()


@pytest.mark.parametrize("args, code, text", [
    ({"room": "science:general"}, ErrorCode.CHANNEL_EXISTS,
     "channel science:general already exists"),
    ({"room": "science", "channel": "x\x07"}, ErrorCode.VALIDATION_ERROR, BAD_CHANNEL),
    ({"room": "ops"}, ErrorCode.VALIDATION_ERROR, TARGET_NEEDED.format("create_channel")),
    ({"room": "ops", "channel": "a", "description": 7}, ErrorCode.VALIDATION_ERROR,
     "argument 'description' must be str, not a number"),
    ({"room": "ops:a", "retention": 5}, ErrorCode.VALIDATION_ERROR,
     "retention must be an object with messages, bytes and/or age"),
    ({"room": "ops:a", "retention": {"count": 5}}, ErrorCode.VALIDATION_ERROR,
     "retention must be an object with messages, bytes and/or age"),
    ({"room": "ops:a", "retention": {"messages": 0}}, ErrorCode.VALIDATION_ERROR,
     "retention.messages must be a positive integer"),
    ({"room": "ops:a", "retention": {"bytes": 1.5}}, ErrorCode.VALIDATION_ERROR,
     "retention.bytes must be a positive integer"),
    ({"room": "ops:a", "retention": {"age": -1}}, ErrorCode.VALIDATION_ERROR,
     "retention.age must be a positive number of seconds (0: any age)"),
    ({"room": "ops:a", "retention": {"messages": True}}, ErrorCode.VALIDATION_ERROR,
     "retention.messages must be a positive integer"),
])
def test_create_channel_refusals(bus, args, code, text):
    admin = bus.admin()
    channels = admin.ok("list_channels")["channels"]
    assert_refused(admin.command("create_channel", args), code, text)
    assert admin.ok("list_channels")["channels"] == channels


def test_the_current_channel_is_the_target_when_none_is_named(bus):
    admin = bus.admin()
    assert_refused(admin.command("create_channel"), ErrorCode.CHANNEL_EXISTS,
                   "channel science:general already exists")
    assert admin.ok("create_channel", {"name": "notes"})["room"] == "science"
    assert admin.ok("channel_info")["channel"] == "general"


def test_a_client_with_no_current_channel_must_name_one():
    bus = BusHarness(default_room=None, default_channel=None)
    client = bus.connect()
    for name in ("channel_info", "join_channel", "leave_channel", "history"):
        assert_refused(client.command(name), ErrorCode.VALIDATION_ERROR,
                       TARGET_NEEDED.format(name))


def test_delete_channel_removes_an_empty_channel_and_its_room_with_the_last(bus):
    admin = bus.admin()
    admin.ok("create_channel", {"room": "ops:alerts"})
    admin.ok("create_channel", {"room": "ops:pager"})
    response = admin.command("delete_channel", {"room": "ops:alerts"})
    assert response["payload"]["message"] == "Channel ops:alerts deleted"
    data = response["payload"]["data"]
    assert (data["channel"], data["deleted_by"]) == ("alerts", admin.id) and data["deleted_at"]
    assert bus.events_named("channel_deleted") == [{"room": "ops", "channel": "alerts",
                                                    "deleted_by": admin.id,
                                                    "principal": "uid:0", "uid": 0}]
    assert "ops" in bus.bus.router.rooms
    admin.ok("delete_channel", {"room": "ops", "channel": "pager"})
    assert "ops" not in bus.bus.router.rooms


@pytest.mark.parametrize("target, code, text", [
    ("science:explore", ErrorCode.CHANNEL_PROTECTED,
     "channel science:explore is hard-coded and cannot be deleted"),
    ("lab:bench", ErrorCode.CHANNEL_NOT_EMPTY,
     "channel lab:bench still has 1 participant(s); it can be deleted only when empty"),
    ("lab:nothing", ErrorCode.NOT_FOUND, "channel lab:nothing does not exist"),
])
def test_delete_channel_refusals(bus, target, code, text):
    admin, member = bus.admin(), bus.connect()
    member.ok("join_channel", {"room": "lab:bench"})
    assert_refused(admin.command("delete_channel", {"room": target}), code, text)
    assert bus.bus.router.channel("lab", "bench") is not None
    assert bus.bus.router.channel("science", "explore") is not None


def test_join_creates_a_missing_channel_once_and_makes_it_current(bus):
    a, b = bus.connect(), bus.connect()
    response = a.command("join_channel", {"room": "lab", "channel": "bench"})
    assert response["payload"]["message"] == "Joined lab:bench"
    data = response["payload"]["data"]
    assert (data["created"], data["wildcard"], data["joined_by"]) == (True, False, a.id)
    assert (data["created_by"], data["participants"], data["hardcoded"]) == (a.id, 1, False)
    assert (a.client.room, a.client.channel) == ("lab", "bench")
    assert b.ok("join_channel", {"room": "lab:bench"})["created"] is False
    counts = {(c["room"], c["channel"]): c["participants"]
              for c in a.ok("list_channels")["channels"]}
    assert counts[("lab", "bench")] == 2 and counts[("science", "general")] == 2
    assert bus.events_named("channel_created")[-1] == {
        "room": "lab", "channel": "bench", "created_by": a.id,
        **a.client.principal.log_fields()}
    assert len(bus.events_named("channel_created")) == 1


@pytest.mark.parametrize("target", [{"room": "*", "channel": "narrative"}, {"room": "lab:*"}])
def test_a_wildcard_join_subscribes_without_creating_or_moving_the_current_channel(bus, target):
    client = bus.connect()
    data = client.ok("join_channel", target)
    assert (data["created"], data["wildcard"]) == (False, True)
    assert "participants" not in data
    assert (client.client.room, client.client.channel) == ("science", "general")
    assert bus.bus.router.channel_count() == 7


def test_a_wildcard_join_follows_every_matching_channel(bus):
    watcher, a = bus.connect(), bus.connect()
    watcher.ok("join_channel", {"room": "*", "channel": "narrative"})
    watcher.ok("leave_channel", {"room": "science:general"})
    for zgent in ("alpha", "beta"):
        a.ok("join_channel", {"room": f"{zgent}:narrative"})
        a.send({"type": "message", "room": f"{zgent}:narrative", "payload": {"z": zgent}})
        got = watcher.next("message")
        assert got["room"] == zgent and got["payload"] == {"z": zgent}
    a.ok("join_channel", {"room": "alpha:events"})
    a.send({"type": "message", "room": "alpha:events", "payload": {"no": 1}})
    watcher.assert_silent()


def test_join_refuses_a_bad_name(bus):
    client = bus.connect()
    assert_refused(client.command("join_channel", {"room": "science", "channel": "x\x07"}),
                   ErrorCode.VALIDATION_ERROR, BAD_CHANNEL)
    assert client.client.subscriptions == {("science", "general")}


def test_leave_stops_delivery_and_moves_the_current_channel(bus):
    a, b = bus.connect(), bus.connect()
    b.ok("join_channel", {"room": "lab:bench"})
    b.ok("join_channel", {"room": "*:narrative"})
    response = b.command("leave_channel", {"room": "lab", "channel": "bench"})
    assert response["payload"]["message"] == "Left lab:bench"
    assert response["payload"]["data"]["left_by"] == b.id
    assert (b.client.room, b.client.channel) == ("science", "general")  # the concrete one left
    b.ok("leave_channel", {"room": "science:general"})
    assert (b.client.room, b.client.channel) == (None, None)
    a.send({"type": "message", "payload": {"x": 1}})
    b.assert_silent()
    assert_refused(b.command("leave_channel", {"room": "science:general"}),
                   ErrorCode.NOT_A_MEMBER, "client is not in science:general")
    b.ok("leave_channel", {"room": "*", "channel": "narrative"})
    assert b.client.subscriptions == set()


def test_leaving_a_channel_that_is_not_current_keeps_the_current_one(bus):
    client = bus.connect()
    client.ok("join_channel", {"room": "lab:bench"})
    client.ok("leave_channel", {"room": "science:general"})
    assert (client.client.room, client.client.channel) == ("lab", "bench")


def test_list_channels_of_every_room_or_one(bus):
    client = bus.connect()
    client.ok("join_channel", {"room": "lab:bench"})
    everything = client.command("list_channels")
    assert everything["payload"]["message"] == "8 channel(s)"
    data = everything["payload"]["data"]
    assert data["room"] is None and data["total_channels"] == 8
    counts = {(c["room"], c["channel"]): c["participants"] for c in data["channels"]}
    assert counts[("lab", "bench")] == 1 and counts[("science", "general")] == 1
    science = client.ok("list_channels", {"room": "science:general"})
    assert science["room"] == "science"
    assert [c["channel"] for c in science["channels"]] == SCIENCE
    general = science["channels"][0]
    assert (general["hardcoded"], general["type"], general["created_by"]) == \
        (True, "general", "arqonbus") and general["created_at"]
    assert general["participants"] == 1   # this client, auto-joined
    assert all(c["participants"] == 0 for c in science["channels"][1:])
    assert_refused(client.command("list_channels", {"room": "atlantis"}), ErrorCode.NOT_FOUND,
                   "room atlantis does not exist")


def test_channel_info_lists_participants_in_join_order_and_metadata(bus):
    a = bus.connect()
    b = bus.connect(identity={"type": "ai-agent", "screen_name": "bee"})
    for client in (a, b):
        client.ok("join_channel", {"room": "lab:bench"})
    response = a.command("channel_info", {"room": "lab:bench"})
    assert response["payload"]["message"] == "Channel lab:bench"
    data = response["payload"]["data"]
    assert data["participants"] == [
        {"client_id": a.id, "type": "human", "screen_name": None},
        {"client_id": b.id, "type": "ai-agent", "screen_name": "bee"}]
    assert data["metadata"]["created_by"] == a.id and data["metadata"]["hardcoded"] is False
    assert_refused(a.command("channel_info", {"room": "lab:none"}), ErrorCode.NOT_FOUND,
                   "channel lab:none does not exist")


# -- history ------------------------------------------------------------------------------

def publish(client, count: int, *, room: str = "science:general", start: int = 0,
            stamp: str | None = None, sequence: bool = False) -> None:
    """``count`` messages; with ``stamp``, message n is received at that time (the bus's
    clock) and carries it as its own timestamp too."""
    for n in range(start, start + count):
        frame = {"type": "message", "room": room, "payload": {"n": n}}
        if stamp:
            frame["timestamp"] = stamp.format(n=n)
            client.harness.timers.now = datetime.fromisoformat(frame["timestamp"]).replace(
                tzinfo=timezone.utc).timestamp()
        if sequence:
            frame["metadata"] = {"sequence": n}
        assert client.send(frame)[0]["type"] == "message_response"


def numbers(entries) -> list[int]:
    return [e["payload"]["n"] if "payload" in e else e["envelope"]["payload"]["n"]
            for e in entries]


def test_history_keeps_a_window_and_returns_the_last_50_by_default():
    bus = BusHarness(history_size=60)
    client = bus.connect()
    publish(client, 70)
    data = client.ok("history", {"room": "science", "channel": "general"})
    assert numbers(data["history"]) == list(range(20, 70))
    assert (data["total_messages"], data["limit"]) == (60, 50)
    entry = data["history"][0]
    assert sorted(entry) == ["channel", "message_id", "metadata", "payload", "room", "sender",
                             "timestamp", "type"]
    assert entry["sender"] == client.id and beside_stream(entry["metadata"]) == {}
    at_bound = client.ok("history", {"room": "science:general", "limit": 60})
    assert numbers(at_bound["history"]) == list(range(10, 70))
    assert_refused(client.command("history", {"room": "science:general", "limit": 61}),
                   ErrorCode.VALIDATION_ERROR, "limit must be between 1 and 60")
    assert_refused(client.command("history", {"room": "science:general", "limit": 0}),
                   ErrorCode.VALIDATION_ERROR, "limit must be between 1 and 60")


def test_history_of_a_room_merges_its_channels_in_order(bus):
    client = bus.connect()
    client.ok("join_channel", {"room": "science:explore"})
    for n, room in enumerate(["science:general", "science:explore", "science", "science:general"]):
        client.send({"type": "message", "room": room, "payload": {"n": n}})
    data = client.ok("history", {"room": "science", "limit": 3})
    assert numbers(data["history"]) == [1, 2, 3] and data["total_messages"] == 4
    assert data["channel"] is None


# History windows are in receipt time; publish() sets the bus's clock to each stamp, so here
# the two agree (tests/test_arqonbus_clients.py shows a client's old timestamp is not used).
STAMPS = "2025-01-01T00:00:0{n}"


def test_history_since_keeps_later_messages(bus):
    client = bus.connect()
    publish(client, 5, stamp=STAMPS)
    data = client.ok("history", {"room": "science:general", "since": "2025-01-01T00:00:02Z"})
    assert numbers(data["history"]) == [3, 4] and data["total_messages"] == 2
    assert_refused(client.command("history", {"room": "science:general", "since": "noon"}),
                   ErrorCode.VALIDATION_ERROR, "since 'noon' is not ISO 8601")
    # A room that does not exist has no history, as in ArqonBus.
    nothing = client.ok("history", {"room": "atlantis"})
    assert (nothing["history"], nothing["total_messages"]) == ([], 0)


@pytest.mark.parametrize("name", ["history.get", "op.history.get"])
def test_history_get_is_newest_first_within_since_and_until(bus, name):
    client = bus.connect()
    publish(client, 5, stamp=STAMPS)
    response = client.command(name, {"room": "science", "channel": "general",
                                     "since": "2025-01-01T00:00:01", "until": "2025-01-01T00:00:03",
                                     "limit": 2})
    assert response["payload"]["message"] == "History retrieved"
    data = response["payload"]["data"]
    assert numbers(data["entries"]) == [3, 2] and data["count"] == 2
    assert (data["since"], data["until"], data["limit"]) == \
        ("2025-01-01T00:00:01", "2025-01-01T00:00:03", 2)
    entry = data["entries"][0]
    assert entry["stored_at"] == entry["envelope"]["timestamp"] == "2025-01-01T00:00:03"
    assert entry["storage_metadata"] == {}
    assert numbers(client.ok(name, {"room": "science:general"})["entries"]) == [4, 3, 2, 1, 0]


def test_history_get_of_every_room_is_for_admins_only(bus):
    client, admin = bus.connect(), bus.admin()
    publish(client, 2)
    admin.ok("join_channel", {"room": "lab:bench"})
    publish(admin, 1, room="lab:bench", start=2)
    assert_refused(client.command("history.get"), ErrorCode.AUTHORIZATION_ERROR,
                   "Only admin clients can query global history; provide 'room'")
    data = admin.ok("history.get")
    assert (data["room"], numbers(data["entries"])) == (None, [2, 1, 0])


@pytest.mark.parametrize("args, text", [
    ({"since": "2025-01-02", "until": "2025-01-01"}, "until is before since"),
    ({"since": "soon"}, "since 'soon' is not ISO 8601"),
    ({"limit": HISTORY_GET_MAX + 1}, f"limit must be between 1 and {HISTORY_GET_MAX}"),
])
def test_history_get_refusals(bus, args, text):
    client = bus.connect()
    assert_refused(client.command("history.get", {"room": "science", **args}),
                   ErrorCode.VALIDATION_ERROR, text)
    assert client.ok("history.get", {"room": "science", "limit": HISTORY_GET_MAX})["count"] == 0


@pytest.mark.parametrize("name", ["history.replay", "op.history.replay"])
def test_history_replay_is_oldest_first_between_from_and_to(bus, name):
    client = bus.connect()
    publish(client, 5, stamp=STAMPS, sequence=True)
    args = {"room": "science:general", "from_ts": "2025-01-01T00:00:01Z",
            "to_ts": "2025-01-01T00:00:03Z"}
    response = client.command(name, args)
    assert response["payload"]["message"] == "History replayed"
    data = response["payload"]["data"]
    assert numbers(data["entries"]) == [1, 2, 3] and data["count"] == 3
    assert (data["from_ts"], data["to_ts"], data["strict_sequence"]) == \
        (args["from_ts"], args["to_ts"], True)
    assert numbers(client.ok(name, {**args, "limit": 2})["entries"]) == [1, 2]


def test_history_replay_refuses_a_sequence_that_goes_back_unless_not_strict(bus):
    client = bus.connect()
    for n, sequence in enumerate((1, "x", None, 3, 2)):   # only whole numbers are a sequence
        client.send({"type": "message", "payload": {"n": n}, "metadata": {"sequence": sequence}})
    window = {"room": "science", "from_ts": "2000-01-01T00:00:00", "to_ts": "2999-01-01T00:00:00"}
    assert_refused(client.command("history.replay", window), ErrorCode.VALIDATION_ERROR,
                   "Sequence regression detected in replay window")
    data = client.ok("history.replay", {**window, "strict_sequence": False})
    assert numbers(data["entries"]) == [0, 1, 2, 3, 4] and data["strict_sequence"] is False
    assert numbers(client.ok("history.replay", {**window, "limit": 4})["entries"]) == [0, 1, 2, 3]


@pytest.mark.parametrize("args, text", [
    ({"to_ts": "2999-01-01"}, "history.replay requires argument 'from_ts'"),
    ({"from_ts": "2000-01-01"}, "history.replay requires argument 'to_ts'"),
    ({"from_ts": "2000-01-01", "to_ts": "2999-01-01", "limit": HISTORY_REPLAY_MAX + 1},
     f"limit must be between 1 and {HISTORY_REPLAY_MAX}"),
])
def test_history_replay_refusals(bus, args, text):
    client = bus.connect()
    assert_refused(client.command("history.replay", {"room": "science", **args}),
                   ErrorCode.VALIDATION_ERROR, text)
    assert client.ok("history.replay", {"room": "science", "from_ts": "2000-01-01",
                                        "to_ts": "2999-01-01",
                                        "limit": HISTORY_REPLAY_MAX})["count"] == 0


# -- op.store ------------------------------------------------------------------------------

def test_store_set_get_list_delete_round_trip(bus):
    client = bus.connect()
    set_ = client.command("op.store.set", {"key": "k", "value": {"a": 1}})
    assert set_["payload"]["message"] == "Value stored"
    assert set_["payload"]["data"] == {"namespace": "default", "key": "k", "updated": False}
    assert client.ok("op.store.set", {"key": "k", "value": [2]})["updated"] is True
    assert client.ok("op.store.get", {"key": "k"}) == {"namespace": "default", "key": "k",
                                                       "found": True, "value": [2]}
    assert client.ok("op.store.get", {"key": "nope"})["found"] is False
    assert client.ok("op.store.list") == {"namespace": "default", "count": 1, "keys": ["k"]}
    deleted = client.command("op.store.delete", {"key": "k"})
    assert deleted["payload"]["message"] == "Value deleted"
    assert deleted["payload"]["data"] == {"namespace": "default", "key": "k", "deleted": True}
    again = client.command("op.store.delete", {"key": "k"})
    assert again["payload"]["message"] == "Key not found"
    assert again["payload"]["data"]["deleted"] is False


# Who shares a namespace: every principal has its own space (issue 13); principals of one
# tenant share one; a namespace argument never reaches into another's space.
NAMESPACES = [
    # (claims of writer, args, claims of reader, namespace, reader sees the value)
    ({"sub": "a"}, {}, {"sub": "b"}, "default", False),
    ({"sub": "a"}, {}, {"sub": "a"}, "default", True),      # the same principal, reconnected
    ({"sub": "a", "tenant_id": "t1"}, {}, {"sub": "b", "tenant_id": "t1"}, "tenant:t1", True),
    ({"tenant_id": "t1"}, {}, {"tenant_id": "t2"}, "tenant:t1", False),
    ({"sub": "a"}, {"namespace": "lab"}, {"sub": "other"}, "lab", False),
]


@pytest.mark.parametrize("writer_claims, args, reader_claims, namespace, shared", NAMESPACES)
def test_store_namespaces(bus, writer_claims, args, reader_claims, namespace, shared):
    writer, reader = bus.connect(claims=writer_claims), bus.connect(claims=reader_claims)
    assert writer.ok("op.store.set", {"key": "k", "value": 1, **args})["namespace"] == namespace
    assert reader.ok("op.store.get", {"key": "k", **args})["found"] is shared


@pytest.mark.parametrize("name, args, text", [
    ("op.store.set", {"key": "", "value": 1}, "key must not be empty"),
    ("op.store.set", {"key": "k"}, "op.store.set requires a non-null 'value'"),
    ("op.store.set", {"key": "k", "value": None}, "op.store.set requires a non-null 'value'"),
    ("op.store.set", {"value": 1}, "op.store.set requires argument 'key'"),
    ("op.store.delete", {"key": ""}, "key must not be empty"),
    ("op.store.get", {"key": 5}, "argument 'key' must be str, not a number"),
])
def test_store_refusals(bus, name, args, text):
    client = bus.connect()
    assert_refused(client.command(name, args), ErrorCode.VALIDATION_ERROR, text)
    assert client.ok("op.store.list")["count"] == 0


def test_the_store_is_bounded_in_keys_across_namespaces():
    bus = BusHarness()
    assert bus.store.settings.max_keys == 10000
    bus.store.settings = replace(bus.store.settings, max_keys=2)
    client = bus.connect()
    client.ok("op.store.set", {"key": "a", "value": 1})
    client.ok("op.store.set", {"key": "b", "value": 1, "namespace": "other"})
    assert_refused(client.command("op.store.set", {"key": "c", "value": 1}),
                   ErrorCode.LIMIT_EXCEEDED, "the store holds store.max_keys (2) keys already")
    assert client.ok("op.store.set", {"key": "a", "value": 2})["updated"] is True  # at the bound
    client.ok("op.store.delete", {"key": "a"})
    client.ok("op.store.set", {"key": "c", "value": 1})
