"""arqond under a real systemd as PID 1: a Debian 12 container booted with systemd-nspawn
(tests/nspawn.py, the harness the package tests share). The source tree and arqond's
dependencies are bind-mounted read-only beside the cached image, so the cache never holds the
code under test; the shipped launcher runs it. The container shares the host's loopback.
Nothing here is skipped: a machine that cannot build or boot the container fails the test
with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from arqond.log import MESSAGE_IDS

from tests.conftest import PortTaken, on_free_ports, scaled
from tests.nspawn import PRIVATE_DIR, SOURCE, Container, ContainerError, image, source_binds

# The first run builds the image (about a minute) inside the first test's setup.
pytestmark = pytest.mark.timeout(900)

SYSTEM = Path(__file__).resolve().parent / "system"
# Channel history kept by arqond in the MOO tests: more than a restart's worth of inbox lines,
# so a follower that reconnects can fill its gap from it.
HISTORY = 20000
SOCKETS = ("arqond.socket", "arqond-telemetry.socket", "arqond-http.socket",
           "arqond-control.socket")


@pytest.fixture
def container():
    if os.geteuid() != 0:
        pytest.fail("the systemd system test needs root (debootstrap, systemd-nspawn)")
    machine = Container(image(), source_binds(), private_network=False)
    try:
        machine.boot()
        assert machine.state == "running"   # no failed units at boot
        yield machine
    finally:
        machine.shutdown()


def install(machine: Container, service_dropin: str = "", config: str = "") -> dict[str, int]:
    """What a package does: units, sysusers.d, tmpfiles.d, catalog; ports moved off the
    defaults with drop-ins (the container shares the host's loopback). Returns the ports."""
    def start(picked: list[int]) -> dict[str, int]:
        ports = dict(zip(("ws", "telemetry", "http"), picked))
        try:
            install_on(machine, ports, service_dropin, config)
        except ContainerError:
            said = machine.sh("journalctl -u 'arqond*.socket' --no-pager -o cat", check=False)
            if "Address already in use" in said:
                raise PortTaken(ports) from None
            raise
        return ports
    return on_free_ports(3, start)


def install_on(machine: Container, ports: dict[str, int], service_dropin: str,
               config: str) -> None:
    src = f"{SOURCE}/systemd"
    # The launcher a package installs, pointed at the mounted dependencies and source tree.
    script = [f"sed -e 's|@PYTHON@|/usr/bin/python3|' -e 's|@PRIVATE_DIR@|{PRIVATE_DIR}|' "
              f"-e 's|@MODULE@|arqond.app|' {SOURCE}/packaging/launcher.in > /usr/bin/arqond",
              "chmod 755 /usr/bin/arqond",
              "mkdir -p /etc/sysusers.d /etc/tmpfiles.d /usr/lib/systemd/catalog",
              f"cp {src}/arqond.service {src}/arqond*.socket /etc/systemd/system/",
              f"cp {src}/sysusers.d/arqond.conf /etc/sysusers.d/",
              f"cp {src}/tmpfiles.d/arqond.conf /etc/tmpfiles.d/",
              f"cp {src}/arqond.catalog /usr/lib/systemd/catalog/",
              "systemd-sysusers", "systemd-tmpfiles --create /etc/tmpfiles.d/arqond.conf",
              "journalctl --update-catalog"]
    for unit, port in (("arqond.socket", ports["ws"]), ("arqond-telemetry.socket",
                                                        ports["telemetry"]),
                       ("arqond-http.socket", ports["http"])):
        script += [f"mkdir -p /etc/systemd/system/{unit}.d",
                   f"printf '[Socket]\\nListenStream=\\nListenStream=127.0.0.1:{port}\\n' "
                   f"> /etc/systemd/system/{unit}.d/port.conf"]
    if config:
        script += ["mkdir -p /etc/arqond", f"printf '{config}' > /etc/arqond/arqond.toml"]
    if service_dropin:
        script += ["mkdir -p /etc/systemd/system/arqond.service.d",
                   f"printf '{service_dropin}' > /etc/systemd/system/arqond.service.d/test.conf"]
    script += ["systemctl daemon-reload", "systemctl start " + " ".join(SOCKETS)]
    machine.sh(" && ".join(script))


async def welcome(port: int) -> str:
    async with connect(f"ws://127.0.0.1:{port}/", open_timeout=scaled(30)) as ws:
        frame = json.loads(await asyncio.wait_for(ws.recv(), scaled(30)))
    return frame["payload"]["client_id"]


class Load:
    """A steady stream of WebSocket connects, each counted once its welcome arrived."""

    def __init__(self, port: int, workers: int = 4) -> None:
        self.port = port
        self.served = 0
        self.failures: list[str] = []
        self.running = True
        self.tasks = [asyncio.create_task(self._worker()) for _ in range(workers)]

    async def _worker(self) -> None:
        while self.running:
            try:
                await welcome(self.port)
                self.served += 1
            except Exception as exc:   # every failure is reported by the test
                self.failures.append(repr(exc))

    async def until_served(self, count: int) -> None:
        target = self.served + count
        while self.served < target:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.running = False
        await asyncio.gather(*self.tasks)


async def test_socket_activated_service_restarts_without_refusing(container):
    ports = install(container)
    # Socket-activated: nothing runs until the first client, which is queued and served.
    assert container.show("arqond.service", "ActiveState")["ActiveState"] == "inactive"
    assert (await welcome(ports["ws"])).startswith("arq_client_")
    first_pid = container.wait_active("arqond.service")
    status = container.show("arqond.service", "StatusText", "User", "Group")
    assert f"serving ws 127.0.0.1:{ports['ws']}" in status["StatusText"], status
    assert container.sh(f"stat -c '%U %G' /proc/{first_pid}").split() == ["arqond", "zgents"]
    assert container.sh("stat -c '%a %U %G' /var/moo /var/log/moo").split() == \
        ["2755", "arqond", "zgents", "3775", "arqond", "zgents"]
    assert container.sh("stat -c '%F %a %U %G' /run/arqond/control.sock").split() == \
        ["socket", "660", "arqond", "arqond"]

    # systemctl restart under a stream of connects: the listening socket stays with systemd,
    # so every connect is queued and served, none refused or dropped.
    load = Load(ports["ws"])
    await load.until_served(10)
    await asyncio.to_thread(container.sh, "systemctl restart arqond.service")
    second_pid = container.wait_active("arqond.service", other_than=first_pid)
    await load.until_served(10)
    await load.stop()
    print(f"restart: {load.served} connects served, failures {load.failures}")
    assert load.failures == []

    # kill -9: Restart=on-failure brings it back on its own; connects keep being served.
    load = Load(ports["ws"])
    await load.until_served(10)
    container.sh(f"kill -9 {second_pid}")
    third_pid = container.wait_active("arqond.service", other_than=second_pid)
    await load.until_served(10)
    await load.stop()
    print(f"kill -9: {load.served} connects served, failures {load.failures}")
    # A connection the killed process had already accepted dies with it; one still in the
    # kernel's queue must not: nothing may be refused.
    assert not [f for f in load.failures if "ConnectionRefused" in f]
    assert container.show("arqond.service", "NRestarts")["NRestarts"] == "1"

    # The listening sockets stayed with systemd all along.
    for unit in SOCKETS:
        assert container.show(unit, "SubState")["SubState"] == "running", unit

    # SIGHUP through systemctl reload: same process, READY again, a journal entry.
    container.sh("systemctl reload arqond.service")
    assert container.wait_active("arqond.service") == third_pid

    entries = container.journal("arqond.service")
    ours = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "arqond" and "MESSAGE_ID" in e]
    by_kind = {}
    for entry in ours:
        by_kind.setdefault(entry["MESSAGE_ID"], []).append(entry)
    listener = [e for e in by_kind[MESSAGE_IDS["listener_up"]] if e["LISTENER"] == "ws"][-1]
    assert (listener["ADDRESS"], listener["PRIORITY"]) == (f"127.0.0.1:{ports['ws']}", "6")
    assert listener["_SYSTEMD_UNIT"] == "arqond.service"
    assert len(by_kind[MESSAGE_IDS["ready"]]) == 3        # three processes
    assert len(by_kind[MESSAGE_IDS["stopping"]]) == 1     # only the restart stopped cleanly
    assert by_kind[MESSAGE_IDS["reloaded"]][0]["PRIORITY"] == "5"
    # The catalog is installed: journalctl -x explains the entries.
    explained = container.sh("journalctl -u arqond.service -x --no-pager")
    assert "arqond serves its ws listener on" in explained
    score = container.sh("systemd-analyze security arqond.service --no-pager | tail -n 1")
    assert float(score.split("arqond.service: ")[1].split()[0]) <= 2.0, score


