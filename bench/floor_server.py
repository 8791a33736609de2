"""The floor for B1/B2/B6: websockets' own broadcast with no routing, no parsing, no acks.

Every text frame a client sends goes, as it is, to every other connected client. Prints
``LISTENING host:port`` once bound (port 0 picks a free one) and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed


async def main(host: str, port: int) -> None:
    connections: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        connections.add(connection)
        try:
            async for message in connection:
                broadcast([c for c in connections if c is not connection], message)
        except ConnectionClosed:
            pass  # load generators exit without a closing handshake
        finally:
            connections.discard(connection)

    async with serve(handler, host, port, compression=None) as server:
        bound = server.sockets[0].getsockname()
        print(f"LISTENING {bound[0]}:{bound[1]}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--event-loop", choices=("asyncio", "uvloop"), default="asyncio")
    options = parser.parse_args()
    if options.event_loop == "uvloop":
        import uvloop
        uvloop.run(main(options.host, options.port))
    else:
        asyncio.run(main(options.host, options.port))
