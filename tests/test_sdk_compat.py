"""Code written for ArqonBus's Python SDK runs on arqond unchanged: the ``arqonbus`` import
paths, the SDK's edge behaviours (error classes and texts, timeouts, what is sent and received,
handshake headers, connect and close), ``arqonbus.protocol.ids``, and the hello-world bot's
path against the real daemon. docs/compat-sdk.md lists each behaviour."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
import types
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.protocol import State

import arqond
import arqond.sdk
from arqond.core.auth import issue_hs256
from tests.conftest import scaled

SECRET = "compat-secret"


# ---- a real WebSocket server that plays a script ------------------------------------------

class ScriptedServer:
    """A WebSocket server that sends the frames a test queues and records what it gets."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.received: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.outgoing: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.url = ""

    async def handle(self, connection: ServerConnection) -> None:
        self.requests.append(connection.request)

        async def play() -> None:
            while True:
                await connection.send(await self.outgoing.get())

        player = asyncio.create_task(play())
        try:
            async for message in connection:
                await self.received.put(message)
        finally:
            player.cancel()


@pytest.fixture
async def scripted():
    script = ScriptedServer()
    server = await serve(script.handle, "127.0.0.1", 0)
    script.url = "ws://127.0.0.1:%d" % server.sockets[0].getsockname()[1]
    yield script
    server.close()
    await server.wait_closed()


# ---- the import paths ------------------------------------------------------------------------

def test_arqonbus_sdk_exports_arqonds_client_under_arqonbus_names():
    import arqonbus
    import arqonbus.sdk
    import arqonbus.sdk.client
    from arqonbus.sdk import (ArqonBusClient, ArqonBusConnectionError, ArqonBusProtocolError,
                              ArqonBusSDKError)

    assert sorted(arqonbus.sdk.__all__) == ["ArqonBusClient", "ArqonBusConnectionError",
                                            "ArqonBusProtocolError", "ArqonBusSDKError"]
    assert ArqonBusClient is arqond.sdk.ArqonBusClient
    assert ArqonBusSDKError is arqond.sdk.ArqonBusSDKError
    assert issubclass(ArqonBusConnectionError, ArqonBusSDKError)
    assert issubclass(ArqonBusProtocolError, ArqonBusSDKError)
    # One module under two names, so a patch made through either reaches the client.
    assert arqonbus.sdk.client is arqond.sdk
    assert arqonbus.sdk.client.websockets is websockets
    assert arqonbus.__version__ == arqond.__version__


async def test_patching_websockets_connect_through_arqonbus_sdk_client_reaches_connect(
        daemon, monkeypatch):
    """ArqonBus's SDK tests replace connect with a function of exactly three parameters."""
    from arqonbus.sdk import ArqonBusClient
    real_connect = websockets.connect
    seen: list[tuple[str, dict[str, str], float]] = []

    async def recording_connect(url, additional_headers, open_timeout):
        seen.append((url, dict(additional_headers), open_timeout))
        return await real_connect(url, additional_headers=additional_headers,
                                  open_timeout=open_timeout)

    monkeypatch.setattr("arqonbus.sdk.client.websockets.connect", recording_connect)
    async with ArqonBusClient(daemon.ws_url, jwt_token="token-abc",
                              headers={"X-Tenant": "tenant-a"}, connect_timeout=3.0) as client:
        assert (await client.recv_json(timeout=scaled(2.0)))["payload"]["welcome"] == \
            "Connected to ArqonBus"
    assert seen == [(daemon.ws_url, {"X-Tenant": "tenant-a",
                                     "Authorization": "Bearer token-abc"}, 3.0)]


async def test_replacing_the_websockets_module_of_arqonbus_sdk_client_reaches_connect(
        daemon, monkeypatch):
    import arqonbus.sdk.client
    urls: list[str] = []

    async def recording_connect(url, **kwargs):
        urls.append(url)
        return await websockets.connect(url, **kwargs)

    monkeypatch.setattr(arqonbus.sdk.client, "websockets",
                        types.SimpleNamespace(connect=recording_connect))
    async with arqonbus.sdk.client.ArqonBusClient(daemon.ws_url) as client:
        await client.recv_json(timeout=scaled(2.0))
    assert urls == [daemon.ws_url]


