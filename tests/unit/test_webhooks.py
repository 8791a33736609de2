"""op.webhook.* rules in-process (arqond/core/webhooks.py): validation of every argument at
its bound, which routed messages a rule matches, who may list and remove rules, and when
rules go. The POSTs themselves are the adapter's (tests/test_ws_webhooks.py)."""

from __future__ import annotations

import pytest

from dataclasses import replace

from arqond import config as configuration
from arqond.core.access import Action, Who
from arqond.core.errors import ErrorCode
from arqond.core.webhooks import MAX_HEADERS, MAX_URL_LENGTH, Webhooks
from tests.unit.harness import BusHarness, assert_refused

URL = "http://127.0.0.1/"
SCHEME = "Validation error: url must start with http:// or https:// and name a host"
SHAPE = "Validation error: url is too long, contains whitespace, or names port 0"
TIMEOUT = "Validation error: timeout_seconds must be greater than 0 and at most 60"


@pytest.fixture
def bus():
    harness = BusHarness()
    # What the rules of registering are tested under: ordinary clients may (allow_non_admin),
    # to any loopback port. The policy and the destinations have tests of their own.
    settings = replace(configuration.defaults().webhooks, allow_non_admin=True,
                       allowed_destinations=("http://127.0.0.1:*", "https://*:*"))
    harness.bus.access.rules[Action.WEBHOOK] = Who.IDENTIFIED
    harness.webhooks = harness.plug(Webhooks(settings, harness.bus.charges))
    return harness


def register(client, **args):
    return client.ok("op.webhook.register", {"url": URL, **args})


def test_a_rule_is_registered_with_its_defaults(bus):
    owner = bus.connect()
    response = owner.command("op.webhook.register", {"url": "https://example.org/hook?x=1",
                                                     "room": "science:general",
                                                     "headers": {"X-Token": "abc"}})
    assert response["payload"]["message"] == "Webhook registered"
    rule = response["payload"]["data"]
    assert rule["rule_id"].startswith("wh_") and rule["created_at"]
    assert (rule["url"], rule["room"], rule["channel"], rule["timeout_seconds"]) == \
        ("https://example.org/hook?x=1", "science", "general", 2.0)
    assert "headers" not in rule and "owner_client_id" not in rule
    [stored] = bus.webhooks.rules.values()
    assert stored.headers == {"X-Token": "abc"} and stored.owner == owner.id


# Issue 13 makes op.webhook.register admin-only with a destination allow-list: these rows
# gain an admin column and refusals for destinations off the list then.
@pytest.mark.parametrize("args, text", [
    ({}, "op.webhook.register requires argument 'url'"),
    ({"url": 5}, "argument 'url' must be str, not a number"),
    ({"url": "ftp://example.org/"}, SCHEME),
    ({"url": "http:///nohost"}, SCHEME),
    ({"url": "example.org"}, SCHEME),
    ({"url": "http://127.0.0.1:99999/"}, "Validation error: bad url: Port out of range 0-65535"),
    ({"url": "http://[::1/"}, "Validation error: bad url: Invalid IPv6 URL"),
    ({"url": "http://127.0.0.1:0/"}, SHAPE),
    ({"url": "http://127.0.0.1/a b"}, SHAPE),
    ({"url": "http://127.0.0.1/" + "x" * (MAX_URL_LENGTH - len(URL) + 1)}, SHAPE),
    ({"url": URL, "timeout_seconds": 0}, TIMEOUT),
    ({"url": URL, "timeout_seconds": 60.01}, TIMEOUT),
    ({"url": URL, "timeout_seconds": True}, TIMEOUT),
    ({"url": URL, "headers": {"Host": "evil"}},
     "Validation error: header name 'Host' is not a valid token or is set by arqond itself"),
    ({"url": URL, "headers": {"bad name": "x"}},
     "Validation error: header name 'bad name' is not a valid token or is set by arqond itself"),
    ({"url": URL, "headers": {"X-A": "a\r\nX-B: b"}},
     "Validation error: header 'X-A' must be a string without line breaks"),
    ({"url": URL, "headers": {"X-A": 1}},
     "Validation error: header 'X-A' must be a string without line breaks"),
    ({"url": URL, "headers": {f"X-{n}": "v" for n in range(MAX_HEADERS + 1)}},
     f"Validation error: at most {MAX_HEADERS} headers"),
    ({"url": URL, "headers": "X-A: a"}, "argument 'headers' must be dict, not a string"),
    ({"url": URL, "room": "bad\x07room"},
     "invalid room name 'bad\\x07room': 1 to 128 characters, no control characters, no ':' "
     "(it separates room from channel), and not '*' alone (the wildcard)"),
])
def test_register_refusals_keep_no_rule(bus, args, text):
    client = bus.connect()
    assert_refused(client.command("op.webhook.register", args), ErrorCode.VALIDATION_ERROR,
                   text)
    assert client.ok("op.webhook.list")["count"] == 0


