"""The service manager's notify protocol: readiness, status, watchdog, reload, stop, fd store.

Plain messages go through ``sdnotify``; messages that carry a file descriptor (FDSTORE=1) use
``sendmsg`` with SCM_RIGHTS on the same connected socket (``socket.send_fds`` ignores its address
argument, and sdnotify cannot pass fds). Without NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import array
import logging
import os
import socket
import time

import sdnotify

log = logging.getLogger("arqond.notify")


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        # Read once and unset, so helper processes arqond starts do not talk to systemd as us.
        address = env.pop("NOTIFY_SOCKET", None)
        watchdog_usec = env.pop("WATCHDOG_USEC", None)
        watchdog_pid = env.pop("WATCHDOG_PID", None)
        self.socket: socket.socket | None = None
        if address:
            try:
                self._plain = _connect(address)
            except OSError as exc:
                log.warning("cannot reach the service manager at NOTIFY_SOCKET=%s: %s",
                            address, exc.strerror)
            else:
                self.socket = self._plain.socket
        self.watchdog_interval: float | None = None
        if watchdog_usec and (not watchdog_pid or watchdog_pid == str(os.getpid())):
            try:
                self.watchdog_interval = int(watchdog_usec) / 1_000_000 / 2
            except ValueError:
                log.warning("ignoring WATCHDOG_USEC=%r: not a number", watchdog_usec)
        self.sent_total = 0
        self.failed_total = 0   # messages the manager did not take (its queue full, or gone)
        self.status_text = ""

    @property
    def enabled(self) -> bool:
        return self.socket is not None

    def send(self, **fields: object) -> bool:
        """Send one message of ``KEY=value`` lines (keys as given, e.g. READY=1)."""
        if self.socket is None:
            return False
        try:
            self._plain.notify(_message(fields))
        except OSError as exc:
            self.failed_total += 1
            log.debug("notify %s failed: %s", ",".join(fields), exc.strerror)
            return False
        self.sent_total += 1
        return True

    def ready(self, status: str) -> None:
        self.status_text = status
        self.send(READY=1, STATUS=status)

    def status(self, text: str) -> None:
        """Send STATUS= when it says something new."""
        if text != self.status_text:
            self.status_text = text
            self.send(STATUS=text)

    def watchdog(self) -> None:
        self.send(WATCHDOG=1)

    def reloading(self) -> None:
        self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS="reloading configuration")

    def stopping(self) -> None:
        self.send(STOPPING=1, STATUS="stopping")

    def store_fd(self, name: str, fd: int, *, poll: bool = True) -> bool:
        """FDSTORE=1 with ``fd`` attached; FDPOLL=0 keeps PID 1 from dropping a pipe whose
        writers all hung up."""
        if self.socket is None:
            return False
        fields: dict[str, object] = {"FDSTORE": 1, "FDNAME": name}
        if not poll:
            fields["FDPOLL"] = 0
        try:
            self.socket.sendmsg([_message(fields).encode()],
                               [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        except OSError as exc:
            self.failed_total += 1
            log.warning("could not hand fd %s (%s) to the service manager: %s",
                        fd, name, exc.strerror)
            return False
        self.sent_total += 1
        return True

    def remove_fd(self, name: str) -> bool:
        return self.send(FDSTOREREMOVE=1, FDNAME=name)


def _connect(address: str) -> sdnotify.SystemdNotifier:
    """sdnotify reads the address from os.environ only; lend it there for the connect."""
    saved = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = address
    try:
        return sdnotify.SystemdNotifier(debug=True)
    finally:
        if saved is None:
            del os.environ["NOTIFY_SOCKET"]
        else:
            os.environ["NOTIFY_SOCKET"] = saved


def _message(fields: dict[str, object]) -> str:
    # One field per line: a newline inside a value (a STATUS text) would start a new field.
    return "\n".join(f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items())