# ---- not connected ---------------------------------------------------------------------------

async def test_a_client_never_connected_or_closed_says_client_is_not_connected(daemon):
    from arqonbus.sdk import ArqonBusClient, ArqonBusConnectionError
    fresh = ArqonBusClient(daemon.ws_url)
    closed = ArqonBusClient(daemon.ws_url)
    await closed.connect()
    await closed.close()
    for client in (fresh, closed):
        assert client.connected is False
        with pytest.raises(ArqonBusConnectionError, match="^Client is not connected$"):
            await client.recv_json(timeout=0.1)
        with pytest.raises(ArqonBusConnectionError, match="^Client is not connected$"):
            await client.send_json({"type": "message"})
        # The connection is checked before the value: ArqonBus's order.
        with pytest.raises(ArqonBusConnectionError, match="^Client is not connected$"):
            await client.send_json({"payload": object()})


async def test_close_is_idempotent_and_async_with_closes_when_its_body_raises(daemon):
    from arqonbus.sdk import ArqonBusClient
    never = ArqonBusClient(daemon.ws_url)
    await never.close()
    assert never.connected is False
    client = ArqonBusClient(daemon.ws_url)
    with pytest.raises(KeyError, match="from the body"):
        async with client:
            assert client.connected is True
            connection = client._websocket
            raise KeyError("from the body")
    assert client.connected is False
    assert connection.state is State.CLOSED and connection.close_code == 1000
    await client.close()
    assert client.connected is False


# ---- connecting -----------------------------------------------------------------------------

async def test_handshake_carries_the_headers_and_the_jwt_as_a_bearer_token(scripted):
    from arqonbus.sdk import ArqonBusClient
    cases = [
        ({"jwt_token": "token-abc", "headers": {"X-Tenant": "tenant-a"}},
         "tenant-a", ["Bearer token-abc"]),
        # jwt_token replaces an Authorization header given in headers.
        ({"jwt_token": "token-abc", "headers": {"Authorization": "Bearer from-headers"}},
         None, ["Bearer token-abc"]),
        # No token (None or empty): headers go as given, nothing is added.
        ({"jwt_token": "", "headers": {"Authorization": "Bearer from-headers"}},
         None, ["Bearer from-headers"]),
        ({}, None, []),
    ]
    for kwargs, tenant, authorization in cases:
        async with ArqonBusClient(scripted.url + "/bus?token=q", **kwargs):
            pass
        request = scripted.requests.pop()
        assert request.path == "/bus?token=q", kwargs
        assert request.headers.get("X-Tenant") == tenant, kwargs
        assert request.headers.get_all("Authorization") == authorization, kwargs


async def test_connect_failures_are_sdk_errors_with_the_url_and_the_reason(make_daemon):
    from arqonbus.sdk import ArqonBusClient, ArqonBusConnectionError
    daemon = make_daemon({"auth": {"enabled": True, "jwt_secret": SECRET}})
    for token in (None, "", "not-a-token", issue_hs256({"sub": "x"}, "other-secret")):
        client = ArqonBusClient(daemon.ws_url, jwt_token=token)
        with pytest.raises(ArqonBusConnectionError) as refused:
            await client.connect()
        assert str(refused.value) == (f"Failed to connect to {daemon.ws_url}: server rejected "
                                      "WebSocket connection: HTTP 401")
        assert client.connected is False
    async with ArqonBusClient(daemon.ws_url,
                              jwt_token=issue_hs256({"sub": "alice"}, SECRET)) as client:
        await client.recv_json(timeout=scaled(2.0))
        status = await client.command("status")
        assert status["payload"]["data"]["client"]["subject"] == "alice"


