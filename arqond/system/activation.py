"""Socket activation: the listening sockets (and stored fds) systemd passes in LISTEN_FDS.

systemd hands fds from 3 on, named by LISTEN_FDNAMES (``FileDescriptorName=`` of the socket
unit, ``FDNAME=`` for fds the daemon stored). Listeners are taken by name; a name systemd made up
itself (the unit name, or "unknown" with systemd-socket-activate) counts as unnamed, and unnamed
listening sockets fill ws, telemetry, http, control, bus in that order. Everything else named is an
fd from the store and goes to the FdStore.
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass, field

LISTEN_FDS_START = 3
# What each listener must be: a listening stream socket of one of these families. The order
# is the one unnamed listening sockets fill.
LISTENER_FAMILIES = {"ws": (socket.AF_INET, socket.AF_INET6),
                     "telemetry": (socket.AF_INET, socket.AF_INET6),
                     "http": (socket.AF_INET, socket.AF_INET6),
                     "control": (socket.AF_UNIX,),
                     "bus": (socket.AF_UNIX,)}
LISTENER_NAMES = tuple(LISTENER_FAMILIES)
FAMILY_NAMES = {socket.AF_INET: "TCP/IPv4", socket.AF_INET6: "TCP/IPv6", socket.AF_UNIX: "AF_UNIX"}


class ActivationError(Exception):
    """An fd passed by systemd is not what its name says; the text names fd, name and why."""


@dataclass
class Activation:
    listeners: dict[str, socket.socket] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)   # fd-store entries, by FDNAME
    duplicates: list[str] = field(default_factory=list)     # names seen twice: extras closed
    active: bool = False                                     # LISTEN_FDS was meant for us


def probe(fd: int) -> tuple[int, int, bool] | None:
    """(family, type, listening) of a socket fd, from SO_DOMAIN, SO_TYPE, SO_ACCEPTCONN;
    None when ``fd`` is not a socket."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
    except OSError:
        return None
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN),
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE),
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1)
    finally:
        sock.close()


def _is_listening_stream(fd: int) -> bool:
    found = probe(fd)
    return found is not None and found[1] == socket.SOCK_STREAM and found[2]


def _describe_fd(fd: int) -> str:
    found = probe(fd)
    if found is None:
        try:
            return "a FIFO" if stat.S_ISFIFO(os.fstat(fd).st_mode) else "not a socket"
        except OSError as exc:
            return f"not an open fd ({exc.strerror})"
    family, sock_type, listening = found
    kind = FAMILY_NAMES.get(family, f"family {family}")
    shape = "stream" if sock_type == socket.SOCK_STREAM else f"type {sock_type}"
    return f"a {'listening' if listening else 'non-listening'} {kind} {shape} socket"


def adopt_listener(name: str, fd: int) -> socket.socket:
    """Wrap ``fd`` as the listener ``name``, or raise ActivationError saying what is wrong."""
    families = LISTENER_FAMILIES[name]
    found = probe(fd)
    if found is not None and found[0] in families and found[1] == socket.SOCK_STREAM \
            and found[2]:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        return sock
    wanted = " or ".join(FAMILY_NAMES[f] for f in families)
    raise ActivationError(f"socket activation: fd {fd} named {name!r} must be a listening "
                          f"{wanted} stream socket, but it is {_describe_fd(fd)}")


def take(environ: dict[str, str] | None = None) -> Activation:
    """Read and unset LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES; sort the fds into listeners and
    stored fds. Without activation (or activation meant for another process) nothing is taken.
    """
    env = os.environ if environ is None else environ
    pid, count, names = (env.pop(key, None) for key in
                         ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"))
    if pid is None or count is None:
        return Activation()
    try:
        if int(pid) != os.getpid():
            return Activation()
        total = int(count)
    except ValueError:
        raise ActivationError(f"socket activation: LISTEN_PID={pid!r} LISTEN_FDS={count!r} "
                              "are not numbers") from None
    labels = names.split(":") if names else []
    if names is not None and len(labels) != total:
        raise ActivationError(f"socket activation: LISTEN_FDS={total} but LISTEN_FDNAMES has "
                              f"{len(labels)} name(s): {names!r}")
    labels += [""] * (total - len(labels))
    result = Activation(active=True)
    unnamed: list[int] = []
    for fd, label in zip(range(LISTEN_FDS_START, LISTEN_FDS_START + total), labels):
        os.set_inheritable(fd, False)
        if label in LISTENER_FAMILIES:
            if label in result.listeners:
                raise ActivationError(f"socket activation: more than one fd named {label!r} "
                                      f"(fd {fd}); give each ListenStream= its own .socket unit")
            result.listeners[label] = adopt_listener(label, fd)
        elif _is_default_name(label) and _is_listening_stream(fd):
            unnamed.append(fd)
        elif label in result.stored:
            result.duplicates.append(label)
            os.close(fd)
        else:
            result.stored[label] = fd
    free = [name for name in LISTENER_NAMES if name not in result.listeners]
    if len(unnamed) > len(free):
        raise ActivationError(f"socket activation: {len(unnamed)} unnamed listening sockets "
                              f"but only {len(free)} listener(s) left to fill ({', '.join(free)})")
    for name, fd in zip(free, unnamed):
        result.listeners[name] = adopt_listener(name, fd)
    return result


def _is_default_name(label: str) -> bool:
    # systemd names an fd after its socket unit unless FileDescriptorName= says otherwise;
    # systemd-socket-activate says "unknown".
    return label in ("", "unknown") or label.endswith(".socket")
