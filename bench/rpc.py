"""Line-delimited JSON-RPC round trips for B5, and the handler side as a process of its own:

    python -m bench.rpc zgent SOCKET     attach to a Zgent socket with arqon.serve, then answer
    python -m bench.rpc echo SOCKET      the physical floor: listen on SOCKET and answer directly
    python -m bench.rpc nats URL         NATS responder on subject bench.rpc

Each prints one line, "ready" or {"error": ...}, then answers requests with the same id until it
is terminated.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from typing import Any

import orjson

NATS_SUBJECT = "bench.rpc"


def answer(request: bytes) -> bytes:
    message = orjson.loads(request)
    return orjson.dumps({"jsonrpc": "2.0", "id": message.get("id"),
                         "result": message.get("params")}) + b"\n"


def serve_lines(conn: socket.socket) -> None:
    reader = conn.makefile("rb")
    for request in reader:
        conn.sendall(answer(request))


def zgent_handler(path: str) -> None:
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(path)
    conn.sendall(b'{"jsonrpc":"2.0","id":"bench-serve","method":"arqon.serve","params":{}}\n')
    reader = conn.makefile("rb")
    reply = orjson.loads(reader.readline() or b"{}")
    if "error" in reply or reply.get("id") != "bench-serve":
        print(orjson.dumps({"error": reply.get("error") or reply}).decode(), flush=True)
        return
    print("ready", flush=True)
    for request in reader:
        conn.sendall(answer(request))


def echo_server(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    print("ready", flush=True)
    conn, _ = listener.accept()
    serve_lines(conn)


async def nats_responder(url: str) -> None:
    import nats

    client = await nats.connect(url)

    async def respond(msg: Any) -> None:
        await msg.respond(msg.data)

    await client.subscribe(NATS_SUBJECT, cb=respond)
    await client.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


def unix_round_trips(path: str, count: int, timeout: float = 5.0) -> list[int]:
    """``count`` sequential requests on one connection; latency of each in ns."""
    conn = socket.socket(socket.AF_UNIX)
    conn.settimeout(timeout)
    conn.connect(path)
    reader = conn.makefile("rb")
    latencies = []
    for seq in range(count):
        request_id = f"q-{seq}"
        request = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": "bench.echo",
                                "params": {"seq": seq}}) + b"\n"
        began = time.monotonic_ns()
        conn.sendall(request)
        reply = orjson.loads(reader.readline())
        latencies.append(time.monotonic_ns() - began)
        if reply.get("id") != request_id or "result" not in reply:
            raise RuntimeError(f"round trip {seq}: unexpected reply {reply}")
    conn.close()
    return latencies


async def nats_round_trips(url: str, count: int) -> list[int]:
    import nats

    client = await nats.connect(url)
    latencies = []
    try:
        for seq in range(count):
            began = time.monotonic_ns()
            await client.request(NATS_SUBJECT, b'{"seq":%d}' % seq, timeout=5)
            latencies.append(time.monotonic_ns() - began)
    finally:
        await client.close()
    return latencies


if __name__ == "__main__":
    mode, target = sys.argv[1], sys.argv[2]
    if mode == "zgent":
        zgent_handler(target)
    elif mode == "echo":
        try:
            echo_server(target)
        finally:
            os.unlink(target)
    else:
        asyncio.run(nats_responder(target))