async def test_a_stuck_event_loop_is_restarted_by_the_watchdog(container):
    ports = install(container, "[Service]\\nWatchdogSec=2s\\nTimeoutAbortSec=2s\\n")
    await welcome(ports["ws"])
    pid = container.wait_active("arqond.service")
    time.sleep(3)   # longer than WatchdogSec: the pings from the running loop keep it alive
    assert container.wait_active("arqond.service") == pid
    container.sh(f"kill -STOP {pid}")   # the loop stops: no more WATCHDOG=1
    fresh = container.wait_active("arqond.service", other_than=pid, timeout=30)
    assert (await welcome(ports["ws"])).startswith("arq_client_")
    state = container.show("arqond.service", "NRestarts")
    assert state["NRestarts"] == "1" and fresh != pid
    systemd_said = container.sh("journalctl -u arqond.service --no-pager -o cat")
    assert "Watchdog timeout" in systemd_said


class InboxFollower:
    """A WebSocket client that follows NAME:inbox across arqond's restarts: after each
    reconnect it resumes the channel's stream from the last message it has (join_channel
    since), so every line arrives once, whether it came live or was replayed."""

    def __init__(self, port: int, zgent: str) -> None:
        self.port = port
        self.zgent = zgent
        self.ids: set[str] = set()
        self.lines: list[dict] = []
        self.last: dict | None = None     # {"seq", "epoch"} of the last message taken
        self.reconnects = 0
        self.errors: list[str] = []    # why each connection ended
        self.running = True
        self.joined = asyncio.Event()     # set at the first join: then writing may start
        self.task = asyncio.create_task(self._follow())

    def _take(self, frame: dict) -> None:
        if frame["id"] not in self.ids:       # a duplicate would show as a second line
            self.ids.add(frame["id"])
            self.lines.append(frame["payload"])
        self.last = {key: frame["metadata"][key] for key in ("seq", "epoch")}

    async def _follow(self) -> None:
        while self.running:
            try:
                async with connect(f"ws://127.0.0.1:{self.port}/", open_timeout=scaled(30),
                                   max_size=None) as ws:
                    await asyncio.wait_for(ws.recv(), scaled(30))   # welcome
                    args: dict = {"room": self.zgent, "channel": "inbox"}
                    if self.last is not None:
                        args["since"] = self.last
                    await ws.send(json.dumps({"type": "command", "command": "join_channel",
                                              "args": args}))
                    async for raw in ws:
                        frame = json.loads(raw)
                        if frame["type"] == "response":
                            resume = frame["payload"]["data"].get("resume")
                            assert resume is None or resume["recovered"], resume
                            self.joined.set()
                        elif frame["type"] == "message" and frame["room"] == self.zgent:
                            self._take(frame)
            except Exception as exc:   # reported with the figures; the lines decide
                self.errors.append(repr(exc))
            if self.running:
                self.reconnects += 1
                await asyncio.sleep(0.05)

    def numbers(self, writer: str) -> list[int]:
        return [line["n"] for line in self.lines if line.get("w") == writer]

    async def until_received(self, expected: dict[str, list[int]], timeout: float = 30) -> None:
        deadline = time.monotonic() + scaled(timeout)
        while any(self.numbers(w)[-1:] != n[-1:] for w, n in expected.items()) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.running = False
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class MooLoad:
    """From the host, into the container's MOO dir: one writer holding NAME-inbox open, one
    `echo > NAME-inbox` loop and (optionally) one socat arqon.ping loop on NAME.sock."""

    def __init__(self, machine: Container, zgent: str, work: Path, ping: bool) -> None:
        moo = Path(f"/proc/{machine.leader}/root/var/moo")
        work.mkdir()
        self.stop_file = work / "stop"
        self.procs = {
            "long": subprocess.Popen([sys.executable, str(SYSTEM / "moo-long-writer.py"),
                                      str(moo / f"{zgent}-inbox"), str(self.stop_file)],
                                     stdout=subprocess.PIPE, text=True),
            "echo": subprocess.Popen([str(SYSTEM / "moo-writers.sh"), "echo",
                                      str(moo / f"{zgent}-inbox"), str(self.stop_file)],
                                     stdout=subprocess.PIPE, text=True)}
        if ping:
            self.procs["ping"] = subprocess.Popen(
                [str(SYSTEM / "moo-writers.sh"), "ping", str(moo / f"{zgent}.sock"),
                 str(self.stop_file)], stdout=subprocess.PIPE, text=True)
        self.results: dict[str, list[tuple[str, int, str]]] = {}

    def finish(self) -> None:
        self.stop_file.touch()
        for name, proc in self.procs.items():
            out, _ = proc.communicate(timeout=scaled(60))
            self.results[name] = [(f[0], int(f[1]), " ".join(f[2:]))
                                  for f in (line.split() for line in out.splitlines())]

    def written(self, name: str) -> list[int]:
        return [n for status, n, _ in self.results[name] if status == "ok"]

    def failed(self, name: str) -> list[tuple[int, str]]:
        return [(n, why) for status, n, why in self.results[name] if status == "fail"]


