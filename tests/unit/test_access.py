"""The access policy (arqond/core/access.py) as a table: every action, every kind of
principal, allowed or refused with the rule's own words."""

from __future__ import annotations

import pytest

from arqond.core import principal as principals
from arqond.core.access import Access, Action, Owners, Refused, Who

ZGENTS_GID, OPS_GID = 2000, 3000
ANONYMOUS = principals.anonymous("192.0.2.7")
TOKEN_USER = principals.token({"sub": "carol", "role": "user"}, peer_host="192.0.2.8")
TOKEN_ADMIN = principals.token({"sub": "root-bot", "role": "admin"}, peer_host="192.0.2.9")
EVE = principals.local(1001, frozenset({1001}), "eve", admin=False, moo_member=False)
MALLORY = principals.local(1002, frozenset({1002, ZGENTS_GID}), "mallory", admin=False,
                           moo_member=True)
ALICE = principals.local(1000, frozenset({1000, ZGENTS_GID}), "alice", admin=False,
                         moo_member=True)       # registered dreader
BOB = principals.local(1003, frozenset({1003}), "bob", admin=False, moo_member=False)
OPS = principals.local(1004, frozenset({1004, OPS_GID}), "ops", admin=False, moo_member=False)
ROOT = principals.local(0, frozenset({0}), "root", admin=True, moo_member=True)
WHO = {"anonymous": ANONYMOUS, "token user": TOKEN_USER, "token admin": TOKEN_ADMIN,
       "eve (no group)": EVE, "mallory (zgents)": MALLORY, "alice (owner)": ALICE,
       "bob (in uids)": BOB, "ops (in groups)": OPS, "root": ROOT}


def policy() -> Access:
    access = Access()
    access.owners["dreader"] = Owners(ALICE.key, uids=frozenset({BOB.uid}),
                                      gids=frozenset({OPS_GID}))
    return access


ALL = set(WHO)
ADMINS = {"token admin", "root"}
IDENTIFIED = ALL - {"anonymous"}
MEMBERS = ADMINS | {"mallory (zgents)", "alice (owner)"}
OWNERS = ADMINS | {"alice (owner)", "bob (in uids)", "ops (in groups)"}
TABLE = {
    Action.REGISTER_ZGENT: MEMBERS,
    Action.MANAGE_ZGENT: OWNERS,
    Action.SERVE_ZGENT: OWNERS,
    Action.READ_INBOX: OWNERS,
    Action.WRITE_INBOX: MEMBERS,
    Action.SPEAK_AS_ZGENT: OWNERS,
    Action.SPEAK_IN_MOO: MEMBERS,
    Action.BROADCAST_AS_OTHER: ADMINS,
    Action.WEBHOOK: ADMINS,
    Action.CRON: IDENTIFIED,
    Action.STORE: IDENTIFIED,
    Action.MANAGE_CHANNELS: ADMINS,
    Action.SYSTEM_MESSAGE: ADMINS,
}


def test_the_table_covers_every_action():
    assert set(TABLE) == set(Action)


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("who", sorted(WHO))
def test_who_may_do_what(action, who):
    access = policy()
    expected = who in TABLE[action]
    assert access.allows(WHO[who], action, "dreader") is expected
    if expected:
        access.check(WHO[who], action, "dreader")
    else:
        with pytest.raises(Refused) as refused:
            access.check(WHO[who], action, "dreader")
        rule = access.rules[action]
        allowed = DREADERS_OWNERS if rule is Who.OWNER else rule.value
        assert str(refused.value) == \
            f"not allowed to {action.value.format(zgent='dreader')} (allowed: {allowed})"


DREADERS_OWNERS = "the owners of dreader: who registered it, its uids and groups; and admins"


def test_an_unregistered_zgent_has_no_owners_but_admins():
    access = policy()
    assert not access.allows(ALICE, Action.MANAGE_ZGENT, "nosuch")
    assert access.allows(ROOT, Action.MANAGE_ZGENT, "nosuch")


def test_a_token_never_owns_by_uid_or_group():
    access = Access()
    access.owners["z"] = Owners(None, uids=frozenset({0}), gids=frozenset({0}))
    lookalike = principals.token({"sub": "x"}, peer_host="h")
    assert not access.allows(lookalike, Action.READ_INBOX, "z")


@pytest.mark.parametrize("room, channel, readers", [
    ("dreader", "inbox", OWNERS),
    ("dreader", "narrative", ALL),          # narratives are public speech
    ("dreader", None, ALL),                 # the room as a whole: inbox entries filtered
    ("nosuch", "inbox", ALL),               # no Zgent of that name: an ordinary channel
    ("science", "general", ALL),
])
def test_only_a_zgents_inbox_is_guarded(room, channel, readers):
    access = policy()
    for who, principal in WHO.items():
        assert access.may_read(principal, room, channel) is (who in readers), who


@pytest.mark.parametrize("room, channel, writers, rule", [
    ("dreader", "inbox", MEMBERS, "write to dreader:inbox"),
    ("dreader", "narrative", OWNERS, "publish in Zgent dreader's room"),
    ("dreader", None, OWNERS, "publish in Zgent dreader's room"),
    ("moo", "broadcast", MEMBERS, "publish in room moo"),
    ("moo", "presence", MEMBERS, "publish in room moo"),
    ("science", "general", ALL, None),
])
def test_publishing_follows_the_moo_files(room, channel, writers, rule):
    access = policy()
    for who, principal in WHO.items():
        if who in writers:
            access.check_publish(principal, room, channel)
        else:
            with pytest.raises(Refused, match=rule.replace("'", ".")):
                access.check_publish(principal, room, channel)