async def test_connect_timeout_bounds_the_opening_handshake():
    from arqonbus.sdk import ArqonBusClient, ArqonBusConnectionError
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    url = "ws://127.0.0.1:%d/" % silent.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ArqonBusConnectionError) as failed:
            await ArqonBusClient(url, connect_timeout=0.2).connect()
        assert str(failed.value) == \
            f"Failed to connect to {url}: timed out during opening handshake"
    finally:
        silent.close()


async def test_connect_on_a_connected_client_opens_a_fresh_connection_and_closes_the_old(
        daemon):
    from arqonbus.sdk import ArqonBusClient, ArqonBusConnectionError
    async with ArqonBusClient(daemon.ws_url) as client:
        first = await client.recv_json(timeout=scaled(2.0))
        old = client._websocket
        await client.connect()
        assert old.state is State.CLOSED and old.close_code == 1000
        second = await client.recv_json(timeout=scaled(2.0))
        assert second["payload"]["welcome"] == "Connected to ArqonBus"
        assert second["payload"]["client_id"] != first["payload"]["client_id"]
        assert client.client_id == second["payload"]["client_id"]
        # A reconnect that fails leaves the connection in use untouched.
        client.ws_url = "ws://127.0.0.1:1/"
        with pytest.raises(ArqonBusConnectionError, match="^Failed to connect to ws://127"):
            await client.connect()
        status = await client.command("status")
        assert status["payload"]["data"]["client"]["client_id"] == second["payload"]["client_id"]


async def test_frames_kept_during_a_command_do_not_survive_a_reconnect(daemon):
    from arqonbus.sdk import ArqonBusClient
    async with ArqonBusClient(daemon.ws_url) as sender, \
            ArqonBusClient(daemon.ws_url) as receiver:
        await sender.recv_json(timeout=scaled(2.0))
        await receiver.recv_json(timeout=scaled(2.0))
        await receiver.join("sdk:kept")
        await sender.publish("sdk:kept", {"n": 1})
        assert (await sender.recv_json(timeout=scaled(2.0)))["type"] == "message_response"
        await receiver.command("status")  # the message arrives meanwhile and is kept
        await receiver.close()
        await receiver.connect()
        first = await receiver.recv_json(timeout=scaled(2.0))
        assert first["payload"]["welcome"] == "Connected to ArqonBus"


# ---- receiving ------------------------------------------------------------------------------

async def test_recv_json_with_timeout_zero_waits_for_the_next_frame(daemon, connect_peer):
    from arqonbus.sdk import ArqonBusClient
    async with ArqonBusClient(daemon.ws_url) as client:
        await client.recv_json(timeout=scaled(2.0))
        await client.join("sdk:zero")
        waiting = asyncio.create_task(client.recv_json(timeout=0))
        await asyncio.sleep(0)  # it is receiving now; a 0 s deadline would have failed it
        publisher = await connect_peer(daemon.ws_url)
        await publisher.send({"type": "message", "room": "sdk", "channel": "zero",
                              "payload": {"n": 1}})
        await publisher.recv_type("message_response")
        frame = await asyncio.wait_for(waiting, scaled(5))
        assert frame["type"] == "message" and frame["payload"] == {"n": 1}


async def test_a_receive_deadline_of_a_positive_or_negative_time_fails_and_loses_nothing(
        daemon, connect_peer):
    from arqonbus.sdk import ArqonBusClient, ArqonBusConnectionError
    async with ArqonBusClient(daemon.ws_url) as client:
        await client.recv_json(timeout=scaled(2.0))
        await client.join("sdk:quiet")
        for timeout in (0.05, -1):
            with pytest.raises(ArqonBusConnectionError, match="^Timed out waiting for message$"):
                await client.recv_json(timeout=timeout)
        publisher = await connect_peer(daemon.ws_url)
        await publisher.send({"type": "message", "room": "sdk", "channel": "quiet",
                              "payload": {"after": "timeouts"}})
        assert (await client.recv_json(timeout=scaled(2.0)))["payload"] == {"after": "timeouts"}