async def register_zgent(port: int, name: str) -> None:
    async with connect(f"ws://127.0.0.1:{port}/", open_timeout=scaled(30)) as ws:
        await asyncio.wait_for(ws.recv(), scaled(30))
        await ws.send(json.dumps({"type": "command", "command": "zgent.register",
                                  "args": {"id": name}}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), scaled(30)))
        assert frame["type"] == "response" and frame["status"] == "success", \
            (frame.get("error_code"), frame.get("error"))


def ranges(numbers: list[int]) -> str:
    """1 2 3 7 8 -> '1-3 7-8': what a follower got, readable in a failure message."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return " ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)


def report(what: str, load: MooLoad, follower: InboxFollower) -> str:
    parts = [what]
    for name in ("long", "echo"):
        parts.append(f"{name} wrote {len(load.written(name))} line(s), failed "
                     f"{load.failed(name)}, received {len(follower.numbers(name))} "
                     f"({ranges(follower.numbers(name))})")
    if "ping" in load.results:
        parts.append(f"ping ok {len(load.written('ping'))}, failed {load.failed('ping')}")
    parts.append(f"follower reconnected {follower.reconnects} time(s): "
                 f"{sorted(set(follower.errors))}")
    return parts[0] + ": " + "; ".join(parts[1:])


def drain_mailbox(machine: Container, zgent: str) -> list[dict]:
    """Every message waiting in NAME's mailbox, oldest first, read with arqon.recv."""
    messages = []
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(f"/proc/{machine.leader}/root/var/moo/{zgent}.sock")
        replies = sock.makefile("rb")
        while True:
            sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"arqon.recv"}\n')
            message = json.loads(replies.readline())["result"]
            if message is None:
                return messages
            messages.append(message)


