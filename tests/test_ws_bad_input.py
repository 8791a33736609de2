"""Bad input against the real daemon: a clear error, and nobody else disturbed.

Each rule of what a frame may be is a row of tests/unit/test_envelope.py and
tests/unit/test_protocol.py, checked in-process; here one daemon proves that every row's
error reaches a WebSocket client as the client sees it, and that the connection and the
others are unharmed."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed

BAD_FRAMES = [
    ("not json", "this is not json", "INVALID_JSON", "not valid JSON"),
    ("json array", "[1, 2]", "VALIDATION_ERROR", "must be a JSON object, not an array"),
    ("json number", "42", "VALIDATION_ERROR", "must be a JSON object, not a number"),
    ("json string", '"hi"', "VALIDATION_ERROR", "not a string"),
    ("unknown keys", '{"type":"message","payload":{},"content":"x","zz":1}', "VALIDATION_ERROR",
     "unknown top-level key(s): 'content', 'zz'"),
    ("room not a string", '{"type":"message","room":5,"payload":{"a":1}}', "VALIDATION_ERROR",
     "room must be a string, not a number"),
    ("args not an object", '{"type":"command","command":"ping","args":[1]}', "VALIDATION_ERROR",
     "args must be an object, not an array"),
    ("metadata not an object", '{"type":"message","payload":{"a":1},"metadata":"m"}',
     "VALIDATION_ERROR", "metadata must be an object"),
    ("bad version", '{"type":"message","payload":{"a":1},"version":"2.0"}', "VALIDATION_ERROR",
     "version must be '1.0'"),
    ("bad timestamp", '{"type":"message","payload":{"a":1},"timestamp":"yesterday"}',
     "VALIDATION_ERROR", "not ISO 8601"),
    ("unknown type", '{"type":"shout","payload":{"a":1}}', "VALIDATION_ERROR",
     "unknown type 'shout'"),
    ("empty payload", '{"type":"message","payload":""}', "VALIDATION_ERROR",
     "payload is required"),
    ("command without name", '{"type":"command","args":{}}', "VALIDATION_ERROR",
     "command requires a non-empty 'command' name"),
    ("bad channel name",
     '{"type":"message","room":"science","channel":"x\\u0007y","payload":{"a":1}}',
     "VALIDATION_ERROR", "invalid channel name"),
    ("private without target", '{"type":"private","payload":{"a":1}}', "VALIDATION_ERROR",
     "needs payload.target or to_client"),
]


async def assert_still_usable(peer) -> None:
    response = await peer.command("ping")
    assert response["status"] == "success"


async def test_bad_frames_get_clear_errors_and_disturb_nobody(daemon, connect_peer):
    sender = await connect_peer(daemon.ws_url)
    bystander = await connect_peer(daemon.ws_url)
    for name, raw, code, text in BAD_FRAMES:
        await sender.send(raw)
        error = await sender.recv_type("error")
        assert error["error_code"] == code, name
        assert text in error["error"], (name, error["error"])
        assert error["sender"] == "arqonbus"
        assert error["payload"]["errors"]
        await assert_still_usable(sender)
        # A good message afterwards still flows, and is the first thing the bystander gets:
        # the bad one reached nobody and disturbed nothing.
        await sender.send({"type": "message", "payload": {"after": name}})
        assert (await bystander.recv_type("message"))["payload"] == {"after": name}
        await sender.recv_type("message_response")
    # The error names the frame it refuses, when the frame had a usable id.
    await sender.send('{"id":"arq_1_9_abcdef","type":"message","payload":{"a":1},"bogus":1}')
    assert (await sender.recv_type("error"))["request_id"] == "arq_1_9_abcdef"
    await bystander.expect_silence(0.2)


async def test_binary_frame_is_refused_and_connection_stays(daemon, connect_peer):
    peer = await connect_peer(daemon.ws_url)
    bystander = await connect_peer(daemon.ws_url)
    await peer.connection.send(b'{"type":"message","payload":{"a":1}}')
    error = await peer.recv_type("error")
    assert error["error_code"] == "UNSUPPORTED_FRAME" and "binary" in error["error"]
    await bystander.expect_silence(0.2)
    await assert_still_usable(peer)


async def test_invalid_utf8_closes_with_1007(daemon, connect_peer):
    peer = await connect_peer(daemon.ws_url)
    bystander = await connect_peer(daemon.ws_url)
    peer.connection.protocol.send_text(b'{"type":"message","payload":"\xff\xfe"}')
    peer.connection.send_data()
    with pytest.raises(ConnectionClosed) as closed:
        await peer.recv(5)
    assert closed.value.rcvd.code == 1007
    await bystander.expect_silence(0.2)
    await assert_still_usable(bystander)


async def test_oversize_frame_closes_with_1009(make_daemon, connect_peer):
    daemon = make_daemon({"server": {"max_message_size": 4096}})
    peer = await connect_peer(daemon.ws_url, max_size=None)
    bystander = await connect_peer(daemon.ws_url)
    await peer.send({"type": "message", "payload": {"blob": "x" * 5000}})
    with pytest.raises(ConnectionClosed) as closed:
        await peer.recv(5)
    assert closed.value.rcvd.code == 1009
    await bystander.expect_silence(0.2)
    await assert_still_usable(bystander)
    status = (await bystander.command("status"))["payload"]["data"]
    assert status["connections"]["active"] == 1  # the closed client was cleaned up
    assert status["messages"]["total"] == 0
