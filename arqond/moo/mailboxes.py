"""Mailboxes written down as they change, so unread messages outlive the process (kill -9 too).

One append-only file per Zgent, STATE_DIR/mailboxes/NAME.jsonl: a JSON line per message put, a
"-" line per message taken (always the oldest). No fsync: the page cache outlives a killed or
restarted process; only a crash of the machine itself can cost the last lines. The file is
emptied whenever the mailbox is, and rewritten (temp file, rename) once taken messages make up
most of it, so it stays within about twice what is unread.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import orjson

from arqond.moo.files import AppendFile

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
    """The file behind one mailbox. Every method raises OSError when the disk refuses."""

    def __init__(self, path: str, unread: list[dict[str, Any]]) -> None:
        self.file = AppendFile(path)
        self.limit = 0      # size that triggers a rewrite
        self.rewrite(unread)

    @property
    def path(self) -> str:
        return self.file.path

    def put(self, message: dict[str, Any]) -> None:
        self.file.append(orjson.dumps(message) + b"\n")

    def put_over_oldest(self, message: dict[str, Any], unread: deque[dict[str, Any]]) -> None:
        """``message`` was put into a full mailbox, which dropped its oldest: one write for
        both (a mailbox nobody reads takes this path for every message)."""
        if self.file.size > self.limit:
            self.rewrite(list(unread))
        else:
            self.file.append(orjson.dumps(message) + b"\n" + TAKEN)

    def took(self, unread: deque[dict[str, Any]], count: int = 1) -> None:
        """``count`` oldest messages were taken; ``unread`` is what is left."""
        if not unread:
            self.file.truncate()
            self.limit = COMPACT_SLACK
        elif self.file.size > self.limit:
            self.rewrite(list(unread))
        else:
            self.file.append(TAKEN * count)

    def rewrite(self, unread: list[dict[str, Any]]) -> None:
        self.file.replace(b"".join(orjson.dumps(m) + b"\n" for m in unread))
        self.limit = 2 * self.file.size + COMPACT_SLACK

    def close(self) -> None:
        self.file.close()

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
