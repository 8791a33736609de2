"""Durable streams from the clients' side, against the real daemon: /v1/stream resuming
(since, epoch, Last-Event-ID; NDJSON and server-sent events), a channel's own retention,
``arqon tail --since``, ``arqon read --cursor``, and the SDK resuming after arqond was
killed."""

from __future__ import annotations

TARGET = {"room": "lab", "channel": "notes"}


async def publish(peer, count: int, start: int = 0, target: dict = TARGET) -> str:
    """``count`` messages {"n": start...} on the target, each acked; the stream's epoch."""
    for n in range(start, start + count):
        await peer.send({"type": "message", **target, "payload": {"n": n}})
        ack = await peer.recv_type("message_response")
    return ack["metadata"]["epoch"]


# -- a channel's own retention ---------------------------------------------------------------

async def test_a_channel_created_with_its_own_retention_keeps_it_across_a_restart(
        daemon, connect_peer):
    anyone = await connect_peer(daemon.ws_url)
    refused = await anyone.command("create_channel", {**TARGET, "retention": {"messages": 3}})
    assert (refused["error_code"], refused["error"]) == (
        "AUTHORIZATION_ERROR", "create_channel is for admin clients only")
    admin = await connect_peer(daemon.control_path)
    created = await admin.command("create_channel", {**TARGET, "retention": {"messages": 3}})
    kept = created["payload"]["data"]["stream"]["retention"]
    assert kept == {"messages": 3, "bytes": 67108864, "age": 0.0}
    epoch = await publish(admin, 5)
    daemon.kill()
    daemon.start()
    peer = await connect_peer(daemon.ws_url)
    info = (await peer.command("channel_info", TARGET))["payload"]["data"]["stream"]
    assert info == {"epoch": epoch, "first_seq": 3, "last_seq": 5, "retention": kept}
    await publish(peer, 2, start=5)
    info = (await peer.command("channel_info", TARGET))["payload"]["data"]["stream"]
    assert (info["first_seq"], info["last_seq"]) == (5, 7)
