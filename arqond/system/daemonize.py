"""Classic daemon mode for inits without systemd: double fork (python-daemon) and a pidfile.

The pidfile is created exclusively after the fork and removed when the daemon exits. A pidfile
whose process is alive refuses a second start; one left by a dead process is replaced.
"""

from __future__ import annotations

import contextlib
import os
from typing import ContextManager

import daemon
from daemon.pidfile import TimeoutPIDLockFile


class PidfileError(Exception):
    pass


def claim_stale(path: str) -> None:
    """Refuse when ``path`` names a live process; remove it when its process is gone."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise PidfileError(f"cannot read pidfile {path}: {exc.strerror}") from None
    if not text.isdigit():
        raise PidfileError(f"pidfile {path} does not hold a process id ({text[:40]!r}); "
                           "remove it if no arqond is running")
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        os.unlink(path)   # left by a process that died without cleaning up
        return
    except PermissionError:
        pass              # alive, owned by someone else
    raise PidfileError(f"already running as pid {pid} (pidfile {path})")


def context(pidfile: str | None, detach: bool) -> ContextManager[object]:
    """What to run the daemon inside: detached with python-daemon, or in the foreground."""
    if pidfile:
        claim_stale(pidfile)
    # Absolute: the detached process runs in /. Timeout 0: a pidfile that appeared since the
    # check above (a racing start) makes this one fail rather than wait.
    lock = TimeoutPIDLockFile(os.path.abspath(pidfile), 0) if pidfile else None
    if detach:
        return daemon.DaemonContext(pidfile=lock, umask=0o022, detach_process=True)
    return lock if lock is not None else contextlib.nullcontext()
