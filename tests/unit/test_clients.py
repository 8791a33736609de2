"""Clients (arqond/core/clients.py): identity fields and their bound, what a token's claims
make of a client, and how a client describes itself."""

from __future__ import annotations

from datetime import datetime

import pytest

from arqond.core import principal as principals
from arqond.core.clients import Client, identity_from_query


@pytest.mark.parametrize("fields, problems", [
    ({"type": "bot", "screen_name": "s" * 256, "personality": "p", "avatar": "a"}, []),
    ({"screen_name": "s" * 257}, ["screen_name must be a string of 1 to 256 characters"]),
    ({"avatar": ""}, ["avatar must be a string of 1 to 256 characters"]),
    ({"type": None}, ["type must be a string of 1 to 256 characters"]),
    ({"colour": "red", "type": 1}, ["unknown identity field 'colour'",
                                    "type must be a string of 1 to 256 characters"]),
])
def test_identify_applies_all_fields_or_none(fields, problems):
    client = Client(None, "test")
    assert client.identify(fields) == problems
    applied = {key: getattr(client, key, None) for key in fields}
    assert (applied == fields) is (not problems)
    if problems:
        assert (client.type, client.screen_name) == ("human", None)


def test_query_parameters_that_set_identity():
    assert identity_from_query({"client_type": "ai-agent", "screen_name": "Ada",
                                "avatar": "a.png", "token": "t", "other": "x"}) == \
        {"type": "ai-agent", "screen_name": "Ada", "avatar": "a.png"}
    assert identity_from_query({"type": "bot", "personality": "calm"}) == \
        {"type": "bot", "personality": "calm"}


@pytest.mark.parametrize("kind, agent", [("human", False), ("dashboard", False),
                                         ("system", False), ("ai-agent", True), ("bot", True),
                                         ("zgent", True)])
def test_which_clients_count_as_agents(kind, agent):
    client = Client(None, "test")
    client.type = kind
    assert client.is_agent is agent


@pytest.mark.parametrize("principal, is_admin, role", [
    (principals.local(1000, frozenset({1000}), "u", admin=False, moo_member=False), False, None),
    (principals.local(0, frozenset({0}), "root", admin=True, moo_member=True), True, None),
    (principals.token({"role": "admin"}, peer_host="h"), True, "admin"),
    (principals.token({"role": "ADMIN"}, peer_host="h"), True, "ADMIN"),
    (principals.token({"role": "user"}, peer_host="h"), False, "user"),
    (principals.token({"role": ["admin"]}, peer_host="h"), False, None),  # a string role only
    (principals.anonymous("h"), False, None),
])
def test_admin_comes_from_the_principal(principal, is_admin, role):
    client = Client(None, "test", principal)
    assert (client.admin, client.describe()["role"]) == (is_admin, role)


def test_describe_reports_identity_claims_and_subscriptions():
    client = Client(None, "ws", principals.token({"sub": "alice", "tenant_id": "t1",
                                                  "role": "user"}, peer_host="127.0.0.1"),
                    peer="127.0.0.1:1")
    client.identify({"type": "bot", "screen_name": "b"})
    client.subscriptions |= {("lab", "b"), ("lab", "a")}
    client.room, client.channel = "lab", "a"
    data = client.describe()
    assert data == {**data, "client_id": client.id, "type": "bot", "transport": "ws",
                    "screen_name": "b", "personality": None, "avatar": None, "role": "user",
                    "tenant_id": "t1", "subject": "alice", "principal": "alice",
                    "admin": False, "room": "lab",
                    "channel": "a", "subscriptions": ["lab:a", "lab:b"]}
    assert datetime.fromisoformat(data["last_activity"]) and \
        datetime.fromisoformat(data["connected_at"])
