"""A Zgent's mailbox: the messages to it until it reads them, and the journal that writes each
change down (the file format is the adapter's, arqond/moo/mailboxes.py)."""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol


class Journal(Protocol):
    """Where a mailbox's changes are written down. It handles its own failures (a full disk):
    the mailbox goes on in memory whatever the journal does."""

    def put(self, message: dict[str, Any]) -> None: ...

    def put_over_oldest(self, message: dict[str, Any],
                        unread: deque[dict[str, Any]]) -> None: ...

    def took(self, unread: deque[dict[str, Any]], count: int) -> None: ...


class Mailbox:
    """Messages to one Zgent until it reads them, oldest first, at most ``size``.

    At the bound the oldest message is dropped to make room (the newest is what a Zgent
    coming back needs most; every message was also published on NAME:inbox and sits in that
    channel's history). ``dropped`` counts them; ``full_since_drain`` lets the caller log
    once per episode instead of once per message.
    """

    __slots__ = ("messages", "size", "dropped", "full_since_drain", "journal")

    def __init__(self, size: int, journal: Journal | None = None) -> None:
        self.messages: deque[dict[str, Any]] = deque()
        self.size = size
        self.dropped = 0
        self.full_since_drain = False
        self.journal = journal

    def put(self, message: dict[str, Any]) -> bool:
        """Store a message; False when an older one had to be dropped for it."""
        messages = self.messages
        messages.append(message)
        if len(messages) <= self.size:
            if self.journal is not None:
                self.journal.put(message)
            return True
        messages.popleft()
        self.dropped += 1
        if self.journal is not None:
            self.journal.put_over_oldest(message, messages)
        return False

    def peek(self) -> dict[str, Any] | None:
        """The oldest message, left in place (taken with ``take`` once it was delivered)."""
        return self.messages[0] if self.messages else None

    def take(self) -> dict[str, Any] | None:
        if not self.messages:
            return None
        self.full_since_drain = False
        message = self.messages.popleft()
        if self.journal is not None:
            self.journal.took(self.messages, 1)
        return message

    def resize(self, size: int) -> int:
        """Apply a new bound; returns how many of the oldest messages it dropped."""
        self.size = size
        dropped = 0
        while len(self.messages) > size:
            self.messages.popleft()
            dropped += 1
        self.dropped += dropped
        if dropped and self.journal is not None:
            self.journal.took(self.messages, dropped)
        return dropped

    def __len__(self) -> int:
        return len(self.messages)
