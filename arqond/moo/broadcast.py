"""MOO_DIR/broadcast.jsonl, the system-wide announcement log, its LOG_DIR link, and the
broadcasts sent on the bus to moo:broadcast, which are appended there first."""

from __future__ import annotations

import logging
import os
import stat
import time
from typing import Any

import orjson

from arqond.core.access import Refused
from arqond.core.bus import Bus
from arqond.core.clients import Client
from arqond.core.errors import ErrorCode
from arqond.core.moo.broadcast import broadcast_message
from arqond.core.moo.names import ZgentError
from arqond.core.moo.registry import iso_seconds
from arqond.core.router import RoutingError
from arqond.log import log_event
from arqond.moo.files import set_owner_mode
from arqond.unix import NotOurs

log = logging.getLogger("arqond.moo")

BROADCAST_TARGET = ("moo", "broadcast")
# Group-writable: DESIGN has anyone in the MOO group append announcements (echo >>), which the
# narrative bridge publishes on moo:broadcast like any other log line.
MODE = 0o664


class BroadcastLog:
    def __init__(self, path: str, link: str, gid: int | None) -> None:
        self.path = path
        self.link = link
        try:
            # O_NONBLOCK: a FIFO put in its place fails (ENXIO) or is refused below, never
            # blocks the start.
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                              | os.O_NONBLOCK | os.O_CLOEXEC, MODE)
        except OSError as exc:
            raise NotOurs(f"{path}: cannot open for appending ({exc.strerror}); refusing to "
                          "touch it") from None
        info = os.fstat(self.fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(self.fd)
            raise NotOurs(f"{path} is not a regular file; refusing to touch it")
        if info.st_uid == os.getuid():
            set_owner_mode(self.fd, MODE, gid)

    def ensure_link(self) -> None:
        """LOG_DIR/broadcast.jsonl -> MOO_DIR/broadcast.jsonl; anything else there is kept."""
        try:
            os.symlink(self.path, self.link)
            return
        except FileExistsError:
            pass
        if os.path.islink(self.link) and os.readlink(self.link) == self.path:
            return
        raise NotOurs(f"{self.link} exists and is not a link to {self.path}; leaving it alone")

    def append(self, line: dict[str, Any]) -> int:
        """Append one line in a single write; returns its offset in the file."""
        data = orjson.dumps(line) + b"\n"
        written = os.write(self.fd, data)
        if written != len(data):
            raise OSError(f"short write to {self.path} ({written} of {len(data)} bytes)")
        return os.lseek(self.fd, 0, os.SEEK_CUR) - len(data)

    def close(self) -> None:
        os.close(self.fd)


class Broadcasts:
    """The bus side of the broadcast log: what is sent to moo:broadcast."""

    def __init__(self, bus: Bus, path: str, link: str) -> None:
        self.bus = bus
        self.path = path
        self.link = link
        self.log: BroadcastLog | None = None
        # False once the log-dir tailer publishes broadcast.jsonl lines itself.
        self.publishing = True
        self.broadcasts_total = 0

    def open(self, gid: int | None) -> None:
        try:
            self.log = BroadcastLog(self.path, self.link, gid)
        except NotOurs as exc:
            log_event(log, logging.ERROR, "file_refused", f"broadcast log off: {exc}")
            return
        try:
            os.makedirs(os.path.dirname(self.link), exist_ok=True)
            self.log.ensure_link()
        except (NotOurs, OSError) as exc:
            log_event(log, logging.ERROR, "file_refused", f"broadcast link: {exc}")

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def from_bus(self, client: Client, env: dict[str, Any]) -> None:
        """The intercept of moo:broadcast: appended first, then published once. Its author
        (``from``) is the sender's own name or a Zgent it owns; admins may name anyone."""
        principal = client.principal
        sender = client.screen_name or client.id if principal.admin else principal.name
        try:
            line = broadcast_message(env.get("payload"), sender, iso_seconds(time.time()))
            self.bus.access.check_speaking_as(principal, line["from"])
        except ZgentError as exc:
            raise RoutingError(ErrorCode.VALIDATION_ERROR, str(exc)) from None
        except Refused as refused:
            self.bus.refuse(client, refused.action, refused.zgent)
        if self.log is None:
            raise RoutingError(ErrorCode.EXECUTION_ERROR, "the broadcast log is not available "
                               "(see the arqond log for why)")
        try:
            offset = self.log.append(line)
        except OSError as exc:
            raise RoutingError(ErrorCode.EXECUTION_ERROR, f"cannot append to the broadcast log: "
                               f"{exc}") from None
        self.broadcasts_total += 1
        if self.publishing:
            self.bus.publish({"type": "event", "id": env["id"], "room": BROADCAST_TARGET[0],
                              "channel": BROADCAST_TARGET[1], "sender": line["from"],
                              "payload": line, "metadata": {"source": {
                                  "path": self.log.link, "offset": offset}}},
                             exclude=client)
