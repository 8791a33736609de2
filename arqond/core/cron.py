"""op.cron.*: messages published later, once or repeatedly, on behalf of a client.

The job table and the commands live here, without clocks: each job arms a timer (Timers,
arqond/core/timers.py) for its next firing, and a firing publishes the job's message and arms
the next one. A client's jobs are cancelled when it disconnects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arqond.core.access import Action
from arqond.core.commands import Command, CommandContext, CommandError, owned_item
from arqond.core.envelope import now_iso
from arqond.core.errors import ErrorCode
from arqond.core.principal import Principal
from arqond.core.quotas import Quota, QuotaExceeded
from arqond.core.router import check_name, split_target
from arqond.core.timers import Timers

if TYPE_CHECKING:
    from arqond.core.bus import Bus

MIN_SECONDS = 0.01          # shortest delay or interval: bounds the publish rate of one job
MAX_SECONDS = 31 * 86400.0
MAX_REPEAT = 1_000_000
CRON_SENDER = "op-cron"


@dataclass
class Job:
    job_id: str
    owner: str                  # the client that scheduled it: the job ends with it
    principal: Principal        # who it is charged to
    room: str
    channel: str
    payload: dict[str, Any]
    delay_seconds: float
    interval_seconds: float | None
    repeat_count: int
    created_at: str
    iteration: int = 0

    @property
    def rate(self) -> float:
        """Messages per second it may publish: what quotas.cron_rate counts."""
        return 1 / self.interval_seconds if self.interval_seconds and self.repeat_count > 1 \
            else 0.0

    def describe(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "room": self.room, "channel": self.channel,
                "delay_seconds": self.delay_seconds, "interval_seconds": self.interval_seconds,
                "repeat_count": self.repeat_count, "created_at": self.created_at}


class Cron:
    def __init__(self, bus: "Bus", timers: Timers, settings: Any) -> None:
        """``settings``: the [cron] section (max_jobs)."""
        self.bus = bus
        self.timers = timers
        self.settings = settings
        self.jobs: dict[str, Job] = {}
        self.fired_total = 0

    def commands(self) -> dict[str, Command]:
        return {"op.cron.schedule": Command(self._schedule, False, "publish payload to "
                                            "room:channel after delay_seconds (repeatable)"),
                "op.cron.list": Command(self._list, False, "your scheduled jobs (admin: all)"),
                "op.cron.cancel": Command(self._cancel, False, "cancel a scheduled job")}

    def _fire(self, job: Job) -> None:
        """Publish this firing's message and arm the next one, if any."""
        job.iteration += 1
        self.fired_total += 1
        if job.iteration >= job.repeat_count:
            self._forget(job)
        else:
            assert job.interval_seconds is not None
            self.timers.arm(job.job_id, job.interval_seconds, lambda: self._fire(job))
        self.bus.publish({"type": "message", "sender": CRON_SENDER, "room": job.room,
                          "channel": job.channel, "payload": job.payload,
                          "metadata": {"cron_job_id": job.job_id,
                                       "iteration": job.iteration}})

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "client_disconnected":
            owner = fields["client_id"]
            for job_id in [j.job_id for j in self.jobs.values() if j.owner == owner]:
                self._drop(job_id, "owner disconnected")

    def _drop(self, job_id: str, reason: str) -> None:
        self._forget(self.jobs[job_id])
        self.timers.disarm(job_id)
        self.bus.emit("cron_cancelled", job_id=job_id, reason=reason)

    def _forget(self, job: Job) -> None:
        del self.jobs[job.job_id]
        self.bus.charges.release(job.principal, Quota.CRON_JOBS)
        self.bus.charges.release(job.principal, Quota.CRON_RATE, job.rate)

    def _schedule(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        ctx.require(Action.CRON)
        room, channel = split_target(ctx.arg("room", str), ctx.arg("channel", str))
        if room is None or channel is None:
            raise CommandError(ErrorCode.VALIDATION_ERROR,
                               "Validation error: op.cron.schedule requires "
                               "non-empty room and channel")
        check_name("room", room)
        check_name("channel", channel)
        payload = ctx.arg("payload", dict, required=True)
        delay = _seconds(ctx, "delay_seconds", 1.0)
        repeat = ctx.arg("repeat_count", int, 1)
        if not 0 < repeat <= MAX_REPEAT:
            raise CommandError(ErrorCode.VALIDATION_ERROR, "Validation error: repeat_count must be "
                               f"from 1 to {MAX_REPEAT}")
        interval = _seconds(ctx, "interval_seconds", None)
        if repeat > 1 and interval is None:
            raise CommandError(ErrorCode.VALIDATION_ERROR, "Validation error: interval_seconds is "
                               "required when repeat_count > 1")
        limit = self.settings.max_jobs
        if len(self.jobs) >= limit:
            self.bus.emit("limit_reached", limit="cron.max_jobs", value=limit,
                          client_id=ctx.client.id)
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, f"cron.max_jobs ({limit}) jobs are "
                               "scheduled already")
        # Content inspection applies to what will be published, as if the client sent it now.
        verdict = self.bus.screen({"id": ctx.envelope["id"], "type": "message", "room": room,
                                   "channel": channel, "payload": payload}, ctx.client.id)
        if verdict is not None and verdict.blocked:
            raise CommandError(verdict.reason, "CASIL blocked message",
                               {"reason": verdict.reason})
        if verdict is not None and verdict.replace_payload:
            payload = verdict.payload
        principal = ctx.client.principal
        job = Job("cron_" + os.urandom(6).hex(), ctx.client.id, principal, room, channel,
                  payload, delay, interval, repeat, now_iso())
        charges = self.bus.charges
        try:
            charges.charge(principal, Quota.CRON_JOBS)
            try:
                charges.charge(principal, Quota.CRON_RATE, job.rate)
            except QuotaExceeded:
                charges.release(principal, Quota.CRON_JOBS)
                raise
        except QuotaExceeded as exc:
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, str(exc)) from None
        self.jobs[job.job_id] = job
        self.timers.arm(job.job_id, delay, lambda: self._fire(job))
        self.bus.audit(principal, f"cron job {job.job_id} scheduled to {job.room}:"
                       f"{job.channel}", client_id=ctx.client.id)
        return "Cron job scheduled", job.describe()

    def _list(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        jobs = [{**j.describe(), "owner_client_id": j.owner, "iteration": j.iteration}
                for j in self.jobs.values() if ctx.client.admin or j.owner == ctx.client.id]
        return "Cron jobs listed", {"jobs": jobs, "count": len(jobs)}

    def _cancel(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        job_id, _ = owned_item(ctx, self.jobs, "job_id", "cron job", "cancel")
        self._drop(job_id, f"cancelled by {ctx.client.id}")
        return "Cron job cancelled", {"job_id": job_id, "cancelled": True}


def _seconds(ctx: CommandContext, key: str, default: float | None) -> float | None:
    value = ctx.arg(key, (int, float), default)
    if value is None:
        return None
    if isinstance(value, bool) or not MIN_SECONDS <= value <= MAX_SECONDS:
        raise CommandError(ErrorCode.VALIDATION_ERROR, f"Validation error: {key} must be from "
                           f"{MIN_SECONDS:g} to {MAX_SECONDS:g}")
    return float(value)
