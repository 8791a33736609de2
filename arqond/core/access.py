"""Who may do what: one policy, in one place, consistent with the file permissions.

The MOO files say it first (arqond-moo(7)): inboxes and sockets are 0660 group ``moo.group``,
narrative logs are public speech, a Zgent's handler is whoever its owner lets serve it. The
bus must not be a side door around that, so every surface asks this module, with the same
principal (arqond/core/principal.py) the kernel or a token vouched for:

=====================  ================================================================
action                 who may
=====================  ================================================================
register a Zgent       members of moo.group, admins
manage a Zgent         its owners (the registering principal, its configured uids and
(unregister, change,   groups, the owner of its narrative file), admins; root over any
serve, its pane)       door (it may open every file anyway)
read NAME:inbox        its owners, admins: join, history, streams, arqon.recv; a wildcard
                       subscription gets NAME:inbox messages only where this holds
write NAME:inbox       members of moo.group, admins (as the FIFO's mode allows)
speak in NAME's room   its owners, admins (NAME:narrative and the rest are NAME's speech)
speak in room moo      members of moo.group, admins; moo:broadcast as the principal's own
                       name (a Zgent it owns, or its user name); other names: admins
webhooks               admins (``access.webhooks`` = "identified" lets identified ones)
cron, op.store         identified principals (not anonymous)
create/delete channel  admins
system messages        admins
everything else        everyone: the public bus
=====================  ================================================================

Every refusal says which rule refused it; callers log it with the principal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from arqond.core.principal import Kind, Principal

MOO_ROOM = "moo"
INBOX = "inbox"
BROADCAST = "broadcast"


class Who(StrEnum):
    ANYONE = "anyone"
    IDENTIFIED = "identified principals (not anonymous)"
    MOO_MEMBER = "members of the MOO group (moo.group) and admins"
    OWNER = "its owners and admins"
    ADMIN = "admins"


class Action(StrEnum):
    REGISTER_ZGENT = "register a Zgent"
    MANAGE_ZGENT = "manage Zgent {zgent}"
    SERVE_ZGENT = "serve Zgent {zgent}"
    READ_INBOX = "read {zgent}:inbox"
    WRITE_INBOX = "write to {zgent}:inbox"
    SPEAK_AS_ZGENT = "publish in Zgent {zgent}'s room"
    SPEAK_IN_MOO = "publish in room moo"
    BROADCAST_AS_OTHER = "broadcast as {zgent}"
    WEBHOOK = "use webhooks"
    CRON = "schedule cron jobs"
    STORE = "use op.store"
    MANAGE_CHANNELS = "create or delete channels"
    SYSTEM_MESSAGE = "send system messages"


RULES: dict[Action, Who] = {
    Action.REGISTER_ZGENT: Who.MOO_MEMBER,
    Action.MANAGE_ZGENT: Who.OWNER,
    Action.SERVE_ZGENT: Who.OWNER,
    Action.READ_INBOX: Who.OWNER,
    Action.WRITE_INBOX: Who.MOO_MEMBER,
    Action.SPEAK_AS_ZGENT: Who.OWNER,
    Action.SPEAK_IN_MOO: Who.MOO_MEMBER,
    Action.BROADCAST_AS_OTHER: Who.ADMIN,
    Action.WEBHOOK: Who.ADMIN,
    Action.CRON: Who.IDENTIFIED,
    Action.STORE: Who.IDENTIFIED,
    Action.MANAGE_CHANNELS: Who.ADMIN,
    Action.SYSTEM_MESSAGE: Who.ADMIN,
}


@dataclass(frozen=True)
class Owners:
    """Who owns one Zgent: the principal that registered it (or the owner of its narrative
    file), plus the uids and groups its configuration names."""

    key: str | None = None
    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()

    def include(self, principal: Principal) -> bool:
        if principal.admin or principal.key == self.key:
            return True
        if principal.kind is not Kind.LOCAL:
            return False
        # Root may open every file, so it is one of every Zgent's owners over any door
        # (even loopback TCP, where it is not an admin).
        return principal.uid == 0 or principal.uid in self.uids or \
            not self.gids.isdisjoint(principal.gids)


class Refused(Exception):
    """A principal may not; ``str()`` names the action and the rule."""

    def __init__(self, action: Action, who: Who, zgent: str | None) -> None:
        self.action = action
        self.who = who
        self.zgent = zgent
        allowed = f"the owners of {zgent}: who registered it, its uids and groups; and " \
            "admins" if who is Who.OWNER else who.value
        super().__init__(f"not allowed to {action.value.format(zgent=zgent)} "
                         f"(allowed: {allowed})")


@dataclass
class Access:
    """The policy, with what it needs to know: who owns each registered Zgent."""

    rules: dict[Action, Who] = field(default_factory=lambda: dict(RULES))
    owners: dict[str, Owners] = field(default_factory=dict)

    def allows(self, principal: Principal, action: Action, zgent: str | None = None) -> bool:
        who = self.rules[action]
        if who is Who.ANYONE or principal.admin:
            return True
        if who is Who.IDENTIFIED:
            return principal.kind is not Kind.ANONYMOUS
        if who is Who.MOO_MEMBER:
            return principal.moo_member
        if who is Who.OWNER:
            owners = self.owners.get(zgent or "")
            return owners is not None and owners.include(principal)
        return False  # Who.ADMIN, and the admin case is above

    def check(self, principal: Principal, action: Action, zgent: str | None = None) -> None:
        """Refused (naming the rule) unless ``principal`` may."""
        if not self.allows(principal, action, zgent):
            raise Refused(action, self.rules[action], zgent)

    def check_speaking_as(self, principal: Principal, name: str) -> None:
        """Refused unless ``principal`` may put ``name`` as the author of a broadcast: its
        own name, a Zgent it owns, or anything for an admin."""
        if principal.admin or name == principal.name:
            return
        owners = self.owners.get(name)
        if owners is None or not owners.include(principal):
            raise Refused(Action.BROADCAST_AS_OTHER, self.rules[Action.BROADCAST_AS_OTHER],
                          name)

    # -- the channel namespace ------------------------------------------------------------

    def guarded(self, room: str, channel: str | None) -> Owners | None:
        """The owners whose Zgent's inbox room:channel is, or None for a public channel."""
        return self.owners.get(room) if channel == INBOX else None

    def may_read(self, principal: Principal, room: str, channel: str | None) -> bool:
        owners = self.guarded(room, channel)
        return owners is None or owners.include(principal)

    def check_publish(self, principal: Principal, room: str, channel: str | None) -> None:
        """Whether a client may publish to room:channel (a Zgent's room, room moo) or the
        whole room; arqond's own publishing is never asked."""
        if room in self.owners:
            if channel == INBOX:
                self.check(principal, Action.WRITE_INBOX, room)
            else:
                self.check(principal, Action.SPEAK_AS_ZGENT, room)
        elif room == MOO_ROOM:
            self.check(principal, Action.SPEAK_IN_MOO)
