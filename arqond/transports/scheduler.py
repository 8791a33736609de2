"""The clock of op.cron.*: event-loop timers that publish each job's message when it is due.

Every firing goes out through ``Bus.publish`` (sender ``op-cron``) to every subscriber of the
job's channel, its scheduler included. One timer handle per job at a time, so the pending
timers are bounded by the job table's own limits.
"""

from __future__ import annotations

import asyncio
from typing import Any

from arqond.config import Config
from arqond.core.bus import Bus
from arqond.core.cron import Cron


class CronScheduler:
    name = "cron"

    def __init__(self, bus: Bus, cron: Cron) -> None:
        self.bus = bus
        self.cron = cron
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        bus.listeners.append(self._on_event)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()

    def reload(self, config: Config) -> None:
        pass  # the limits are fixed

    def _on_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "cron_scheduled" and self.loop is not None:
            self._arm(fields["job_id"], fields["delay"])
        elif event == "cron_cancelled":
            timer = self.timers.pop(fields["job_id"], None)
            if timer is not None:
                timer.cancel()

    def _arm(self, job_id: str, delay: float) -> None:
        assert self.loop is not None
        self.timers[job_id] = self.loop.call_later(delay, self._fire, job_id)

    def _fire(self, job_id: str) -> None:
        self.timers.pop(job_id, None)
        env, next_delay = self.cron.fire(job_id)
        if env is None:
            return
        self.bus.publish(env)
        if next_delay is not None:
            self._arm(job_id, next_delay)
