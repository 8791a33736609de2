"""How every adapter learns who is at the other end of a connection, the same way.

- Unix sockets (the control socket, the bus socket, Zgent sockets): the kernel's peer
  credentials. Root, arqond's own user and members of ``server.admin_group`` are admins.
- TCP: a verified token's claims when there is one (a ``role`` of admin makes an admin, as in
  ArqonBus); else, for a peer on this host and ``auth.loopback_identity`` on, the uid the
  kernel recorded for its socket (arqond/unix.py tcp_peer_uid), as a local user who is never
  an admin over TCP (administration takes the control or bus socket, or a token); else
  anonymous, charged by address.
Membership of ``moo.group`` (or being root) is what lets a local user use the MOO files, so it
is what lets it do the same through the bus.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
from typing import Any

from arqond.config import Config
from arqond.core import principal as principals
from arqond.core.principal import Principal
from arqond.unix import Peer, PeerUnknowable, group_id, group_ids, tcp_peer_uid


log = logging.getLogger("arqond")


class PrincipalResolver:
    def __init__(self, config: Config) -> None:
        self.told_unknowable = False
        self.reload(config)

    def reload(self, config: Config) -> None:
        self.admin_group = config.server.admin_group
        self.moo_group = config.moo.group
        self.loopback_identity = config.auth.loopback_identity

    def unix(self, peer: Peer) -> Principal:
        return self._local(peer.uid, peer.gid, admin_possible=True)

    def tcp(self, sock: socket.socket | None, claims: dict[str, Any] | None,
            peer_host: str) -> Principal:
        if claims:
            return principals.token(claims, peer_host=peer_host)
        if self.loopback_identity and sock is not None:
            try:
                uid = tcp_peer_uid(sock)
            except PeerUnknowable as exc:
                if not self.told_unknowable:   # once: it holds for every connection
                    self.told_unknowable = True
                    log.warning("auth.loopback_identity: %s; loopback TCP clients are "
                                "anonymous", exc)
                uid = None
            if uid is not None:
                try:
                    gid = pwd.getpwuid(uid).pw_gid
                except KeyError:
                    gid = -1
                return self._local(uid, gid, admin_possible=False)
        return principals.anonymous(peer_host)

    def _local(self, uid: int, gid: int, *, admin_possible: bool) -> Principal:
        gids = group_ids(uid, gid) if gid >= 0 else frozenset()
        try:
            user: str | None = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = None
        admin_gid = group_id(self.admin_group)
        admin = admin_possible and (uid in (0, os.getuid()) or admin_gid in gids)
        moo_gid = group_id(self.moo_group)
        member = uid in (0, os.getuid()) or (moo_gid is not None and moo_gid in gids)
        return principals.local(uid, gids, user, admin=admin, moo_member=member)