async def test_a_second_concurrent_receive_fails_and_the_first_still_gets_its_frame(
        daemon, connect_peer):
    from arqonbus.sdk import ArqonBusClient, ArqonBusConnectionError
    async with ArqonBusClient(daemon.ws_url) as client:
        await client.recv_json(timeout=scaled(2.0))
        await client.join("sdk:both")
        first = asyncio.create_task(client.recv_json())
        await asyncio.sleep(0)  # the first receive is waiting
        with pytest.raises(ArqonBusConnectionError) as second:
            await client.recv_json(timeout=scaled(1.0))
        assert str(second.value) == ("Receive failed: cannot call recv while another coroutine "
                                     "is already running recv or recv_streaming")
        publisher = await connect_peer(daemon.ws_url)
        await publisher.send({"type": "message", "room": "sdk", "channel": "both",
                              "payload": {"for": "the first"}})
        assert (await asyncio.wait_for(first, scaled(5)))["payload"] == {"for": "the first"}


async def test_frames_that_are_not_json_objects_are_sdk_errors_and_the_next_frame_still_arrives(
        scripted):
    from arqonbus.sdk import ArqonBusClient, ArqonBusConnectionError, ArqonBusProtocolError
    cases = [
        ("not json", ArqonBusProtocolError,
         "Invalid JSON payload: Expecting value: line 1 column 1 (char 0)"),
        ("[1, 2]", ArqonBusProtocolError, "Received non-object JSON payload"),
        ('"text"', ArqonBusProtocolError, "Received non-object JSON payload"),
        (b"\xff", ArqonBusConnectionError,
         "Receive failed: 'utf-8' codec can't decode byte 0xff in position 0: "
         "invalid start byte"),
    ]
    async with ArqonBusClient(scripted.url) as client:
        for frame, error, text in cases:
            await scripted.outgoing.put(frame)
            with pytest.raises(error) as raised:
                await client.recv_json(timeout=scaled(5))
            assert type(raised.value) is error and str(raised.value) == text, frame
        # A binary frame holding a JSON object is read like a text one.
        await scripted.outgoing.put(b'{"binary": true}')
        assert await client.recv_json(timeout=scaled(5)) == {"binary": True}
        await scripted.outgoing.put('{"last": 1}')
        assert await client.recv_json(timeout=scaled(5)) == {"last": 1}


async def test_a_connection_the_server_closed_fails_receive_and_send_until_close(daemon):
    from arqonbus.sdk import ArqonBusClient, ArqonBusConnectionError
    client = ArqonBusClient(daemon.ws_url)
    await client.connect()
    await client.recv_json(timeout=scaled(2.0))
    assert daemon.stop() == 0
    reason = "received 1001 (going away); then sent 1001 (going away)"
    with pytest.raises(ArqonBusConnectionError, match=re.escape(f"Receive failed: {reason}")):
        await client.recv_json(timeout=scaled(5))
    assert client.connected is True  # as in ArqonBus: the socket is held until close()
    with pytest.raises(ArqonBusConnectionError, match=re.escape(f"Send failed: {reason}")):
        await client.send_json({"type": "message"})
    await client.close()
    assert client.connected is False


# ---- sending --------------------------------------------------------------------------------

async def test_send_json_sends_the_mapping_as_one_json_text_frame_unchanged(scripted):
    from arqonbus.sdk import ArqonBusClient
    message = {"type": "message", "payload": {"text": "h\u00e9"}, "custom": [1, None]}
    async with ArqonBusClient(scripted.url) as client:
        await client.send_json(message)
        await client.send_json([("type", "message"), ("n", 1)])  # dict() of pairs, as ArqonBus
    assert await scripted.received.get() == json.dumps(message)
    assert await scripted.received.get() == '{"type": "message", "n": 1}'