def in_flight(load: MooLoad) -> list[tuple[int, str]]:
    """Socket requests that got no answer; each must be one the stopped or killed process had
    accepted (socat connected, then the connection closed unanswered), never a refusal."""
    failed = load.failed("ping")
    assert not [why for _, why in failed if why], failed   # socat printed nothing: no refusal
    return failed


def once_in_order(numbers: list[int]) -> tuple[list[int], int]:
    """``numbers`` without repeats, checked to be in order, and how many repeats there were:
    the one line arqond was handling when it was killed (handled, not yet taken out of the
    FIFO) comes twice, on the bus and in the mailbox (arqond-moo(7), inbox)."""
    once = list(dict.fromkeys(numbers))
    assert once == sorted(once), numbers
    return once, len(numbers) - len(once)


async def test_kill_9_and_restart_lose_no_inbox_line(container, tmp_path):
    ports = install(container, config=f"[moo]\\nmailbox_size = {HISTORY}\\n")
    await register_zgent(ports["ws"], "box")
    pid = container.wait_active("arqond.service")
    follower = InboxFollower(ports["ws"], "box")
    await asyncio.wait_for(follower.joined.wait(), scaled(30))

    # kill -9 under inbox writes and socket requests: systemd hands the FIFO's read end and
    # the listening socket to the next process, so writers never see a missing reader.
    load = MooLoad(container, "box", tmp_path / "kill", ping=True)
    await asyncio.sleep(1.0)
    container.sh(f"kill -9 {pid}")
    pid2 = container.wait_active("arqond.service", other_than=pid)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(load.finish)
    expected = {w: load.written(w) for w in ("long", "echo")}
    await follower.until_received(expected)
    print(report("kill -9", load, follower), f"unanswered {in_flight(load)}")
    assert container.show("arqond.service", "NRestarts")["NRestarts"] == "1"
    assert {"box-inbox", "box.sock"} <= set(container.fd_names(pid2))
    repeats = 0
    for writer in ("long", "echo"):
        assert load.failed(writer) == []
        # On the bus, in order and once. A line read from the FIFO in the last moment before
        # the kill, its stream record not yet stored, reaches the mailbox (journaled at
        # once) but not the box:inbox stream: at most the few lines of that one moment.
        got, repeated = once_in_order(follower.numbers(writer))
        repeats += repeated
        missing = sorted(set(expected[writer]) - set(got))
        assert not missing or (len(missing) <= 20 and missing[-1] - missing[0] < 20), \
            (writer, missing)
    assert repeats <= 1
    assert len(in_flight(load)) <= 1   # one requester: at most one request in flight
    # Unread, every line waits in box's mailbox, kept on disk while the process died.
    mailbox = drain_mailbox(container, "box")
    repeats = 0
    for writer in ("long", "echo"):
        kept, repeated = once_in_order([m["n"] for m in mailbox if m.get("w") == writer])
        assert kept == expected[writer], writer
        repeats += repeated
    assert repeats <= 1

    # systemctl restart under WebSocket connects, inbox writes and socket requests. On
    # systemd 252 a restart job keeps the fd store too (only a stop empties it).
    follower.lines.clear()
    follower.ids.clear()
    load = MooLoad(container, "box", tmp_path / "restart", ping=True)
    connects = Load(ports["ws"])
    await asyncio.sleep(1.0)
    await asyncio.to_thread(container.sh, "systemctl restart arqond.service")
    pid3 = container.wait_active("arqond.service", other_than=pid2)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(load.finish)
    await connects.stop()
    expected = {w: load.written(w) for w in ("long", "echo")}
    await follower.until_received(expected)
    await follower.stop()
    print(report("restart", load, follower), f"unanswered {in_flight(load)}; "
          f"{connects.served} connects, failures {connects.failures}")
    assert {"box-inbox", "box.sock"} <= set(container.fd_names(pid3))
    assert connects.failures == []
    for writer in ("long", "echo"):
        assert load.failed(writer) == []
        assert follower.numbers(writer) == expected[writer], writer
    assert len(in_flight(load)) <= 1
    mailbox = drain_mailbox(container, "box")
    for writer in ("long", "echo"):
        assert [m["n"] for m in mailbox if m.get("w") == writer] == expected[writer], writer


