"""How a TCP peer becomes a principal (arqond/principals.py) when the kernel's socket table
cannot be asked: under a unit that allows no AF_NETLINK, say. Loopback clients are then
anonymous, and the log says why, once."""

from __future__ import annotations

import logging
import os
import socket

from arqond import config as configuration
from arqond import principals as module
from arqond.core.principal import Kind
from arqond.principals import PrincipalResolver
from arqond.unix import PeerUnknowable


def test_without_the_socket_table_a_loopback_peer_is_anonymous_and_that_is_said_once(
        monkeypatch, caplog):
    def unknowable(sock: socket.socket) -> int | None:
        raise PeerUnknowable("the kernel's socket table cannot be asked (Address family not "
                             "supported by protocol)")
    monkeypatch.setattr(module, "tcp_peer_uid", unknowable)
    resolver = PrincipalResolver(configuration.defaults())
    with socket.socket() as sock:
        first = resolver.tcp(sock, None, "127.0.0.1")
        second = resolver.tcp(sock, None, "127.0.0.1")
    assert (first.kind, first.key, second.kind) == (Kind.ANONYMOUS, "ip:127.0.0.1",
                                                    Kind.ANONYMOUS)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["auth.loopback_identity: the kernel's socket table cannot be asked "
                      "(Address family not supported by protocol); loopback TCP clients are "
                      "anonymous"]


def test_a_real_loopback_peer_is_the_user_the_kernel_knows():
    resolver = PrincipalResolver(configuration.defaults())
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()):
        accepted, _ = server.accept()
        with accepted:
            principal = resolver.tcp(accepted, None, "127.0.0.1")
    # Never an admin over TCP, whoever it is.
    assert (principal.kind, principal.uid, principal.admin) == (Kind.LOCAL, os.getuid(), False)
