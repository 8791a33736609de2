"""Logging into a real systemd-journald: a private one under ``unshare -m`` (tmpfs on /run), so
the host's journal is untouched. Also the ``<N>`` stderr prefixes used outside journald."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from arqond.log import MESSAGE_IDS

from .conftest import ROOT, scaled

JOURNALD = "/lib/systemd/systemd-journald"

# Runs inside the private mount namespace: a fresh /run, journald on it, the driver, then the
# journal as JSON on stdout. The driver's stderr is a file whose dev:ino goes into
# JOURNAL_STREAM, which is how arqond recognises that systemd connected it to the journal.
HARNESS = textwrap.dedent("""\
    set -eu
    mount -t tmpfs tmpfs /run
    if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
    SYSTEMD_LOG_TARGET=console {journald} 2>"$WORK/journald.log" &
    jd=$!
    for i in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
    : >"$WORK/stderr"
    JOURNAL_STREAM=$(stat -c '%d:%i' "$WORK/stderr") {python} "$WORK/driver.py" 2>>"$WORK/stderr"
    journalctl --directory=/run/log/journal -o json SYSLOG_IDENTIFIER=arqond
    kill $jd
    wait $jd || true
    """)

DRIVER = textwrap.dedent("""\
    import asyncio, logging, signal, subprocess, sys
    from arqond.system import journal
    from arqond.log import NOTICE, log_event
    journal.setup("debug")
    assert isinstance(journal.logger.handlers[0], journal.JournalHandler)
    log = logging.getLogger("arqond.moo")
    log_event(log, logging.INFO, "zgent_registered", "Zgent alice registered", zgent="alice")
    log_event(log, logging.WARNING, "client_slow", "slow client cut off",
              client_id="arq_client_1", room="science", channel="general")
    log_event(log, logging.ERROR, "reload_failed", "first line\\nsecond line")
    log_event(log, NOTICE, "ready", "ready")
    log_event(log, logging.DEBUG, "stats", "quiet detail")
    """)


@pytest.fixture
def private_journal(tmp_path):
    if not os.path.exists(JOURNALD) or shutil.which("unshare") is None:
        pytest.fail(f"{JOURNALD} and unshare are needed for the journald test")

    def run(driver: str) -> list[dict]:
        (tmp_path / "driver.py").write_text(driver)
        script = HARNESS.format(journald=JOURNALD, python=sys.executable)
        env = {**os.environ, "WORK": str(tmp_path), "PYTHONPATH": str(ROOT)}
        result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                capture_output=True, text=True, timeout=scaled(60), env=env)
        assert result.returncode == 0, result.stderr + (tmp_path / "stderr").read_text()
        return [json.loads(line) for line in result.stdout.splitlines()]
    return run


def test_structured_fields_land_in_the_journal(private_journal):
    entries = private_journal(DRIVER)
    by_id = {entry.get("MESSAGE_ID"): entry for entry in entries}
    registered = by_id[MESSAGE_IDS["zgent_registered"]]
    assert (registered["MESSAGE"], registered["PRIORITY"], registered["ZGENT"]) == \
        ("Zgent alice registered", "6", "alice")
    slow = by_id[MESSAGE_IDS["client_slow"]]
    assert (slow["PRIORITY"], slow["CLIENT_ID"], slow["ROOM"], slow["CHANNEL"]) == \
        ("4", "arq_client_1", "science", "general")
    failed = by_id[MESSAGE_IDS["reload_failed"]]
    assert (failed["MESSAGE"], failed["PRIORITY"]) == ("first line\nsecond line", "3")
    assert by_id[MESSAGE_IDS["ready"]]["PRIORITY"] == "5"
    assert by_id[MESSAGE_IDS["stats"]]["PRIORITY"] == "7"
    assert all(entry["SYSLOG_IDENTIFIER"] == "arqond" for entry in entries)
    assert all(entry["CODE_FILE"].endswith(".py") for entry in entries)


def test_the_daemon_logs_to_the_journal(private_journal):
    """The real daemon: its listener, a channel created by a client, stop; all as fields."""
    driver = textwrap.dedent("""\
        import asyncio, os, signal, subprocess, sys
        import orjson
        from websockets.asyncio.client import connect
        # Every path on the private /run tmpfs: nothing of the host's /var is touched.
        for name in ("moo", "log-moo", "state"):
            os.makedirs(f"/run/arqond-test/{name}")
        proc = subprocess.Popen([sys.executable, "-m", "arqond", "--port", "0",
                                 "--telemetry-port", "0", "--http-port", "0",
                                 "--moo-dir", "/run/arqond-test/moo",
                                 "--log-dir", "/run/arqond-test/log-moo",
                                 "--state-dir", "/run/arqond-test/state",
                                 "--control-socket", "/run/arqond-test/control.sock",
                                 "--log-level", "info"])
        async def main():
            # The daemon's log goes to the journal, not to us: its listener's address is read
            # back from there.
            for _ in range(200):
                out = subprocess.run(["journalctl", "--directory=/run/log/journal", "-o", "json",
                                      f"_PID={proc.pid}", "LISTENER=ws"],
                                     capture_output=True, text=True).stdout
                if out:
                    break
                await asyncio.sleep(0.05)
            address = orjson.loads(out.splitlines()[0])["ADDRESS"]
            async with connect(f"ws://{address}/") as ws:
                await ws.recv()
                await ws.send(orjson.dumps({"type": "command", "command": "join_channel",
                                            "args": {"room": "lab", "channel": "bench"}}).decode())
                await ws.recv()
        asyncio.run(main())
        proc.send_signal(signal.SIGTERM)
        sys.exit(proc.wait(10))
        """)
    entries = private_journal(driver)
    kinds = {entry.get("MESSAGE_ID"): entry for entry in entries}
    listeners = {entry["LISTENER"]: entry for entry in entries
                 if entry.get("MESSAGE_ID") == MESSAGE_IDS["listener_up"]}
    assert listeners["ws"]["ADDRESS"].startswith("127.0.0.1:")
    created = kinds[MESSAGE_IDS["channel_created"]]
    assert (created["ROOM"], created["CHANNEL"], created["PRIORITY"]) == ("lab", "bench", "6")
    assert MESSAGE_IDS["ready"] in kinds and MESSAGE_IDS["stopping"] in kinds


def test_stderr_lines_carry_priority_prefixes(make_daemon):
    daemon = make_daemon({"server": {"log_level": "info"}})
    ready = daemon.wait_for_line("ready")
    assert ready.startswith("<5>")
    listener = daemon.wait_for_line("LISTENER=ws")
    assert listener.startswith("<6>")
    assert all(line[:3] in ("<3>", "<4>", "<5>", "<6>") for line in daemon.lines)