async def test_send_json_of_what_is_not_a_json_mapping_raises_send_failed_and_sends_nothing(
        scripted):
    from arqonbus.sdk import ArqonBusClient, ArqonBusConnectionError
    circular: dict[str, Any] = {}
    circular["self"] = circular
    cases = [
        ({"payload": object()}, "Send failed: Object of type object is not JSON serializable"),
        ({"payload": {1, 2}}, "Send failed: Object of type set is not JSON serializable"),
        (circular, "Send failed: Circular reference detected"),
        (42, "Send failed: 'int' object is not iterable"),
        ("ab", "Send failed: dictionary update sequence element #0 has length 1; 2 is required"),
        (None, "Send failed: 'NoneType' object is not iterable"),
    ]
    async with ArqonBusClient(scripted.url) as client:
        for value, text in cases:
            with pytest.raises(ArqonBusConnectionError) as failed:
                await client.send_json(value)
            assert str(failed.value) == text
        await client.send_json({"after": "the failures"})
    assert await scripted.received.get() == '{"after": "the failures"}'
    assert scripted.received.empty()


# ---- arqonbus.protocol.ids ------------------------------------------------------------------

def test_generated_ids_have_arqonbus_shapes():
    from arqonbus.protocol import ids
    first, second = ids.generate_message_id(), ids.generate_message_id()
    shape = re.compile(r"arq_(\d+)_(\d+)_[0-9a-f]{6}")
    a, b = shape.fullmatch(first), shape.fullmatch(second)
    assert a and b, (first, second)
    assert a.group(1) == b.group(1) and int(b.group(2)) == int(a.group(2)) + 1
    for make, prefix in ((ids.generate_client_id, "arq_client_"),
                         (ids.generate_room_id, "arq_room_"),
                         (ids.generate_channel_id, "arq_channel_")):
        made = {make() for _ in range(3)}
        assert len(made) == 3
        assert all(re.fullmatch(re.escape(prefix) + "[0-9a-f]{32}", i) for i in made), made
    assert ids.is_valid_message_id(first)


def test_one_id_generator_shared_by_threads_gives_every_count_once():
    from arqonbus.protocol.ids import IDGenerator
    generator = IDGenerator()
    made: list[str] = []

    def make() -> None:
        made.extend(generator.generate_message_id() for _ in range(2000))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(int(i.split("_")[2]) for i in made) == list(range(1, 8001))
    assert IDGenerator().generate_message_id().split("_")[2] == "1"  # each has its own count


@pytest.mark.parametrize("message_id, valid", [
    ("arq_1796048338671891741_1_59eaf4", True),
    ("arq_1_2_ABCDEF", True),
    ("arq_-1_+2_abcdef", True),  # the parts are what Python's int() reads, signs included
    ("arq_01ARZ3NDEKTSV4RRFFQ69G5FAV", True),
    ("", False),
    (None, False),
    ("msg-1", False),
    ("arq_msg_001", False),
    ("arq_cmd_history_get_001", False),
    ("ARQ_1_2_abcdef", False),
    ("arq_1_2_abcde", False),
    ("arq_1_2_abcdeg", False),
    ("arq_x_2_abcdef", False),
    ("arq_1_2_abcdef_3", False),
    ("arq_01arz3ndektsv4rrffq69g5fav", False),  # ULIDs are upper case
    ("arq_01ARZ3NDEKTSV4RRFFQ69G5FA", False),  # 25 characters
    ("arq_01ARZ3NDEKTSV4RRFFQ69G5FAI", False),  # I is not Crockford base 32
])
def test_is_valid_message_id_accepts_what_arqonbus_servers_accept(message_id, valid):
    from arqonbus.protocol.ids import is_valid_message_id
    assert is_valid_message_id(message_id) is valid


# ---- the hello-world bot ---------------------------------------------------------------------

# What ArqonBus's examples/python/hello_world_bot.py does, step by step, with its settings.
HELLO_BOT = r"""
import asyncio, json, os
from datetime import datetime, timezone

from arqonbus.protocol.ids import generate_message_id
from arqonbus.sdk import ArqonBusClient


async def main():
    client = ArqonBusClient(os.getenv("ARQONBUS_WS_URL", "ws://127.0.0.1:9100"),
                            jwt_token=os.getenv("ARQONBUS_AUTH_JWT"))
    async with client:
        welcome = await client.recv_json(timeout=2.0)
        print("connected:", json.dumps(welcome.get("payload", {}), sort_keys=True))
        hello = {"id": generate_message_id(), "type": "message",
                 "timestamp": datetime.now(timezone.utc).isoformat(), "version": "1.0",
                 "room": os.getenv("ARQONBUS_HELLO_ROOM", "science"),
                 "channel": os.getenv("ARQONBUS_HELLO_CHANNEL", "general"),
                 "payload": {"content": "Hello World from the bot"}}
        await client.send_json(hello)
        print("sent:", json.dumps(hello, sort_keys=True))
        print("recv:", json.dumps(await client.recv_json(timeout=5.0), sort_keys=True))


asyncio.run(main())
"""


