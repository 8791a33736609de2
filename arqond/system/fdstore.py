"""File descriptors that outlive a restart: taken from systemd at start, handed back to its store.

Other parts ask ``inherited(name)`` before creating a FIFO or socket, and ``store(name, fd)``
once they hold one. Without systemd (no LISTEN_FDNAMES, no NOTIFY_SOCKET) both are no-ops, so
callers need no special case. systemd keeps at most ``FileDescriptorStoreMax=`` fds; past that
it closes what it is given, which costs nothing but the restart guarantee for that fd.
"""

from __future__ import annotations

import os
import re

from arqond.system.notify import Notifier

# What systemd accepts as FDNAME: printable ASCII without ':' (the LISTEN_FDNAMES separator).
VALID_NAME = re.compile(r"^[!-9;-~]{1,255}$")


class FdStore:
    def __init__(self, inherited: dict[str, int] | None = None,
                 notifier: Notifier | None = None) -> None:
        # name -> fd passed by systemd (LISTEN_FDNAMES) that no listener claimed.
        self._inherited = dict(inherited or {})
        self._notifier = notifier
        self.stored: set[str] = set()
        self.store_failed_total = 0

    def inherited(self, name: str) -> int | None:
        """Take the fd systemd kept under ``name``, if any (each fd is handed out once)."""
        return self._inherited.pop(name, None)

    def store(self, name: str, fd: int, *, poll: bool = True) -> None:
        """Ask systemd to keep ``fd`` under ``name`` (FDPOLL=0 for pipes: ``poll=False``)."""
        if not VALID_NAME.match(name):
            raise ValueError(f"fd store name {name!r} must be 1-255 printable ASCII "
                             "characters without ':' or spaces")
        if self._notifier is None or not self._notifier.enabled:
            return
        if self._notifier.store_fd(name, fd, poll=poll):
            self.stored.add(name)
        else:
            self.store_failed_total += 1

    def remove(self, name: str) -> None:
        """Ask systemd to drop the fd kept under ``name`` (stored by us or a previous run)."""
        self.stored.discard(name)
        if self._notifier is not None:
            self._notifier.remove_fd(name)

    def close_unclaimed(self) -> list[str]:
        """Close inherited fds nobody asked for (a Zgent removed while arqond was down), drop
        them from systemd's store too, and return their names."""
        names = sorted(self._inherited)
        for name, fd in self._inherited.items():
            os.close(fd)
            if self._notifier is not None:
                self._notifier.remove_fd(name)
        self._inherited.clear()
        return names
