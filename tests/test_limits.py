"""Memory bounds against the real daemon: what all clients may have waiting together, replies
that would not fit a client's buffer, channels listed a page at a time."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import metrics_of


async def closed_code(peer) -> int:
    peer.connection.transport.resume_reading()
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await peer.recv(10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_past_the_output_budget_the_largest_consumers_are_cut_first(make_daemon,
                                                                         connect_peer):
    # Each stalled client alone stays under its own bound: only the budget can stop them.
    daemon = make_daemon({"server": {"client_buffer_bytes": 64 << 20,
                                     "output_budget_bytes": 4 << 20}})
    publisher = await connect_peer(daemon.ws_url)
    fast = await connect_peer(daemon.ws_url)
    stalled = [await connect_peer(daemon.ws_url, max_size=None) for _ in range(2)]
    for peer in stalled:
        peer.connection.transport.pause_reading()
    count, blob = 3000, "x" * 10000

    async def read_all() -> list[int]:
        return [(await fast.recv(10))["payload"]["n"] for _ in range(count)]

    reader = asyncio.create_task(read_all())
    for n in range(count):  # 30 MB: far past the budget and what kernel buffers hold
        await publisher.send({"type": "message", "payload": {"n": n, "blob": blob}})
        await publisher.recv_type("message_response")
    assert await reader == list(range(count))
    for _ in range(40):  # the budget is checked four times a second
        if metrics_of(daemon)["arqonbus_output_budget_cuts_total"] == 2:
            break
        await asyncio.sleep(0.1)
    values = metrics_of(daemon)
    assert values["arqonbus_output_budget_cuts_total"] == 2
    assert values["arqonbus_slow_consumers_total"] == 2
    assert values["arqonbus_connections_active"] == 2
    daemon.wait_for_line("server.output_budget_bytes (4194304) reached")
    assert [await closed_code(peer) for peer in stalled] == [4008, 4008]


async def test_a_reply_too_large_for_the_buffer_is_an_error_not_a_cut(make_daemon,
                                                                     connect_peer):
    daemon = make_daemon({"server": {"client_buffer_bytes": 65536}})
    peer = await connect_peer(daemon.ws_url)
    for n in range(10):
        await peer.send({"type": "message", "room": "science:general",
                         "payload": {"n": n, "blob": "x" * 10000}})
        await peer.recv_type("message_response")
    refused = await peer.command("history", {"room": "science:general", "limit": 10})
    assert (refused["status"], refused["error_code"]) == ("error", "LIMIT_EXCEEDED")
    assert "more than half of server.client_buffer_bytes (65536); ask for less" in \
        refused["error"]
    small = await peer.command("history", {"room": "science:general", "limit": 2})
    assert [e["payload"]["n"] for e in small["payload"]["data"]["history"]] == [8, 9]
    assert metrics_of(daemon)["arqonbus_replies_too_large_total"] == 1
    assert metrics_of(daemon)["arqonbus_slow_consumers_total"] == 0


async def test_channels_are_listed_a_page_at_a_time(daemon, connect_peer):
    peer = await connect_peer(daemon.ws_url)
    for n in range(5):
        await peer.command("join_channel", {"room": f"page:c{n}"})
    first = (await peer.command("list_channels", {"room": "page", "limit": 2}))["payload"][
        "data"]
    assert [c["channel"] for c in first["channels"]] == ["c0", "c1"]
    assert (first["total_channels"], first["offset"], first["next_offset"]) == (5, 0, 2)
    last = (await peer.command("list_channels", {"room": "page", "limit": 2, "offset": 4}))[
        "payload"]["data"]
    assert [c["channel"] for c in last["channels"]] == ["c4"] and last["next_offset"] is None
    refused = await peer.command("list_channels", {"limit": 1001})
    assert refused["error"] == "limit must be between 1 and 1000"
    refused = await peer.command("list_channels", {"offset": -1})
    assert refused["error"] == "offset must be 0 or more"
