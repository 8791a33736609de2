"""Who is behind a connection: the principal every decision and every charge is made for.

A principal comes from what the kernel or a signature vouches for, never from what a client
says about itself: the peer credentials of a Unix socket (SO_PEERCRED) or of a loopback TCP
connection (the kernel's socket table), the claims of a verified JWT, or nothing (anonymous).
Adapters resolve it once per connection (uid to user name and groups included) and hand it to
the core; the core only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    LOCAL = "local"          # a local user, by kernel credentials (uid, groups)
    TOKEN = "token"          # a verified JWT's subject
    ANONYMOUS = "anonymous"  # a TCP client with neither
    SERVER = "server"        # arqond itself (narrative lines, FIFO lines, cron firings)


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Kind
    # What it is charged as and matched by: "uid:1000", "sub:alice", "ip:192.0.2.7", "arqond".
    key: str
    uid: int | None = None
    gids: frozenset[int] = field(default_factory=frozenset)
    user: str | None = None           # login name of ``uid``, when it has one
    subject: str | None = None        # JWT sub
    role: str | None = None           # JWT role
    tenant: str | None = None         # JWT tenant_id
    # Decided by the adapter from the configuration (root, server.admin_group, role admin),
    # and membership of moo.group (or admin): what the file permissions would allow.
    admin: bool = False
    moo_member: bool = False

    @property
    def name(self) -> str:
        """How logs and records name it: the user, the token subject, or the key."""
        return self.user or self.subject or self.key

    def log_fields(self) -> dict[str, str | int]:
        """Journal fields that say who acted (UID=, SUB=)."""
        fields: dict[str, str | int] = {"principal": self.key}
        if self.uid is not None:
            fields["uid"] = self.uid
        if self.subject is not None:
            fields["sub"] = self.subject
        return fields


SERVER = Principal(Kind.SERVER, "arqond", admin=True, moo_member=True)
# The least a connection can be: what a caller that names no principal gets.
NOBODY = Principal(Kind.ANONYMOUS, "anonymous")


def local(uid: int, gids: frozenset[int], user: str | None, *, admin: bool,
          moo_member: bool) -> Principal:
    return Principal(Kind.LOCAL, f"uid:{uid}", uid=uid, gids=gids, user=user, admin=admin,
                     moo_member=moo_member or admin)


def token(claims: dict[str, object], *, peer_host: str) -> Principal:
    """A verified JWT's principal; a token without ``sub`` is charged to its peer's address."""
    subject = claims.get("sub")
    role = claims.get("role")
    tenant = claims.get("tenant_id")
    subject = subject if isinstance(subject, str) and subject else None
    role = role if isinstance(role, str) else None
    return Principal(Kind.TOKEN, f"sub:{subject}" if subject else f"ip:{peer_host}",
                     subject=subject, role=role,
                     tenant=str(tenant) if isinstance(tenant, (str, int)) else None,
                     admin=(role or "").lower() == "admin")


def anonymous(peer_host: str) -> Principal:
    return Principal(Kind.ANONYMOUS, f"ip:{peer_host}")
