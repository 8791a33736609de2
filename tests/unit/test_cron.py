"""op.cron.* with manual timers (arqond/core/cron.py): delays, repeats, cancel, an owner's
disconnect, the bounds of every argument and of the job table."""

from __future__ import annotations

import pytest

from dataclasses import replace

from arqond import config as configuration
from arqond.core.casil import Casil, Policy
from arqond.core.cron import MAX_REPEAT, MAX_SECONDS, Cron
from arqond.core.errors import ErrorCode
from arqond.core.principal import NOBODY
from tests.unit.harness import BusHarness, assert_refused


@pytest.fixture
def bus():
    harness = BusHarness()
    harness.cron = harness.plug(Cron(harness.bus, harness.timers,
                                     configuration.defaults().cron))
    return harness


def schedule(client, **args):
    return client.ok("op.cron.schedule", {"room": "science", "channel": "general",
                                          "payload": {"content": "tick"}, **args})


def test_a_job_fires_once_after_its_delay_to_every_subscriber_including_the_scheduler(bus):
    scheduler, other = bus.connect(), bus.connect()
    response = scheduler.command("op.cron.schedule", {
        "room": "science", "channel": "general", "payload": {"content": "tick"},
        "delay_seconds": 0.05})
    assert response["payload"]["message"] == "Cron job scheduled"
    job = response["payload"]["data"]
    assert job["job_id"].startswith("cron_") and job["created_at"]
    assert (job["room"], job["channel"], job["delay_seconds"], job["interval_seconds"],
            job["repeat_count"]) == ("science", "general", 0.05, None, 1)
    assert bus.events_named("audit") == [{
        "text": f"cron job {job['job_id']} scheduled to science:general",
        "client_id": scheduler.id, **scheduler.client.principal.log_fields()}]
    bus.timers.advance(0.049)
    other.assert_silent()
    bus.timers.advance(0.001)
    for peer in (other, scheduler):
        fired = peer.next("message")
        assert (fired["payload"], fired["sender"]) == ({"content": "tick"}, "op-cron")
        assert fired["metadata"] == {"cron_job_id": job["job_id"], "iteration": 1}
        assert (fired["room"], fired["channel"]) == ("science", "general")
    assert scheduler.ok("op.cron.list") == {"jobs": [], "count": 0}   # a one-shot job is gone
    bus.timers.advance(10)
    other.assert_silent()
    assert bus.cron.fired_total == 1 and bus.timers.armed == {}


def test_the_default_delay_is_one_second(bus):
    job = schedule(bus.connect())
    assert job["delay_seconds"] == 1.0 and bus.timers.due(job["job_id"]) == 1.0


def test_a_repeating_job_fires_at_its_interval_then_stops_and_creates_its_channel(bus):
    scheduler, listener = bus.connect(), bus.connect()
    listener.ok("join_channel", {"room": "ops:*"})
    job = scheduler.ok("op.cron.schedule", {"room": "ops:ticks", "payload": {"n": 1},
                                            "delay_seconds": 2, "interval_seconds": 0.5,
                                            "repeat_count": 3})
    bus.timers.advance(2)
    assert listener.next("message")["metadata"]["iteration"] == 1
    assert bus.events_named("channel_created")[-1] == {"room": "ops", "channel": "ticks",
                                                       "created_by": "op-cron"}
    [listed] = scheduler.ok("op.cron.list")["jobs"]
    assert (listed["iteration"], listed["owner_client_id"]) == (1, scheduler.id)
    bus.timers.advance(0.49)
    listener.assert_silent()
    bus.timers.advance(0.51)
    assert [f["metadata"] for f in listener.take()] == [
        {"cron_job_id": job["job_id"], "iteration": n} for n in (2, 3)]
    bus.timers.advance(60)
    listener.assert_silent()
    scheduler.assert_silent()   # not subscribed to ops:ticks


