"""ArqonBus ids: message ids from arqond's generator, and ArqonBus's rule for which ids an
inbound frame may carry.

A message id is ``arq_<generator start, ns>_<counter>_<6 hex>``; ArqonBus servers also take
``arq_<ULID>``. Client, room and channel ids are a prefix and 32 random hex digits. arqond
itself takes any inbound id of 1 to 128 characters; ``is_valid_message_id`` says which ones an
ArqonBus server would refuse.
"""

from __future__ import annotations

import os
import re
import threading

from arqond.core.envelope import IdGenerator, client_id

# The 26 characters of a ULID: Crockford's base 32, upper case (no I, L, O or U).
ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


class IDGenerator(IdGenerator):
    """One message id sequence (its own start time and counter); safe to share between
    threads, as ArqonBus's is."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            return super().next()

    generate_message_id = next

    def generate_client_id(self) -> str:
        return client_id()

    def generate_room_id(self) -> str:
        return "arq_room_" + os.urandom(16).hex()

    def generate_channel_id(self) -> str:
        return "arq_channel_" + os.urandom(16).hex()


_generator = IDGenerator()


def generate_message_id() -> str:
    return _generator.generate_message_id()


def generate_client_id() -> str:
    return _generator.generate_client_id()


def generate_room_id() -> str:
    return _generator.generate_room_id()


def generate_channel_id() -> str:
    return _generator.generate_channel_id()


def _parses_as_int(text: str, base: int) -> bool:
    try:
        int(text, base)
    except ValueError:
        return False
    return True


def is_valid_message_id(message_id: str) -> bool:
    """Whether an ArqonBus server accepts ``message_id`` on an inbound frame: ``arq_<ULID>``,
    or ``arq_`` and three parts that Python's ``int`` reads, the last as 6 hex digits."""
    if not message_id or not message_id.startswith("arq_"):
        return False
    parts = message_id.split("_")
    if len(parts) == 2:
        return ULID.fullmatch(parts[1]) is not None
    return (len(parts) == 4 and len(parts[3]) == 6 and _parses_as_int(parts[1], 10)
            and _parses_as_int(parts[2], 10) and _parses_as_int(parts[3], 16))
