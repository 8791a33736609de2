"""The directories arqond keeps its files in (moo.dir, moo.log_dir, server.state_dir), checked at
start: nobody but arqond's user and root may be able to replace what arqond puts there.

``exposure`` is THE rule. A directory others may write to lets them rename, remove or replace
any file in it; the sticky bit stops that for files they do not own, but not their creating
names arqond is about to use (a FIFO at registry.json's temporary name would block its
writer, a socket at NAME.sock would answer for NAME). So moo.dir and server.state_dir must not
be writable by others at all; moo.log_dir is by design (the Zgents write their narratives
there), and is safe only with the sticky bit, since arqond creates nothing there but its
broadcast link. A directory owned by another user is not arqond's either: its owner may change
its mode at any time.

``check_dirs`` applies the rule: a directory arqond owns is fixed through a descriptor opened
with O_NOFOLLOW (so the path cannot be swapped for a symlink to another directory meanwhile)
and logged; any other case stops the start, or with moo.dir_check = "warn" is logged and
tolerated, with the exact chmod/chown that would fix it.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import NamedTuple

from arqond.config import Config
from arqond.log import NOTICE, log_event
from arqond.unix import group_name, user_name

log = logging.getLogger("arqond")

OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
SYSTEM_SHARED = stat.S_IWOTH | stat.S_ISVTX
WRITABLE = {stat.S_IWGRP: "group-writable", stat.S_IWOTH: "world-writable",
            OTHERS_WRITE: "group- and world-writable"}


class DirError(Exception):
    """A directory arqond must not use; the text names it and says how to fix it."""


class Exposure(NamedTuple):
    """Why others could replace arqond's files in a directory, and what would stop them."""

    reasons: tuple[str, ...]
    mode: int        # the mode that closes it (the same mode when only the owner is wrong)
    foreign: bool    # owned by another user: only a chown by root closes it


def exposure(mode: int, owner: int, us: int, shared: bool) -> Exposure | None:
    """What is wrong with a directory of ``mode`` owned by ``owner`` for arqond running as
    ``us``; None when only ``us`` and root can replace files in it. ``shared``: others write
    there by design (moo.log_dir), which is safe with the sticky bit."""
    reasons = []
    wanted = stat.S_IMODE(mode)
    foreign = owner not in (us, 0)
    if foreign:
        reasons.append("owned by another user")
    writable = wanted & OTHERS_WRITE
    if writable and not shared:
        reasons.append(WRITABLE[writable])
        wanted &= ~OTHERS_WRITE
    elif writable and not wanted & stat.S_ISVTX:
        reasons.append(WRITABLE[writable] + " without the sticky bit")
        wanted |= stat.S_ISVTX
    if not reasons:
        return None
    return Exposure(tuple(reasons), wanted, foreign)


class Place(NamedTuple):
    key: str        # the configuration key that names it
    path: str
    shared: bool


def places(config: Config) -> list[Place]:
    return [Place("moo.dir", config.moo.dir, False),
            Place("moo.log_dir", config.moo.log_dir, True),
            Place("server.state_dir", config.server.state_dir, False)]


def check_dirs(config: Config) -> None:
    """Create missing directories, then hold each to ``exposure``: fix what arqond owns, and
    raise DirError (or, with moo.dir_check = "warn", log) for the rest."""
    refuse = config.moo.dir_check == "refuse"
    for place in places(config):
        problem = _check(place)
        if problem is None:
            continue
        if refuse:
            raise DirError(f'{problem} (or set moo.dir_check = "warn" to start anyway)')
        log_event(log, logging.WARNING, "dir_unsafe",
                  f'{problem}; starting anyway (moo.dir_check = "warn")', path=place.path)


def _check(place: Place) -> str | None:
    """Why ``place`` stays unsafe, with its fix; None when it is safe (or was made so)."""
    key, path = place.key, place.path
    try:
        os.makedirs(path, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(path):
            return (f"{key} {path} is a symbolic link, which arqond does not follow; fix: set "
                    f"{key} to the directory itself ({os.path.realpath(path)})")
        raise DirError(f"cannot use {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        us = os.geteuid()
        found = exposure(info.st_mode, info.st_uid, us, place.shared)
        if found is None:
            return None
        old = stat.S_IMODE(info.st_mode)
        who = "root" if us == 0 else f"{user_name(us)} and root"
        why = " and ".join(found.reasons)
        if old & SYSTEM_SHARED == SYSTEM_SHARED:   # /tmp and its like: never arqond's to change
            return (f"{key} {path} is mode {old:04o}: {why}, a directory the whole system "
                    f"shares; fix: give {key} a directory of its own")
        if info.st_uid == us:
            try:
                os.fchmod(fd, found.mode)
            except OSError as exc:  # e.g. the setgid bit under systemd's RestrictSUIDSGID=
                why += f"; arqond cannot change it itself ({exc.strerror})"
            else:
                log_event(log, NOTICE, "dir_unsafe",
                          f"{key} {path} was mode {old:04o} ({why}): others than {who} could "
                          f"replace arqond's files there; set it to {found.mode:04o}",
                          path=path)
                return None
        fix = [f"chown {user_name(us)} {path}"] if found.foreign else []
        if found.mode != old:
            fix.append(f"chmod {found.mode:04o} {path}")
        return (f"{key} {path} is mode {old:04o}, owner {user_name(info.st_uid)}, group "
                f"{group_name(info.st_gid)}: {why}, so others than {who} could replace "
                f"arqond's files there; fix: {' && '.join(fix)}")
    finally:
        os.close(fd)