def test_arguments_at_their_bounds_are_accepted(bus):
    client = bus.connect()
    long_url = URL + "x" * (MAX_URL_LENGTH - len(URL))
    assert register(client, url=long_url)["url"] == long_url
    assert register(client, timeout_seconds=60)["timeout_seconds"] == 60.0
    headers = {f"X-{n}": "v" for n in range(MAX_HEADERS)}
    register(client, headers=headers)
    assert register(client, url="https://h:8443/")["url"] == "https://h:8443/"


@pytest.mark.parametrize("rule, room, channel, matches", [
    ({}, "science", "general", True),
    ({}, "other", None, True),
    ({"room": "science"}, "science", "explore", True),
    ({"room": "science"}, "lab", "explore", False),
    ({"channel": "general"}, "lab", "general", True),
    ({"channel": "general"}, "lab", "bench", False),
    ({"room": "science", "channel": "general"}, "science", "general", True),
    ({"room": "science", "channel": "general"}, "science", None, False),
    ({"room": "science:general"}, "science", "explore", False),
])
def test_which_routed_messages_a_rule_matches(bus, rule, room, channel, matches):
    register(bus.connect(), **rule)
    assert (len(list(bus.webhooks.matching(room, channel))) == 1) is matches


def test_each_client_lists_its_own_rules_and_an_admin_all(bus):
    owner, stranger, admin = bus.connect(), bus.connect(), bus.admin()
    register(owner, headers={"Authorization": "secret"})
    register(owner, room="science")
    listed = owner.command("op.webhook.list")
    assert listed["payload"]["message"] == "Webhook rules listed"
    data = listed["payload"]["data"]
    assert data["count"] == 2
    assert {r["owner_client_id"] for r in data["rules"]} == {owner.id}
    assert all("headers" not in r for r in data["rules"])   # header values may be credentials
    assert stranger.ok("op.webhook.list") == {"rules": [], "count": 0}
    assert admin.ok("op.webhook.list")["count"] == 2


def test_unregister_by_the_owner_or_an_admin_only(bus):
    owner, stranger, admin = bus.connect(), bus.connect(), bus.admin()
    missing = stranger.command("op.webhook.unregister", {"rule_id": "wh_000000000000"})
    assert assert_refused(missing, ErrorCode.NOT_FOUND, "no webhook rule 'wh_000000000000'") \
        == {"rule_id": "wh_000000000000"}
    rule = register(owner)
    assert_refused(stranger.command("op.webhook.unregister", {"rule_id": rule["rule_id"]}),
                   ErrorCode.AUTHORIZATION_ERROR,
                   "only the webhook rule's owner or an admin may unregister it")
    assert owner.ok("op.webhook.list")["count"] == 1
    removed = owner.command("op.webhook.unregister", {"rule_id": rule["rule_id"]})
    assert removed["payload"] == {"message": "Webhook unregistered",
                                  "data": {"rule_id": rule["rule_id"], "removed": True}}
    rule = register(owner)
    assert admin.ok("op.webhook.unregister", {"rule_id": rule["rule_id"]})["removed"] is True
    assert bus.webhooks.rules == {}


def test_a_clients_rules_go_when_it_disconnects(bus):
    owner, other = bus.connect(), bus.connect()
    register(owner)
    register(owner, room="science")
    kept = register(other)
    bus.bus.detach(owner.client)
    assert list(bus.webhooks.rules) == [kept["rule_id"]]


def test_a_principal_may_hold_32_rules(bus):
    client, other = bus.connect(), bus.connect()
    for _ in range(32):   # quotas.webhooks
        register(client)
    assert_refused(client.command("op.webhook.register", {"url": URL}), ErrorCode.LIMIT_EXCEEDED,
                   f"quota quotas.webhooks (32) reached for {client.client.principal.name}: "
                   "32 in use")
    register(other)


def test_the_whole_table_holds_at_most_webhooks_max_rules(bus):
    assert bus.webhooks.settings.max_rules == 1024
    bus.webhooks.settings = replace(bus.webhooks.settings, max_rules=2)
    register(bus.connect())
    register(bus.connect())
    assert_refused(bus.connect().command("op.webhook.register", {"url": URL}),
                   ErrorCode.LIMIT_EXCEEDED, "webhooks.max_rules (2) rules exist already")
