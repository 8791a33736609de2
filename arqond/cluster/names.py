"""Room, channel and node names spelled for NATS, and back: no NATS import.

A name may be any string arqond accepts (arqond/core/router.py check_name), so it is encoded
here, never restricted: letters, digits, "_" and "-" stay as they are, every other UTF-8 byte
becomes "=XX" (upper-case hex). The result is one subject token (no ".", "*", ">" or space)
and a valid key-value key, and decodes to exactly the name it came from.
"""

from __future__ import annotations

import re

SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
ESCAPED = re.compile(r"=([0-9A-F]{2})")


def encode(name: str) -> str:
    return "".join(chr(byte) if byte in SAFE else f"={byte:02X}"
                   for byte in name.encode("utf-8"))


def decode(token: str) -> str:
    """The name ``encode`` made ``token`` from; ValueError for a token it cannot have made."""
    if not token or any(c not in "=0123456789ABCDEF" and ord(c) not in SAFE for c in token) \
            or ESCAPED.sub("", token).count("="):
        raise ValueError(f"{token!r} is not an encoded name")
    raw = bytearray()
    index = 0
    while index < len(token):
        if token[index] == "=":
            raw.append(int(token[index + 1:index + 3], 16))
            index += 3
        else:
            raw.append(ord(token[index]))
            index += 1
    return raw.decode("utf-8")


class Subjects:
    """The subjects of one cluster (``cluster.name``), and the names of its JetStream stream."""

    def __init__(self, cluster: str) -> None:
        self.prefix = cluster
        self.stream = f"{cluster}-channels"
        self.channels = f"{cluster}.ch.>"
        self.deleted = f"{cluster}.deleted"     # a channel deleted on one node, for all

    def channel(self, room: str, channel: str) -> str:
        return f"{self.prefix}.ch.{encode(room)}.{encode(channel)}"

    def target(self, subject: str) -> tuple[str, str]:
        """room, channel of a channel subject; ValueError for any other subject."""
        parts = subject.split(".")
        if len(parts) != 4 or parts[0] != self.prefix or parts[1] != "ch":
            raise ValueError(f"{subject!r} is not a channel subject of {self.prefix}")
        return decode(parts[2]), decode(parts[3])
