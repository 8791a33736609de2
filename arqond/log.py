"""Structured logging: stable MESSAGE_IDs and journal fields on every notable event.

A leaf module that every layer may import. ``log_event(logger, level, kind, text, **fields)``:
``kind`` names an entry of MESSAGE_IDS (documented in systemd/arqond.catalog); fields such as
ZGENT, ROOM, CHANNEL, CLIENT_ID travel as journal fields and, on stderr, as trailing
key=value pairs. Where the lines go (journald, stderr, syslog) is system/journal.py's business.
"""

from __future__ import annotations

import logging
from typing import Any

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": NOTICE,
          "warning": logging.WARNING, "error": logging.ERROR}
# syslog priorities, as journald and the <N> stderr prefix use them.
PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, NOTICE: 5, logging.WARNING: 4,
              logging.ERROR: 3, logging.CRITICAL: 2}

# One stable id per kind of notable event; systemd/arqond.catalog explains each.
MESSAGE_IDS = {
    "listener_up": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a51",
    "ready": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a52",
    "stopping": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a53",
    "reloaded": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a54",
    "reload_failed": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a55",
    "client_slow": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a56",
    "auth_refused": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a57",
    "connection_refused": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a58",
    "stats": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a59",
    "channel_created": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a5a",
    "channel_deleted": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a5b",
    "zgent_registered": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a5c",
    "zgent_unregistered": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a5d",
    "file_rotated": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a5e",
    "line_malformed": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a5f",
    "line_refused": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a60",
    "policy_refusal": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a61",
    "file_refused": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a62",
    "checkpoint_corrupt": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a63",
    "registry_corrupt": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a64",
    "mailbox_full": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a65",
    "webhook_failed": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a66",
    "webhook_dropped": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a67",
    "activation_refused": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a68",
    "listener_unserved": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a69",
    "access_refused": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a6a",
    "limit_reached": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a6b",
    "audit": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a6c",
    "dir_unsafe": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a6d",
    "store_failed": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a6e",
    "cluster_up": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a6f",
    "cluster_lost": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a70",
    "cluster_error": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a71",
    "cluster_unshared": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a72",
    "cluster_diverged": "5b1e0f5a8c3d4e6f9a7b2c1d0e3f4a73",
}

logger = logging.getLogger("arqond")


# Control characters escaped as Python shows them ("x\\n.jsonl").
CONTROLS = {code: repr(chr(code))[1:-1] for code in (*range(0x20), *range(0x7f, 0xa0))}


def printable(name: str) -> str:
    """What a user named (a file in the log dir) as a log line may show it: one line, with
    its control characters escaped, so a name never forges a second log line."""
    return name.translate(CONTROLS)


def log_event(log: logging.Logger, level: int, kind: str, text: str, **fields: Any) -> None:
    if not log.isEnabledFor(level):
        return
    journal = {"MESSAGE_ID": MESSAGE_IDS[kind]}
    journal.update({key.upper(): value for key, value in fields.items() if value is not None})
    log.log(level, text, extra={"journal": journal})




class Throttle:
    """Says whether the n-th occurrence of something is worth a log line: the 1st, 2nd, 4th,
    8th... of each key, so a bound hit in a loop is loud once and never a flood."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, key: str) -> tuple[bool, int]:
        count = self.counts.get(key, 0) + 1
        self.counts[key] = count
        return count & (count - 1) == 0, count