async def run_hello_bot(tmp_path, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    """Run the bot as its own program; its exit status, printed lines by label, and stderr."""
    script = tmp_path / "hello_world_bot.py"
    script.write_text(HELLO_BOT)
    bot = await asyncio.create_subprocess_exec(
        sys.executable, str(script), cwd=tmp_path, env={"PATH": "/usr/bin:/bin", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(bot.communicate(), scaled(30))
    printed = {}
    for line in out.decode().splitlines():
        label, _, value = line.partition(": ")
        printed[label] = json.loads(value)
    return bot.returncode, printed, err.decode()


def hello_env(daemon, room: str, channel: str, **extra: str) -> dict[str, str]:
    return {"ARQONBUS_WS_URL": daemon.ws_url, "ARQONBUS_HELLO_ROOM": room,
            "ARQONBUS_HELLO_CHANNEL": channel, **extra}


async def test_hello_world_bot_greets_an_observer_of_science_general(daemon, connect_peer,
                                                                      tmp_path):
    observer = await connect_peer(daemon.ws_url)
    await observer.command("join_channel", {"room": "science:general"})
    status, printed, err = await run_hello_bot(tmp_path, hello_env(daemon, "science", "general"))
    assert status == 0, err
    assert printed["connected"]["welcome"] == "Connected to ArqonBus"
    assert re.fullmatch(r"arq_client_[0-9a-f]{32}", printed["connected"]["client_id"])
    sent = printed["sent"]
    assert printed["recv"]["type"] == "message_response" and printed["recv"]["id"] == sent["id"]
    assert printed["recv"]["payload"] == sent["payload"]
    got = await observer.recv_type("message")
    assert (got["id"], got["room"], got["channel"]) == (sent["id"], "science", "general")
    assert got["payload"] == {"content": "Hello World from the bot"}
    assert got["sender"] == printed["connected"]["client_id"]


async def test_hello_world_bot_passes_its_token_and_without_one_is_refused(make_daemon,
                                                                           connect_peer,
                                                                           tmp_path):
    daemon = make_daemon({"auth": {"enabled": True, "jwt_secret": SECRET}})
    token = issue_hs256({"sub": "hello-bot", "role": "user"}, SECRET)
    observer = await connect_peer(daemon.ws_url,
                                  additional_headers={"Authorization": f"Bearer {token}"})
    await observer.command("join_channel", {"room": "science:general"})
    status, printed, err = await run_hello_bot(tmp_path, hello_env(daemon, "science", "general",
                                                                   ARQONBUS_AUTH_JWT=token))
    assert status == 0, err
    assert (await observer.recv_type("message"))["id"] == printed["sent"]["id"]
    status, printed, err = await run_hello_bot(tmp_path, hello_env(daemon, "science", "general"))
    assert status == 1 and printed == {}
    assert err.splitlines()[-1] == (
        f"arqond.sdk.ArqonBusConnectionError: Failed to connect to {daemon.ws_url}: "
        "server rejected WebSocket connection: HTTP 401")
    await observer.expect_silence(0.2)


async def test_hello_world_bot_publishing_to_a_channel_nobody_created_is_acked(daemon, tmp_path):
    status, printed, err = await run_hello_bot(tmp_path, hello_env(daemon, "hello", "world"))
    assert status == 0, err
    assert printed["recv"]["type"] == "message_response", printed["recv"]
    assert printed["recv"]["id"] == printed["sent"]["id"]
