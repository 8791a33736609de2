"""Mailboxes written down as they change, so unread messages outlive the process (kill -9 too).

One append-only file per Zgent, STATE_DIR/mailboxes/NAME.jsonl: a JSON line per message put, a
"-" line per message taken (always the oldest). No fsync: the page cache outlives a killed or
restarted process; only a crash of the machine itself can cost the last lines. The file is
emptied whenever the mailbox is, and rewritten (temp file, rename) once taken messages make up
most of it, so it stays within about twice what is unread.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Container
from typing import Any, Callable

import orjson

from arqond.core.moo.mailbox import Mailbox
from arqond.moo.files import AppendFile, read_or_set_aside

log = logging.getLogger("arqond.moo")

TAKEN = b"-\n"
# Taken-message bytes tolerated before a rewrite, on top of twice the unread ones.
COMPACT_SLACK = 1 << 20


def replay(raw: bytes) -> list[dict[str, Any]]:
    """The unread messages a mailbox file holds (ValueError if it is not one)."""
    unread: deque[dict[str, Any]] = deque()
    for number, line in enumerate(raw.splitlines(keepends=True), 1):
        if line == TAKEN:
            if not unread:
                raise ValueError(f"line {number} takes from an empty mailbox")
            unread.popleft()
            continue
        if not line.endswith(b"\n"):
            break   # the last write was cut short (a full disk): never part of the mailbox
        message = orjson.loads(line)
        if not isinstance(message, dict):
            raise ValueError(f"line {number} is not a JSON object")
        unread.append(message)
    return list(unread)


class MailboxLog:
    """The file behind one mailbox: its Journal (arqond/core/moo/mailbox.py).

    Creating it raises OSError when the disk refuses. Later, a write the disk refuses closes
    the file and calls ``on_failure`` (which removes it: a file missing writes would replay
    wrong), and nothing more is written: the mailbox goes on in memory only.
    """

    def __init__(self, path: str, unread: list[dict[str, Any]],
                 on_failure: Callable[[OSError], None]) -> None:
        self.path = path
        self.file: AppendFile | None = AppendFile(path)
        self.limit = 0      # size that triggers a rewrite
        self.on_failure = on_failure
        self._rewrite(self.file, unread)

    def put(self, message: dict[str, Any]) -> None:
        if self.file is not None:
            try:
                self.file.append(orjson.dumps(message) + b"\n")
            except OSError as exc:
                self._failed(exc)

    def put_over_oldest(self, message: dict[str, Any], unread: deque[dict[str, Any]]) -> None:
        """``message`` was put into a full mailbox, which dropped its oldest: one write for
        both (a mailbox nobody reads takes this path for every message)."""
        file = self.file
        if file is not None:
            try:
                if file.size > self.limit:
                    self._rewrite(file, list(unread))
                else:
                    file.append(orjson.dumps(message) + b"\n" + TAKEN)
            except OSError as exc:
                self._failed(exc)

    def took(self, unread: deque[dict[str, Any]], count: int = 1) -> None:
        """``count`` oldest messages were taken; ``unread`` is what is left."""
        file = self.file
        if file is not None:
            try:
                if not unread:
                    file.truncate()
                    self.limit = COMPACT_SLACK
                elif file.size > self.limit:
                    self._rewrite(file, list(unread))
                else:
                    file.append(TAKEN * count)
            except OSError as exc:
                self._failed(exc)

    def _rewrite(self, file: AppendFile, unread: list[dict[str, Any]]) -> None:
        file.replace(b"".join(orjson.dumps(m) + b"\n" for m in unread))
        self.limit = 2 * file.size + COMPACT_SLACK

    def _failed(self, exc: OSError) -> None:
        self.close()
        self.on_failure(exc)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class MailboxStore:
    """STATE_DIR/mailboxes: one file per Zgent, taken back at its registration."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.mailbox_restored_total = 0
        self.mailbox_journal_errors_total = 0

    def path(self, zgent_id: str) -> str:
        return os.path.join(self.folder, f"{zgent_id}.jsonl")

    def open(self, zgent_id: str, size: int) -> tuple[Mailbox, MailboxLog | None]:
        """NAME's mailbox with what it had not read (even after a kill -9), kept on disk from
        now on; the journal is None when the disk refused it from the start."""
        path = self.path(zgent_id)
        unread = read_or_set_aside(path, "mailbox", replay) or []
        mailbox = Mailbox(size)
        for message in unread:
            mailbox.put(message)
        self.mailbox_restored_total += len(unread)
        try:
            os.makedirs(self.folder, mode=0o750, exist_ok=True)
            journal = MailboxLog(path, list(mailbox.messages),
                                 lambda exc: self._failed(zgent_id, exc))
        except OSError as exc:
            self._failed(zgent_id, exc)
            return mailbox, None
        mailbox.journal = journal
        return mailbox, journal

    def _failed(self, zgent_id: str, exc: OSError) -> None:
        """Keep the mailbox in memory only: a file missing writes would replay wrong."""
        self.mailbox_journal_errors_total += 1
        path = self.path(zgent_id)
        log.error("mailbox of %s no longer kept on disk (%s: %s): its unread messages will "
                  "not survive a restart", zgent_id, path, exc.strerror)
        try:
            os.unlink(path)
        except OSError:
            pass

    def drop_orphans(self, served: Container[str]) -> None:
        """Mailbox files of Zgents gone from the configuration while arqond was down."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return
        for entry in names:
            zgent_id, dot, ext = entry.rpartition(".")
            if ext != "jsonl" or not dot or zgent_id in served:
                continue
            path = os.path.join(self.folder, entry)
            try:
                with open(path, "rb") as handle:
                    count = len(replay(handle.read()))
            except (OSError, ValueError):
                count = 0
            log.warning("%d unread message(s) to %s dropped: %s is no longer registered",
                        count, zgent_id, zgent_id)
            try:
                os.unlink(path)
            except OSError as exc:
                log.error("cannot remove %s: %s", path, exc.strerror)