def test_cancel_and_the_owners_disconnect_stop_jobs(bus):
    owner, watcher = bus.connect(), bus.connect()
    job = schedule(owner, delay_seconds=0.3)
    listed = owner.ok("op.cron.list")
    assert listed["count"] == 1 and listed["jobs"][0]["owner_client_id"] == owner.id
    assert watcher.ok("op.cron.list")["count"] == 0
    cancelled = owner.command("op.cron.cancel", {"job_id": job["job_id"]})
    assert cancelled["payload"] == {"message": "Cron job cancelled",
                                    "data": {"job_id": job["job_id"], "cancelled": True}}
    assert bus.events_named("cron_cancelled") == [{"job_id": job["job_id"],
                                                   "reason": f"cancelled by {owner.id}"}]
    repeating = schedule(owner, delay_seconds=0.3, interval_seconds=0.1, repeat_count=100)
    other = schedule(watcher, delay_seconds=5)
    bus.bus.detach(owner.client)
    assert bus.events_named("cron_cancelled")[-1] == {"job_id": repeating["job_id"],
                                                      "reason": "owner disconnected"}
    assert list(bus.timers.armed) == [other["job_id"]]
    bus.timers.advance(1)
    watcher.assert_silent()


def test_an_admin_sees_and_cancels_every_job_and_nobody_else_may(bus):
    owner, stranger, admin = bus.connect(), bus.connect(), bus.admin()
    missing = stranger.command("op.cron.cancel", {"job_id": "cron_000000000000"})
    assert assert_refused(missing, ErrorCode.NOT_FOUND, "no cron job 'cron_000000000000'") == \
        {"job_id": "cron_000000000000"}
    assert_refused(stranger.command("op.cron.cancel"), ErrorCode.VALIDATION_ERROR,
                   "op.cron.cancel requires argument 'job_id'")
    job = schedule(owner, delay_seconds=0.1, payload={"still": "fires"})
    assert_refused(stranger.command("op.cron.cancel", {"job_id": job["job_id"]}),
                   ErrorCode.AUTHORIZATION_ERROR,
                   "only the cron job's owner or an admin may cancel it")
    assert admin.ok("op.cron.list")["jobs"][0]["job_id"] == job["job_id"]
    bus.timers.advance(0.1)
    assert stranger.next("message")["payload"] == {"still": "fires"}
    job = schedule(owner, delay_seconds=0.1)
    assert admin.ok("op.cron.cancel", {"job_id": job["job_id"]})["cancelled"] is True


MISSING_TARGET = "Validation error: op.cron.schedule requires non-empty room and channel"
SECONDS = "Validation error: {} must be from 0.01 to 2.6784e+06"
BAD_NAME = ("invalid room name 'bad\\x07room': 1 to 128 characters, no control characters, "
            "no ':' (it separates room from channel), and not '*' alone (the wildcard)")


AT = {"room": "science", "channel": "general"}


@pytest.mark.parametrize("args, text", [
    ({"channel": "general", "payload": {}}, MISSING_TARGET),
    ({"room": "science", "payload": {}}, MISSING_TARGET),
    ({"room": "science:", "payload": {}}, MISSING_TARGET),
    (AT, "op.cron.schedule requires argument 'payload'"),
    ({**AT, "payload": "tick"}, "argument 'payload' must be dict, not a string"),
    ({**AT, "payload": {}, "delay_seconds": 0}, SECONDS.format("delay_seconds")),
    ({**AT, "payload": {}, "delay_seconds": 0.0099}, SECONDS.format("delay_seconds")),
    ({**AT, "payload": {}, "delay_seconds": MAX_SECONDS + 1}, SECONDS.format("delay_seconds")),
    ({**AT, "payload": {}, "delay_seconds": True}, SECONDS.format("delay_seconds")),
    ({**AT, "payload": {}, "delay_seconds": "1"},
     "argument 'delay_seconds' must be int/float, not a string"),
    ({**AT, "payload": {}, "repeat_count": 2},
     "Validation error: interval_seconds is required when repeat_count > 1"),
    ({**AT, "payload": {}, "repeat_count": 0},
     f"Validation error: repeat_count must be from 1 to {MAX_REPEAT}"),
    ({**AT, "payload": {}, "repeat_count": MAX_REPEAT + 1, "interval_seconds": 1},
     f"Validation error: repeat_count must be from 1 to {MAX_REPEAT}"),
    ({**AT, "payload": {}, "repeat_count": 1.5},
     "argument 'repeat_count' must be int, not a number"),
    ({**AT, "payload": {}, "repeat_count": 2, "interval_seconds": 0.001},
     SECONDS.format("interval_seconds")),
    ({"room": "bad\x07room", "channel": "general", "payload": {}}, BAD_NAME),
])
def test_schedule_refusals_schedule_nothing(bus, args, text):
    client, watcher = bus.connect(), bus.connect()
    assert_refused(client.command("op.cron.schedule", args), ErrorCode.VALIDATION_ERROR, text)
    assert client.ok("op.cron.list")["count"] == 0 and bus.timers.armed == {}
    bus.timers.advance(MAX_SECONDS)
    watcher.assert_silent()


