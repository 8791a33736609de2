"""Who may serve a Zgent (attach as its request handler with ``arqon.serve``): root, arqond's
own user, and the users and groups its spec names (``uids``, ``groups``), judged on the
kernel's word for the peer (SO_PEERCRED), never the peer's.

Pure given resolved ids: the caller passes the lookups (user and group databases) in.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from arqond.core.moo.registry import Spec


class Principals(NamedTuple):
    uids: frozenset[int]
    gids: frozenset[int]


NOBODY = Principals(frozenset(), frozenset())


def resolve(spec: Spec, user_id: Callable[[str], int | None],
            group_id: Callable[[str], int | None]) -> tuple[Principals, list[str]]:
    """The ids a spec's ``uids`` and ``groups`` name, and a complaint per name not found."""
    uids, no_users = _ids(spec.uids, user_id)
    gids, no_groups = _ids(spec.groups, group_id)
    return Principals(uids, gids), [
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


def may_serve(uid: int, gid: int, allowed: Principals, own_uid: int,
              groups_of: Callable[[int, int], frozenset[int]]) -> bool:
    """Whether the peer ``uid``/``gid`` may serve; ``groups_of(uid, gid)`` (its primary and
    supplementary groups) is only asked when the cheaper rules did not decide."""
    if uid in (0, own_uid) or uid in allowed.uids or gid in allowed.gids:
        return True
    return bool(allowed.gids and allowed.gids.intersection(groups_of(uid, gid)))
