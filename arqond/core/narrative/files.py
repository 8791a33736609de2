"""One followed file: what it is, how far it was published, and where it is in its life cycle.

Everything that moves a file from one state to another lives in TRANSITIONS; ``fire`` is the
one setter, and it logs each change at debug level. What the follower does on each transition
(the actions) is in follow.py; the table with both is in that module's docstring.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from arqond.core.framing import LineFramer
from arqond.core.narrative.ids import identity_key
from arqond.core.narrative.names import Target

log = logging.getLogger("arqond.narrative")


class State(Enum):
    OPENING = "opening"      # the adapter was asked to open it
    FOLLOWING = "following"  # at its name, read as it grows
    DRAINING = "draining"    # renamed or deleted away, or a copy: read to its end
    DRAINED = "drained"      # read to its end once; open rotate_wait seconds for late writes
    CLOSED = "closed"


class Event(Enum):
    OPENED_AT_NAME = "opened at its name"
    OPENED_AWAY = "opened under another name"
    OPEN_FAILED = "not opened"
    NOT_THE_SAME = "holds another file than its checkpoint"
    LEFT_NAME = "left its name"
    GREW = "has more to read"
    AT_END = "read to its end"
    TRUNCATED = "shrank or got another first line"
    EXPIRED = "rotate_wait passed"
    READ_FAILED = "read failed"
    STOPPED = "arqond stopped"


_OPEN = (State.FOLLOWING, State.DRAINING, State.DRAINED)
TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.OPENING, Event.OPENED_AT_NAME): State.FOLLOWING,
    (State.OPENING, Event.OPENED_AWAY): State.DRAINING,
    (State.OPENING, Event.OPEN_FAILED): State.CLOSED,
    (State.OPENING, Event.NOT_THE_SAME): State.CLOSED,
    (State.FOLLOWING, Event.LEFT_NAME): State.DRAINING,
    (State.FOLLOWING, Event.GREW): State.FOLLOWING,
    (State.FOLLOWING, Event.AT_END): State.FOLLOWING,
    (State.FOLLOWING, Event.TRUNCATED): State.FOLLOWING,
    (State.DRAINING, Event.GREW): State.DRAINING,
    (State.DRAINING, Event.AT_END): State.DRAINED,
    (State.DRAINING, Event.TRUNCATED): State.DRAINING,
    (State.DRAINED, Event.GREW): State.DRAINED,
    (State.DRAINED, Event.AT_END): State.DRAINED,
    (State.DRAINED, Event.TRUNCATED): State.DRAINING,
    (State.DRAINED, Event.EXPIRED): State.CLOSED,
    **{(state, Event.READ_FAILED): State.CLOSED for state in _OPEN},
    **{(state, Event.STOPPED): State.CLOSED for state in _OPEN},
}


class FollowError(Exception):
    """An event the table has no row for: a bug in arqond, caught where the step began."""


@dataclass
class Record:
    """A checkpoint: a file's identity and the first byte of it not yet published."""

    name: str          # the name the file was published under (it decides room:channel)
    dev: int
    ino: int
    fingerprint: str | None
    key: str | None    # what message ids derive from (ids.identity_key)
    generation: int
    offset: int        # first byte not yet published


class FollowedFile:
    """One file and how far it has been published; the adapter keeps its descriptor."""

    __slots__ = ("name", "path", "target", "dev", "ino", "generation", "fingerprint", "key",
                 "framer", "published", "state", "since", "after")

    def __init__(self, name: str, path: str, target: Target, dev: int, ino: int, *,
                 offset: int, generation: int, max_line_bytes: int) -> None:
        self.name = name            # the name it is published under
        self.path = path            # the path published as metadata.source.path
        self.target = target
        self.dev, self.ino = dev, ino
        self.generation = generation  # truncations so far: part of the identity key
        self.fingerprint: str | None = None
        self.key: str | None = None
        self.framer = LineFramer(max_line_bytes, offset)
        self.published = offset     # first byte not yet published: the checkpoint
        self.state = State.OPENING
        self.since = 0.0            # when it left its name (DRAINING, DRAINED)
        self.after: FollowedFile | None = None  # a predecessor to read to its end first

    def fire(self, event: Event) -> None:
        """The one way a file changes state: the row of TRANSITIONS for its state and event."""
        try:
            state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise FollowError(f"{self.path}: no transition from {self.state.name} when it "
                              f"{event.value}") from None
        if state is not self.state:
            log.debug("%s: %s -> %s (%s)", self.path, self.state.name, state.name, event.value)
            self.state = state

    def learn_identity(self, fp: str | None, key: str | None = None) -> None:
        self.fingerprint = fp
        self.key = key or (identity_key(self.dev, self.ino, fp, self.generation)
                           if fp is not None else None)

    def rewind(self) -> None:
        """Start over at 0 as the file's next generation (it was truncated or rewritten)."""
        self.generation += 1
        self.framer.reset(0)
        self.published = 0
        self.learn_identity(None)

    def record(self) -> Record:
        return Record(self.name, self.dev, self.ino, self.fingerprint, self.key,
                      self.generation, self.published)

    def __repr__(self) -> str:
        return f"<FollowedFile {self.path} {self.state.name} at {self.published}>"
