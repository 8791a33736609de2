"""B7: exec → READY=1, and connection attempts refused while arqond restarts under socket
activation (a LISTEN_FDS harness that holds the listening socket across the restart, as systemd
does)."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.stats import percentile, row
from tests.conftest import DaemonProcess

READY_GRACE = 1.0  # seconds to wait for READY=1 after the "ready" log line


def time_to_ready(tmp: Path) -> tuple[float, str]:
    """Seconds from exec to READY=1 on a NOTIFY_SOCKET we own, else to the "ready" log line."""
    notify_path = tmp / "notify.sock"
    notify_path.unlink(missing_ok=True)   # a start before this one in the same dir
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    daemon = DaemonProcess(tmp, {"server": {"log_level": "notice"}},
                           env={"NOTIFY_SOCKET": str(notify_path)})
    try:
        began = time.monotonic()
        daemon.start(wait_ready=False)
        notify.settimeout(0.05)
        logged_at = None
        while True:
            try:
                message = notify.recv(4096).decode(errors="replace")
                if "READY=1" in message.split("\n"):
                    return time.monotonic() - began, "READY=1"
            except TimeoutError:
                pass
            if logged_at is None and any("ready" in line for line in daemon.lines):
                logged_at = time.monotonic() - began
            if logged_at is not None and time.monotonic() - began > logged_at + READY_GRACE:
                return logged_at, "ready log line (no READY=1 from this build)"
            if daemon.proc.poll() is not None:
                raise RuntimeError("arqond exited during start-up:\n" + "\n".join(daemon.lines))
            if time.monotonic() - began > 30:
                raise RuntimeError("arqond not ready within 30 s")
    finally:
        notify.close()
        procs.stop(daemon.proc)


def b7_startup(settings: dict[str, Any]) -> list[dict[str, Any]]:
    times, sources = [], set()
    for attempt in range(settings["b7_starts"]):
        with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
            seconds, source = time_to_ready(Path(tmp))
        times.append(seconds * 1000)
        sources.add(source)
    rows = [{**row("B7", "arqond", "exec → ready", None, "ms", target="≤ 300",
                   note=", ".join(sorted(sources))),
             "p50": percentile(times, 0.5), "p99": percentile(times, 0.99), "max": max(times)}]
    rows.append(restart_refusals(settings["b7_restart_seconds"]))
    return rows


class Prober:
    """Connects to a port in a loop, counting attempts and refusals, until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.attempts = self.refused = self.other_errors = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            self.attempts += 1
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
            except ConnectionRefusedError:
                self.refused += 1
            except OSError:
                self.other_errors += 1
            time.sleep(0.001)

    def stop(self) -> None:
        self.running = False
        self.thread.join()


def restart_refusals(seconds: float) -> dict[str, Any]:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    # LISTEN_PID must be the daemon's own pid, known only after fork: a shell moves the socket
    # to fd 3, sets LISTEN_PID to its own pid and execs arqond, as systemd would.
    fd = listener.fileno()
    move = "" if fd == 3 else f"exec 3<&{fd} {fd}<&-; "   # already fd 3: moving it closes it
    wrapper = ["bash", "-c", f'{move}export LISTEN_PID=$$; exec "$@"', "activate"]
    with tempfile.TemporaryDirectory(prefix="bench-activate-") as tmp:
        daemon = DaemonProcess(Path(tmp), {"server": {"log_level": "info"}},
                               env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "ws"}, wrapper=wrapper)
        daemon.popen_extra["pass_fds"] = (fd,)
        try:
            daemon.start()
            served = daemon.listeners.get("ws", "")
            if not served.endswith(f":{port}"):
                return row("B7", "arqond", "refused during restart", None,
                           note=f"n/a (not on this branch): with LISTEN_FDS=1 arqond served ws "
                                f"on {served or 'nothing'}, not the passed socket :{port}")
            prober = Prober(port)
            time.sleep(seconds / 2)
            procs.stop(daemon.proc)
            daemon.start()
            time.sleep(seconds / 2)
            prober.stop()
            return row("B7", "arqond", "refused during restart", prober.refused, "attempts",
                       target="0", note=f"{prober.attempts} attempts, "
                                        f"{prober.other_errors} other errors")
        finally:
            procs.stop(daemon.proc)
            listener.close()
