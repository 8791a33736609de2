"""MOO_DIR/broadcast.jsonl, the system-wide announcement log, and its LOG_DIR link."""

from __future__ import annotations

import os
import stat
from typing import Any

import orjson

from arqond.moo.files import NotOurs


# Group-writable: DESIGN has anyone in the MOO group append announcements (echo >>), which the
# narrative bridge publishes on moo:broadcast like any other log line.
MODE = 0o664


class BroadcastLog:
    def __init__(self, path: str, link: str, gid: int | None) -> None:
        self.path = path
        self.link = link
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                              | os.O_CLOEXEC, MODE)
        except OSError as exc:
            raise NotOurs(f"{path}: cannot open for appending ({exc.strerror}); refusing to "
                          "touch it") from None
        info = os.fstat(self.fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(self.fd)
            raise NotOurs(f"{path} is not a regular file; refusing to touch it")
        if info.st_uid == os.getuid():
            os.fchmod(self.fd, MODE)
            if gid is not None and info.st_gid != gid:
                os.fchown(self.fd, -1, gid)

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
