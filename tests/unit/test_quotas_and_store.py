"""Per-principal charges (arqond/core/quotas.py) and op.store (arqond/core/store.py), in
process: every bound at its value, and what a refusal says."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from arqond import config as configuration
from arqond.core import principal as principals
from arqond.core.bus import Bus
from arqond.core.quotas import Charges, Quota, QuotaExceeded, default_limits
from arqond.core.store import Store

ALICE = principals.local(1000, frozenset({1000}), "alice", admin=False, moo_member=False)
BOB = principals.local(1001, frozenset({1001}), "bob", admin=False, moo_member=False)
ROOT = principals.local(0, frozenset({0}), "root", admin=True, moo_member=True)


def test_the_defaults_are_the_schemas():
    assert default_limits() == {quota: configuration.OPTIONS[f"quotas.{quota.value}"].default
                                for quota in Quota}


def test_a_quota_is_reached_at_its_bound_and_freed_by_release():
    heard = []
    charges = Charges({**default_limits(), Quota.WEBHOOKS: 2})
    charges.on_refused = lambda exc, who: heard.append((exc.quota, who.key))
    charges.charge(ALICE, Quota.WEBHOOKS)
    charges.charge(ALICE, Quota.WEBHOOKS)
    with pytest.raises(QuotaExceeded) as refused:
        charges.charge(ALICE, Quota.WEBHOOKS)
    assert str(refused.value) == "quota quotas.webhooks (2) reached for alice: 2 in use"
    assert heard == [(Quota.WEBHOOKS, "uid:1000")] and charges.refused[Quota.WEBHOOKS] == 1
    charges.charge(BOB, Quota.WEBHOOKS)          # each principal has its own
    charges.release(ALICE, Quota.WEBHOOKS)
    charges.charge(ALICE, Quota.WEBHOOKS)
    assert charges.usage(ALICE) == {"webhooks": 2}


def test_admins_are_never_charged():
    charges = Charges({**default_limits(), Quota.CONNECTIONS: 1})
    for _ in range(5):
        charges.charge(ROOT, Quota.CONNECTIONS)
    assert charges.usage(ROOT) == {}


def test_releasing_what_was_never_charged_stays_at_zero():
    charges = Charges(default_limits())
    charges.release(ALICE, Quota.CHANNELS, 3)
    charges.charge(ALICE, Quota.CHANNELS)
    charges.release(ALICE, Quota.CHANNELS, 5)
    assert charges.usage(ALICE) == {} and "uid:1000" not in charges.used


def settings(**changes):
    values = {"max_keys": 10000, "max_value_bytes": 65536, "max_bytes": 1 << 26}
    return SimpleNamespace(**{**values, **changes})


class ListSink:
    def __init__(self) -> None:
        self.frames: list[dict] = []

    def send(self, frame: bytes) -> bool:
        self.frames.append(orjson.loads(frame))
        return True

    def close(self, code: int, reason: str) -> None:
        pass


class Harness:
    """A Bus with the store plugged in, and one client per principal."""

    def __init__(self, store_settings=None, limits=None) -> None:
        self.bus = Bus(charges=Charges({**default_limits(), **(limits or {})}))
        self.store = Store(store_settings or settings(), self.bus.charges)
        self.bus.plug(commands=self.store.commands())
        self.frames: dict[str, list] = {}

    def client(self, principal):
        return self.bus.attach(ListSink(), "test", principal, welcome=False,
                               join_default=False)

    def command(self, client, name: str, **args):
        frames = client.sink.frames
        frames.clear()
        self.bus.receive(client, orjson.dumps({"type": "command", "command": name,
                                               "args": args}))
        response, ack = frames
        assert ack["type"] == "command_response" and ack["payload"] == {"result": "ok"}
        return response


def data(response):
    assert response["status"] == "success", response
    return response["payload"]["data"]


def test_each_principal_has_its_own_space_and_cannot_reach_anothers():
    h = Harness()
    alice, bob = h.client(ALICE), h.client(BOB)
    assert data(h.command(alice, "op.store.set", key="k", value={"a": 1})) == \
        {"namespace": "default", "key": "k", "updated": False}
    assert data(h.command(bob, "op.store.get", key="k"))["found"] is False
    assert data(h.command(bob, "op.store.list"))["keys"] == []
    assert data(h.command(bob, "op.store.delete", key="k"))["deleted"] is False
    # Not even by naming the namespace, as ArqonBus allowed across tenants.
    assert data(h.command(bob, "op.store.get", key="k", namespace="default"))["found"] is False
    assert data(h.command(alice, "op.store.get", key="k"))["value"] == {"a": 1}


def test_principals_of_one_tenant_share_a_space():
    h = Harness()
    one = h.client(principals.token({"sub": "a", "tenant_id": "t1"}, peer_host="h"))
    two = h.client(principals.token({"sub": "b", "tenant_id": "t1"}, peer_host="h"))
    assert data(h.command(one, "op.store.set", key="k", value=1))["namespace"] == "tenant:t1"
    assert data(h.command(two, "op.store.get", key="k"))["value"] == 1


@pytest.mark.parametrize("bound, fill, refusal", [
    ("max_value_bytes", [("big", "x" * 10)],
     "value of 12 bytes is larger than store.max_value_bytes (11)"),
    ("max_keys", [("a", 1), ("b", 1), ("c", 1)],
     "the store holds store.max_keys (2) keys already"),
    ("max_bytes", [("a", "x" * 5), ("b", "x" * 5)],
     "the store holds 7 of store.max_bytes (11) bytes; this value needs 7"),
])
def test_store_bounds_refuse_at_their_value(bound, fill, refusal):
    h = Harness(settings(**{bound: {"max_value_bytes": 11, "max_keys": 2,
                                    "max_bytes": 11}[bound]}))
    alice = h.client(ALICE)
    *fits, (key, value) = fill
    for k, v in fits:
        data(h.command(alice, "op.store.set", key=k, value=v))
    refused = h.command(alice, "op.store.set", key=key, value=value)
    assert (refused["error_code"], refused["error"]) == ("LIMIT_EXCEEDED", refusal)
    assert h.store.refused_total == 1
    assert data(h.command(alice, "op.store.get", key=key))["found"] is False


def test_store_quotas_are_per_principal_and_freed_by_delete():
    h = Harness(limits={Quota.STORE_KEYS: 1, Quota.STORE_BYTES: 10})
    alice, bob = h.client(ALICE), h.client(BOB)
    data(h.command(alice, "op.store.set", key="a", value=1))
    refused = h.command(alice, "op.store.set", key="b", value=1)
    assert refused["error"] == "quota quotas.store_keys (1) reached for alice: 1 in use"
    data(h.command(bob, "op.store.set", key="b", value=1))      # bob's own quota
    data(h.command(alice, "op.store.set", key="a", value="x" * 8))   # updating: 10 bytes
    refused = h.command(alice, "op.store.set", key="a", value="x" * 9)
    assert refused["error"] == "quota quotas.store_bytes (10) reached for alice: 10 in use"
    data(h.command(alice, "op.store.delete", key="a"))
    data(h.command(alice, "op.store.set", key="c", value="x" * 8))
    assert h.bus.charges.usage(ALICE) == {"connections": 1, "store_keys": 1, "store_bytes": 10}
    assert (h.store.keys, h.store.bytes) == (2, 11)