def test_delays_and_repeats_at_their_bounds_are_accepted(bus):
    client = bus.connect()
    assert schedule(client, delay_seconds=0.01)["delay_seconds"] == 0.01
    assert schedule(client, delay_seconds=MAX_SECONDS)["delay_seconds"] == MAX_SECONDS
    job = schedule(client, repeat_count=MAX_REPEAT, interval_seconds=MAX_SECONDS)
    assert job["repeat_count"] == MAX_REPEAT


def test_a_principal_may_hold_64_jobs(bus):
    client, other = bus.connect(), bus.connect()
    for _ in range(64):   # quotas.cron_jobs
        schedule(client)
    assert_refused(client.command("op.cron.schedule", {
        "room": "science", "channel": "general", "payload": {}}), ErrorCode.LIMIT_EXCEEDED,
        f"quota quotas.cron_jobs (64) reached for {client.client.principal.name}: 64 in use")
    schedule(other)   # another principal's own allowance
    bus.bus.detach(client.client)   # its jobs end with it, and so do their charges
    assert bus.bus.charges.usage(client.client.principal) == {}


def test_a_principal_may_publish_10_messages_a_second_with_its_jobs(bus):
    client = bus.connect()
    schedule(client, repeat_count=5, interval_seconds=0.2)      # 5 a second
    schedule(client, repeat_count=5, interval_seconds=0.2)      # 10: at the bound
    assert_refused(client.command("op.cron.schedule", {
        "room": "science", "channel": "general", "payload": {}, "repeat_count": 2,
        "interval_seconds": 10}), ErrorCode.LIMIT_EXCEEDED,
        f"quota quotas.cron_rate (10) reached for {client.client.principal.name}: 10 in use")
    schedule(client)   # a job that fires once adds no rate


def test_the_whole_table_holds_at_most_cron_max_jobs(bus):
    assert bus.cron.settings.max_jobs == 1024
    bus.cron.settings = replace(bus.cron.settings, max_jobs=3)
    for client in [bus.connect() for _ in range(3)]:
        schedule(client)
    assert_refused(bus.connect().command("op.cron.schedule", {
        "room": "science", "channel": "general", "payload": {}}), ErrorCode.LIMIT_EXCEEDED,
        "cron.max_jobs (3) jobs are scheduled already")


def test_anonymous_clients_schedule_nothing(bus):
    anonymous = bus.connect(principal=NOBODY)
    assert_refused(anonymous.command("op.cron.schedule", {
        "room": "science", "channel": "general", "payload": {}}),
        ErrorCode.AUTHORIZATION_ERROR,
        "not allowed to schedule cron jobs (allowed: identified principals (not anonymous))")


def test_what_a_job_will_publish_is_inspected_when_it_is_scheduled(bus):
    bus.plug(Casil(bus.bus, Policy(enabled=True, mode="enforce", block_on_probable_secret=True,
                                   redaction_patterns=("secret",))))
    client, watcher = bus.connect(), bus.connect()
    data = assert_refused(client.command("op.cron.schedule", {
        "room": "science", "channel": "general", "payload": {"text": "a secret"},
        "delay_seconds": 0.05}), "CASIL_POLICY_BLOCKED_SECRET", "CASIL blocked message")
    assert data == {"reason": "CASIL_POLICY_BLOCKED_SECRET"}
    assert client.ok("op.cron.list")["count"] == 0
    bus.timers.advance(1)
    watcher.assert_silent()


def test_a_redacting_policy_rewrites_what_the_job_will_publish(bus):
    bus.plug(Casil(bus.bus, Policy(enabled=True, transport_redaction=True,
                                   redaction_paths=("pin",))))
    client = bus.connect()
    schedule(client, delay_seconds=0.5, payload={"pin": 1234, "n": 1})
    bus.timers.advance(0.5)
    assert client.next("message")["payload"] == {"pin": "***REDACTED***", "n": 1}
