"""The SDK against the real daemon, used as existing ArqonBus code and the hello-world bot do."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime, timezone

import pytest

from arqond.core.envelope import IdGenerator
from arqond.sdk import ArqonBusClient, ArqonBusConnectionError, CommandFailed
from tests.conftest import ROOT, scaled


async def test_hello_world_bot_path(daemon):
    async with ArqonBusClient(daemon.ws_url) as observer, ArqonBusClient(daemon.ws_url) as bot:
        assert (await observer.recv_json(timeout=scaled(2.0)))["payload"]["welcome"]
        welcome = await bot.recv_json(timeout=scaled(2.0))
        assert welcome["payload"]["client_id"] == bot.client_id
        message_id = IdGenerator().next()
        await bot.send_json({"id": message_id, "type": "message", "version": "1.0",
                             "timestamp": datetime.now(timezone.utc).isoformat(),
                             "room": "science", "channel": "general",
                             "payload": {"content": "hello world"}})
        ack = await bot.recv_json(timeout=scaled(1.0))
        assert ack["type"] == "message_response" and ack["id"] == message_id
        got = await observer.recv_json(timeout=scaled(2.0))
        assert got["payload"] == {"content": "hello world"} and got["sender"] == bot.client_id


async def test_join_publish_command_and_iterate(daemon):
    async with ArqonBusClient(daemon.ws_url) as a, ArqonBusClient(daemon.ws_url) as b:
        await a.recv_json(scaled(2))
        await b.recv_json(scaled(2))
        joined = await b.join("lab:bench")
        assert joined["created"] is True
        sent = await a.publish("lab:bench", {"k": 1})
        # b's command waits for its own response; the message arriving meanwhile is kept.
        status = await b.command("status")
        assert status["status"] == "success"
        received = []
        async for frame in b:
            received.append(frame)
            break
        assert received[0]["id"] == sent and received[0]["payload"] == {"k": 1}
        assert (await a.recv_json(scaled(2)))["type"] == "message_response"
        with pytest.raises(CommandFailed) as failed:
            await a.command("delete_channel", {"room": "lab:bench"})
        assert failed.value.response["error_code"] == "AUTHORIZATION_ERROR"
        await b.leave("lab:bench")


async def test_connection_errors_are_sdk_errors(daemon):
    client = ArqonBusClient("ws://127.0.0.1:1/", connect_timeout=1.0)
    with pytest.raises(ArqonBusConnectionError, match="Failed to connect"):
        await client.connect()
    async with ArqonBusClient(daemon.ws_url) as quiet:
        await quiet.recv_json(scaled(2))
        with pytest.raises(ArqonBusConnectionError, match="Timed out waiting for message"):
            await quiet.recv_json(timeout=0.2)
    # ArqonBus's text for it, which replaced arqond's "Not connected".
    with pytest.raises(ArqonBusConnectionError, match="^Client is not connected$"):
        await ArqonBusClient(daemon.ws_url).send_json({})


async def test_the_hello_bot_example_answers_hello_and_nothing_else(daemon):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARQONBUS_")}
    bot = await asyncio.create_subprocess_exec(
        sys.executable, "examples/hello-bot.py", "lab:bench", cwd=ROOT,
        env={**env, "ARQONBUS_CONFIG": str(daemon.config_path), "PYTHONPATH": str(ROOT)},
        stderr=asyncio.subprocess.PIPE)
    try:
        assert await asyncio.wait_for(bot.stderr.readline(), 15) == \
            b"hello-bot: listening on lab:bench\n"
        async with ArqonBusClient(daemon.ws_url) as person:
            await person.join("lab:bench")
            await person.publish("lab:bench", {"content": "good morning"})
            asked = await person.publish("lab:bench", {"content": "Hello there"})
            answers = []
            while not answers:
                frame = await person.recv_json(timeout=10)
                if frame.get("type") == "message" and frame.get("room") == "lab":
                    answers.append(frame)
            # The first message got no answer: the one answer is to the second.
            assert answers[0]["payload"] == {"content": "hello! hello-bot here",
                                             "in_reply_to": asked}
            assert answers[0]["channel"] == "bench"
    finally:
        bot.send_signal(2)
        assert await asyncio.wait_for(bot.wait(), 10) == 0
