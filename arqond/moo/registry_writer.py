"""registry.json, and the saved Zgents next to it, written off the event loop.

One rewrite is four fsyncs (a temporary file and its directory, for registry.json and for
STATE_DIR/moo-zgents.json): 7 to 14 ms of waiting on the disk, which on the event loop held up
every client about once a second per active Zgent. A worker thread writes now; changes made
while it writes are coalesced into its next write, which carries the newest document. Each
file is still replaced whole (temporary file, fsync, rename, directory fsync): a reader sees
the old file or the new one, never half of one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from arqond.core.moo.registry import saved_document
from arqond.moo import files

log = logging.getLogger("arqond.moo")


class Snapshot(NamedTuple):
    registry: bytes                   # registry.json as written
    saved: dict[str, dict[str, Any]]  # the Zgents registered at run time, by name


class RegistryWriter:
    def __init__(self, registry_path: str, state_path: str, gid: int | None) -> None:
        self.registry_path = registry_path
        self.state_path = state_path
        self.gid = gid
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arqond-registry")
        # Snapshots are numbered as they are taken; a write never replaces a newer one.
        self.numbers = itertools.count(1)
        self.lock = threading.Lock()
        self.newest_written = 0
        self.next: tuple[int, Snapshot] | None = None
        self.busy = False
        self.waiting: list[asyncio.Future[None]] = []
        self.registry_writes_total = 0
        self.failure: str | None = None    # why the last write of registry.json failed

    def write(self, snapshot: Snapshot) -> asyncio.Future[None]:
        """Have ``snapshot`` written by the worker; done once it, or a newer one, is on disk
        (or failed, which is logged)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self.next = (next(self.numbers), snapshot)
        self.waiting.append(done)
        if not self.busy:
            self._start(loop)
        return done

    def write_now(self, snapshot: Snapshot) -> None:
        """Write ``snapshot`` before returning, for a caller that cannot wait (a Zgent that
        a narrative log registers: its entry is on disk before its first line goes out)."""
        self._write_files(next(self.numbers), snapshot)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.next is not None
        (number, snapshot), self.next = self.next, None
        waiting, self.waiting = self.waiting, []
        self.busy = True
        running = loop.run_in_executor(self.executor, self._write_files, number, snapshot)
        running.add_done_callback(lambda _: self._written(loop, waiting))

    def _written(self, loop: asyncio.AbstractEventLoop,
                 waiting: list[asyncio.Future[None]]) -> None:
        self.busy = False
        for done in waiting:
            if not done.done():
                done.set_result(None)
        if self.next is not None:
            self._start(loop)

    def _write_files(self, number: int, snapshot: Snapshot) -> None:
        """In the worker, or on the loop for ``write_now``; one at a time."""
        with self.lock:
            if number < self.newest_written:
                return
            self.newest_written = number
            try:
                files.write_atomically(self.registry_path, snapshot.registry, 0o644, self.gid)
                self.registry_writes_total += 1
                self.failure = None
            except OSError as exc:
                self.failure = f"cannot write {self.registry_path}: {exc.strerror}"
                log.error("%s", self.failure)
            # Zgents registered at run time come back after a restart; the registry's digest
            # tells a file edited by hand from the one arqond left.
            try:
                os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
                files.write_atomically(self.state_path,
                                       saved_document(snapshot.registry, snapshot.saved),
                                       0o644, None)
            except OSError as exc:
                log.error("cannot write %s: %s", self.state_path, exc.strerror)

    def close(self) -> None:
        """After the last ``write`` was awaited."""
        self.executor.shutdown(wait=True)
