"""Who owns a Zgent (arqond/core/access.py decides what owners may do): the principal that
registered it, or the owner of the narrative file that brought it in, plus the users and
groups its spec names (``uids``, ``groups``), judged on the kernel's word for a peer, never
the peer's.

Pure given resolved ids: the caller passes the lookups (user and group databases) in.
"""

from __future__ import annotations

from typing import Callable

from arqond.core.access import Owners
from arqond.core.moo.registry import Spec


def owners_of(spec: Spec, user_id: Callable[[str], int | None],
              group_id: Callable[[str], int | None]) -> tuple[Owners, list[str]]:
    """The owners a spec names, and a complaint per user or group name not found."""
    uids, no_users = _ids(spec.uids, user_id)
    gids, no_groups = _ids(spec.groups, group_id)
    return Owners(spec.owner, uids, gids), [
        *(f"Zgent {spec.id}: no user {name!r}; ignored in uids" for name in no_users),
        *(f"Zgent {spec.id}: no group {name!r}; ignored in groups" for name in no_groups)]


def _ids(names: list[str | int], lookup: Callable[[str], int | None]
         ) -> tuple[frozenset[int], list[str]]:
    found, unknown = set(), []
    for name in names:
        number = name if isinstance(name, int) else lookup(name)
        if number is None:
            unknown.append(name)
        else:
            found.add(number)
    return frozenset(found), unknown
