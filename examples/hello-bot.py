#!/usr/bin/python3
"""A hello bot: joins a channel and answers every message that says hello.

    .venv/bin/python examples/hello-bot.py science:general       # in a checkout
    PYTHONPATH=/usr/lib/arqond python3 hello-bot.py science:general   # next to the package

It finds arqond as the arqon command does (arqond.sdk.local_client): ARQONBUS_WS_URL, else
the control socket or the WebSocket port named in arqond's configuration (ARQONBUS_CONFIG,
else /etc/arqond/arqond.toml). It prints one line on stderr when it listens, then runs until
interrupted; when arqond restarts, it connects again and answers what was said meanwhile.
"""

import asyncio
import sys

from arqond.sdk import local_client

NAME = "hello-bot"


def answer(frame: dict) -> dict | None:
    """The payload answering a message, or None when the message does not say hello."""
    payload = frame.get("payload")
    text = payload.get("content") if isinstance(payload, dict) else payload
    if isinstance(text, str) and text.lower().startswith("hello"):
        return {"content": f"hello! {NAME} here", "in_reply_to": frame["id"]}
    return None


async def main(target: str) -> None:
    bot = local_client(screen_name=NAME)
    bot.reconnect = True      # resume the channel after a restart, nothing missed or twice
    async with bot:
        await bot.join(target)
        print(f"{NAME}: listening on {target}", file=sys.stderr, flush=True)
        async for frame in bot:
            if frame.get("type") != "message" or frame.get("sender") == bot.client_id:
                continue  # acks, and our own answers
            reply = answer(frame)
            if reply is not None:
                await bot.publish(f"{frame['room']}:{frame['channel']}", reply)


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "science:general"))
    except KeyboardInterrupt:
        pass
