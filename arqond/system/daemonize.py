"""Classic daemon mode for inits without systemd: double fork (python-daemon) and a pidfile.

The pidfile is created exclusively after the fork and removed when the daemon exits. A pidfile
whose process is alive refuses a second start; one left by a dead process is replaced.

The command that was run waits for the daemon's word on a readiness pipe before it exits, as
systemd's Type=notify would: 0 once every listener serves, 1 with the daemon's reason on stderr
when it could not start (a port taken, a bad directory), so an init script sees the failure.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import ContextManager

import daemon
from daemon.pidfile import TimeoutPIDLockFile

READY = b"READY"
FAILED = b"FAILED "


class PidfileError(Exception):
    pass


class Readiness:
    """The daemon's end of the readiness pipe: one word, then it is closed. In the
    foreground nobody waits, and both calls do nothing."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd = fd

    def ready(self) -> None:
        self._say(READY)

    def failed(self, reason: str) -> None:
        self._say(FAILED + reason.encode("utf-8", "replace"))

    def _say(self, word: bytes) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.write(fd, word)  # one write; the reason is a line, well within PIPE_BUF
        except OSError:
            pass  # the starting command was killed: nobody is left to tell
        finally:
            os.close(fd)


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


def context(pidfile: str | None, detach: bool) -> tuple[ContextManager[object], Readiness]:
    """What to run the daemon inside: detached with python-daemon, or in the foreground; and
    where to report readiness. Detaching forks: the process that was started never returns
    from here, it exits with the daemon's word (wait_for_word)."""
    if pidfile:
        claim_stale(pidfile)
    # Absolute: the detached process runs in /. Timeout 0: a pidfile that appeared since the
    # check above (a racing start) makes this one fail rather than wait.
    lock = TimeoutPIDLockFile(os.path.abspath(pidfile), 0) if pidfile else None
    if not detach:
        return (lock if lock is not None else contextlib.nullcontext()), Readiness()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child:
        os.close(write_end)
        os.waitpid(child, 0)  # python-daemon's first fork: it exits once it has forked again
        sys.exit(wait_for_word(read_end))
    os.close(read_end)
    return (daemon.DaemonContext(pidfile=lock, umask=0o022, detach_process=True,
                                 files_preserve=[write_end]), Readiness(write_end))


def wait_for_word(fd: int) -> int:
    """Read the daemon's word until it closes the pipe: the exit status of the command."""
    with os.fdopen(fd, "rb") as pipe:
        word = pipe.read()
    if word == READY:
        return 0
    if word.startswith(FAILED):
        reason = word[len(FAILED):].decode("utf-8", "replace")
    else:
        reason = "stopped before it was ready (its log went to syslog)"
    print(f"arqond: {reason}", file=sys.stderr)
    return 1
