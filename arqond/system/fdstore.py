"""File descriptors that outlive a restart: taken from systemd at start, handed back to its store.

Other parts ask ``inherited(name)`` before creating a FIFO or socket, and ``store(name, fd)``
once they hold one. Without systemd (no LISTEN_FDNAMES, no NOTIFY_SOCKET) both are no-ops, so
callers need no special case.
"""

from __future__ import annotations

import os


class FdStore:
    def __init__(self, inherited: dict[str, int] | None = None) -> None:
        # name -> fd passed by systemd (LISTEN_FDNAMES) that no listener claimed.
        self._inherited = dict(inherited or {})

    def inherited(self, name: str) -> int | None:
        """Take the fd systemd kept under ``name``, if any (each fd is handed out once)."""
        return self._inherited.pop(name, None)

    def store(self, name: str, fd: int, *, poll: bool = True) -> None:
        """Ask systemd to keep ``fd`` under ``name`` (FDPOLL=0 for pipes: ``poll=False``)."""

    def remove(self, name: str) -> None:
        """Ask systemd to drop the fd kept under ``name``."""

    def close_unclaimed(self) -> None:
        """Close inherited fds nobody asked for (a Zgent removed while arqond was down)."""
        for fd in self._inherited.values():
            os.close(fd)
        self._inherited.clear()