async def test_what_systemctl_stop_costs_on_systemd_252(container, tmp_path):
    """What systemd 252 does not keep: "systemctl stop" empties the fd store (systemd 254+
    keeps it with FileDescriptorStorePreserve=yes). The FIFO stays on disk, so an echo into
    it waits for the next start (unless it opened the FIFO just before arqond let go of it:
    that one gets EPIPE); a writer holding it open gets EPIPE; connects to NAME.sock
    are refused until the start. Lines written after arqond's last read sit in a pipe that
    no process holds for good: they survive only if some writer keeps it open until the
    next start. What arrives arrives in order, once."""
    ports = install(container, config=f"[moo]\\nmailbox_size = {HISTORY}\\n")
    await register_zgent(ports["ws"], "box")
    pid = container.wait_active("arqond.service")
    load = MooLoad(container, "box", tmp_path / "stop", ping=True)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(container.sh, "systemctl stop arqond.service")
    await asyncio.sleep(0.5)
    await asyncio.to_thread(container.sh, "systemctl start arqond.service")
    fresh = container.wait_active("arqond.service", other_than=pid)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(load.finish)
    mailbox = drain_mailbox(container, "box")
    got = {w: [m["n"] for m in mailbox if m.get("w") == w] for w in ("long", "echo")}
    print(f"stop/start: long wrote {len(load.written('long'))}, failed {load.failed('long')}, "
          f"received {len(got['long'])} ({ranges(got['long'])}); echo wrote "
          f"{len(load.written('echo'))}, received {len(got['echo'])} "
          f"({ranges(got['echo'])}); ping ok {len(load.written('ping'))}, failed "
          f"{len(load.failed('ping'))} {sorted({why[-40:] for _, why in load.failed('ping')})}")
    assert "box-inbox" not in container.fd_names(fresh)
    # At most the one echo that was between its open and its write when arqond stopped.
    assert len(load.failed("echo")) <= 1
    # The holder of the FIFO is told (EPIPE), reopens, and waits for the next start.
    assert load.failed("long") and {why for _, why in load.failed("long")} == {"Broken pipe"}
    for writer in ("long", "echo"):
        written = set(load.written(writer))
        assert got[writer] == sorted(set(got[writer])) and set(got[writer]) <= written
    # Refused while nothing listened, or cut while queued for the listener systemd closed
    # (socat then reads an end, or its write gets EPIPE, depending on which came first).
    assert all("refused" in why or why == "" or why.endswith("Broken pipe")
               for _, why in load.failed("ping"))
