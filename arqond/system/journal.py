"""Where log lines go: journald (native protocol), stderr with <N> priority prefixes, or
syslog when detached. What a line says is arqond/log.py's business."""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys

from arqond.log import LEVELS, PRIORITIES, logger


class FieldsFormatter(logging.Formatter):
    """``text key=value ...``: the structured fields spelled out for plain-text sinks."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        fields = getattr(record, "journal", None)
        extra = " ".join(f"{k}={v}" for k, v in (fields or {}).items() if k != "MESSAGE_ID")
        if extra:
            text += " " + extra
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class StderrFormatter(FieldsFormatter):
    """``<N>text key=value ...``: journald turns the prefix into PRIORITY when it reads stderr."""

    def format(self, record: logging.LogRecord) -> str:
        priority = PRIORITIES.get(record.levelno, 6)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


class SyslogHandler(logging.handlers.SysLogHandler):
    """For the detached (--daemon) mode: the host's syslog, tagged arqond[PID]."""

    def __init__(self) -> None:
        super().__init__("/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        self.ident = f"arqond[{os.getpid()}]: "
        self.setFormatter(FieldsFormatter())

    def mapPriority(self, levelName: str) -> str:  # noqa: N802 (the base class's name)
        return {"NOTICE": "notice"}.get(levelName, super().mapPriority(levelName))


class JournalHandler(logging.Handler):
    """Native journald protocol: one datagram of FIELD=value lines per record."""

    def __init__(self, path: str = "/run/systemd/journal/socket") -> None:
        super().__init__()
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setblocking(False)

    def emit(self, record: logging.LogRecord) -> None:
        fields = {"MESSAGE": record.getMessage(),
                  "PRIORITY": str(PRIORITIES.get(record.levelno, 6)),
                  "SYSLOG_IDENTIFIER": "arqond",
                  "CODE_FILE": record.pathname, "CODE_LINE": str(record.lineno),
                  "CODE_FUNC": record.funcName}
        if record.exc_info:
            fields["MESSAGE"] += "\n" + logging.Formatter().formatException(record.exc_info)
        fields.update({k: str(v) for k, v in (getattr(record, "journal", None) or {}).items()})
        try:
            self.socket.sendto(_journal_datagram(fields), self.path)
        except OSError:
            # journald gone or its queue full: fall back to stderr rather than lose the line.
            sys.stderr.write(StderrFormatter().format(record) + "\n")

    def close(self) -> None:
        self.socket.close()
        super().close()


def _journal_datagram(fields: dict[str, str]) -> bytes:
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def _under_journald() -> bool:
    """True when stderr is the journal stream systemd set up for us (JOURNAL_STREAM)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream or not os.path.exists("/run/systemd/journal/socket"):
        return False
    try:
        device, inode = (int(part) for part in stream.split(":"))
        info = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


def setup(level: str, syslog: bool = False) -> None:
    """Log to journald when stderr is the journal, to syslog when detached (dropping the
    lines when no syslog listens on /dev/log), else to stderr."""
    handler: logging.Handler
    if _under_journald():
        handler = JournalHandler()
    elif syslog:
        try:
            handler = SyslogHandler()
        except OSError:
            handler = logging.NullHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(StderrFormatter())
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.propagate = False
    set_level(level)


def set_level(level: str) -> None:
    logger.setLevel(LEVELS[level])
