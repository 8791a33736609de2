"""Rows of arqond(8) COMPATIBILITY that no other test shows, written from the wire facts: an
ArqonBus client that never joins anything publishes with an old timestamp of its own and
reads history back in arqond's receipt time (issue 19, items 1, 2, 4 and 8)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from tests.conftest import ROOT

NO_DEFAULT_CHANNEL = {"server": {"default_channel": ""}}   # arqond's default, as upstream's


def iso(moment: datetime) -> str:
    return moment.isoformat()


async def test_history_windows_follow_receipt_time_not_an_old_client_timestamp(
        make_daemon, connect_peer):
    daemon = make_daemon(NO_DEFAULT_CHANNEL)
    bot = await connect_peer(daemon.ws_url)
    # A client clock twenty years slow, a channel nobody created, a name with / and a space.
    await bot.send({"type": "message", "id": "arq_1_1_abcdef", "room": "team/alpha",
                    "channel": "lab notes", "timestamp": "2001-01-01T00:00:00.000Z",
                    "to_client": "arq_client_nobody", "payload": {"n": 1}})
    ack = await bot.recv_type("message_response")
    assert ack["id"] == "arq_1_1_abcdef"
    now = datetime.now(timezone.utc)
    hour_ago, in_an_hour = iso(now - timedelta(hours=1)), iso(now + timedelta(hours=1))
    target = {"room": "team/alpha", "channel": "lab notes"}

    got = (await bot.command("history.get", {**target, "since": hour_ago}))["payload"]["data"]
    assert got["count"] == 1
    envelope = got["entries"][0]["envelope"]
    # The sender's own timestamp, relayed as ArqonBus relays it; to_client kept in metadata.
    assert envelope["timestamp"] == "2001-01-01T00:00:00+00:00"
    assert envelope["metadata"]["to_client"] == "arq_client_nobody"
    assert got["entries"][0]["stored_at"] >= hour_ago[:19]   # when arqond received it
    old_window = {**target, "since": "2000-12-31T00:00:00Z", "until": "2001-01-02T00:00:00Z"}
    assert (await bot.command("history.get", old_window))["payload"]["data"]["count"] == 0
    replayed = (await bot.command("history.replay", {**target, "from_ts": hour_ago,
                                                     "to_ts": in_an_hour}))["payload"]["data"]
    assert [e["envelope"]["payload"] for e in replayed["entries"]] == [{"n": 1}]
    legacy = (await bot.command("history", {**target, "since": hour_ago}))["payload"]["data"]
    assert [m["payload"] for m in legacy["history"]] == [{"n": 1}]


async def test_history_of_a_room_nobody_used_is_empty_not_an_error(make_daemon, connect_peer):
    daemon = make_daemon(NO_DEFAULT_CHANNEL)
    client = await connect_peer(daemon.ws_url)
    for name, data_key in (("history.get", "entries"), ("history.replay", "entries"),
                           ("history", "history")):
        args = {"room": "atlantis", "channel": "deep"}
        if name == "history.replay":
            args.update(from_ts="2000-01-01T00:00:00Z", to_ts="2100-01-01T00:00:00Z")
        response = await client.command(name, args)
        assert response["status"] == "success", response
        assert response["payload"]["data"][data_key] == []
    # Asking made nothing: the room still does not exist.
    rooms = (await client.command("list_channels"))["payload"]["data"]["channels"]
    assert "atlantis" not in {channel["room"] for channel in rooms}


def test_every_test_the_compatibility_table_names_exists():
    """arqond(8) COMPATIBILITY names, for each row, the tests that show it: each is there."""
    page = (ROOT / "man" / "arqond.8").read_text()
    table = page[page.index(".Sh COMPATIBILITY"):page.index(".Sh SEE ALSO")]
    rows = re.split(r"^\.It ", table, flags=re.M)[1:]
    assert len(rows) == 17
    for row in rows:
        files = re.findall(r"^\.Pa (tests/\S+\.py)", row, flags=re.M)
        assert files, f"no test named for {row.splitlines()[0]!r}"
        # A long name is written with break points (\:) so that man(1) can wrap it.
        named = re.findall(r"^\.Li (test_\w+)", row.replace("\\:", ""), flags=re.M)
        sources = {path: (ROOT / path).read_text() for path in files}
        for name in named:
            assert any(f"def {name}(" in text for text in sources.values()), \
                f"{name} (row {row.splitlines()[0]!r}) is in none of {files}"
