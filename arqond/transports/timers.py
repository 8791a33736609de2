"""Timers (arqond/core/timers.py) on the event loop: one loop timer handle per armed key."""

from __future__ import annotations

import asyncio
from typing import Callable, Hashable


class LoopTimers:
    name = "timers"

    def __init__(self) -> None:
        self.handles: dict[Hashable, asyncio.TimerHandle] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for handle in self.handles.values():
            handle.cancel()
        self.handles.clear()

    def reload(self, config: object) -> None:
        pass

    def arm(self, key: Hashable, delay: float, fire: Callable[[], None]) -> None:
        self.disarm(key)
        self.handles[key] = asyncio.get_running_loop().call_later(delay, self._fire, key, fire)

    def disarm(self, key: Hashable) -> None:
        handle = self.handles.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _fire(self, key: Hashable, fire: Callable[[], None]) -> None:
        del self.handles[key]
        fire()
