"""Debian 12 containers with systemd as PID 1 (systemd-nspawn): the one harness of the system
tests (tests/test_system_nspawn.py, the source tree under a real systemd) and the package
tests (tests/test_packaging.py, the .deb on a fresh system).

One cache dir ($ARQOND_TEST_CACHE, default /var/cache/arqond-test) holds what is built once,
each under a name keyed by what it was built from, by one builder (``cached``):
- ``image()``: a minbase Debian root made with debootstrap (about a minute). Every container
  boots it read-only under a throw-away overlay (--volatile=overlay), so it stays fresh.
- ``source_deps()``: arqond's Python dependencies installed for the image's Python, which
  containers running the source tree get bind-mounted beside it (``source_binds``): the tree
  itself is never copied into the cache.
Each boot runs under `timeout` and in a private cgroup below the test's own: a service
manager started from a root cgroup would take over the host's processes
(reference/systemd-testing.md §3).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Callable

from tests.conftest import ROOT, scaled

CACHE_DIR = Path(os.environ.get("ARQOND_TEST_CACHE", "/var/cache/arqond-test"))
SUITE = "bookworm"
# What both kinds of test need: systemd and D-Bus to boot, Python for arqond, man-db for the
# package's pages, procps for the service manager's and the tests' process tools.
PACKAGES = ("systemd-sysv", "dbus", "python3", "man-db", "procps")
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_ROOT = Path("/sys/fs/cgroup")
BOOT_TIMEOUT = 60.0
CONTAINER_LIFETIME = 900   # seconds; `timeout` ends a container a crashed test left behind
SOURCE = "/opt/arqond/src"          # the source tree, inside a source container
PRIVATE_DIR = "/opt/arqond/lib"     # its dependencies, where the shipped launcher looks
_names = itertools.count(1)


class ContainerError(Exception):
    pass


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def cached(name: str, build: Callable[[Path], None]) -> Path:
    """CACHE_DIR/name, made by ``build(partial_dir)`` the first time. Builds take turns on a
    lock, and a half-built one is never used: it is renamed into place once complete."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    done = CACHE_DIR / name
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (done / ".complete").exists():
            partial = CACHE_DIR / f"{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            build(partial)
            (partial / ".complete").touch()
            shutil.rmtree(done, ignore_errors=True)
            partial.rename(done)
    return done


def _mirror() -> str:
    """The Debian mirror this machine is configured with, else Debian's own."""
    try:
        for line in Path("/etc/apt/sources.list.d/debian.sources").read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    except OSError:
        pass
    return "http://deb.debian.org/debian"


def _logged(command: list[str], log: Path, what: str, timeout: float,
            env: dict[str, str] | None = None) -> None:
    with open(log, "w") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                timeout=timeout)
    if result.returncode != 0:
        tail = log.read_text().splitlines()[-20:]
        raise ContainerError(f"{what} failed ({result.returncode}), see {log}:\n" +
                             "\n".join(tail))


def image() -> Path:
    """The cached Debian root every container boots."""
    def debootstrap(partial: Path) -> None:
        _logged(["timeout", "900", "debootstrap", "--variant=minbase",
                 "--include=" + ",".join(PACKAGES), SUITE, str(partial), _mirror()],
                CACHE_DIR / "debootstrap.log", "debootstrap", scaled(960),
                env={"PATH": DEBIAN_PATH})   # Debian's tools, not another python3 on PATH
    return cached(f"{SUITE}-{_key(SUITE, *PACKAGES)}", debootstrap)


def source_deps() -> Path:
    """arqond's dependencies (pyproject.toml's), installed for Python 3.11 as `make install`
    installs them for a package; an empty ``arqond`` dir is where the source tree's package
    is mounted."""
    with open(ROOT / "pyproject.toml", "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]

    def install(partial: Path) -> None:
        _logged([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
                 "--target", str(partial), *dependencies],
                CACHE_DIR / "pip.log", "pip install of arqond's dependencies", scaled(600))
        shutil.rmtree(partial / "bin", ignore_errors=True)
        (partial / "arqond").mkdir()
    return cached(f"deps-py{sys.version_info[0]}{sys.version_info[1]}-"
                  f"{_key(*dependencies)}", install)


def source_binds() -> dict[Path, str]:
    """Read-only mounts that let packaging/launcher.in run the source tree: the tree at
    SOURCE, the dependencies at PRIVATE_DIR, and the tree's arqond package inside them."""
    return {ROOT: SOURCE, source_deps(): PRIVATE_DIR, ROOT / "arqond": f"{PRIVATE_DIR}/arqond"}


# The hierarchies a service manager in the container touches (the reference's tested set).
MANAGED_HIERARCHIES = {"name=systemd", "", "cpu", "pids", "memory"}


def _cgroup_dirs(name: str) -> list[Path]:
    """A cgroup ``name`` below this process's own, in each hierarchy systemd manages."""
    dirs = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if not MANAGED_HIERARCHIES & set(controllers.split(",")):
            continue
        if controllers == "":
            base = CGROUP_ROOT / "unified" if (CGROUP_ROOT / "unified").is_dir() else CGROUP_ROOT
        else:
            base = CGROUP_ROOT / controllers.removeprefix("name=")
        parent = base / path.lstrip("/")
        if (parent / "cgroup.procs").exists():
            dirs.append(parent / name)
    return dirs


def _remove_cgroup(path: Path, patience: float = 10.0) -> None:
    """Remove a cgroup and the ones nspawn made in it, once their last processes are gone."""
    deadline = time.monotonic() + scaled(patience)
    while True:
        try:
            for sub in sorted((p for p in path.rglob("*") if p.is_dir()),
                              key=lambda p: -len(p.parts)):
                sub.rmdir()
            path.rmdir()
            return
        except OSError:  # EBUSY while exiting processes still belong to it
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class Container:
    """One container of ``root`` with read-only ``binds`` {host path: path inside}; on a
    private network unless ``private_network`` is False (then it shares the host's loopback,
    and so its ports)."""

    def __init__(self, root: Path, binds: dict[Path, str], *,
                 private_network: bool = True) -> None:
        self.root = root
        self.binds = binds
        self.private_network = private_network
        self.name = f"arqond-test-{os.getpid()}-{next(_names)}"
        self.cgroups = _cgroup_dirs(self.name)
        self.proc: subprocess.Popen[bytes] | None = None
        self.errors = tempfile.TemporaryFile()  # nspawn's stderr: a pipe nobody reads fills up
        self.leader = 0
        self.state = ""

    def _nspawn(self, *args: str, **popen) -> subprocess.Popen:
        """systemd-nspawn on a throw-away overlay of the root, started in the private cgroup."""
        for path in self.cgroups:
            path.mkdir(exist_ok=True)
        # Never start nspawn where the move failed: it would run from the root cgroup.
        join = "".join(f'echo $$ > "{path}/cgroup.procs" || exit 125; ' for path in self.cgroups)
        command = ["timeout", "--kill-after=10", str(scaled(CONTAINER_LIFETIME)),
                   "systemd-nspawn", "-D", str(self.root), "--volatile=overlay",
                   "--register=no", "--keep-unit", "-M", self.name, "-q"]
        if self.private_network:
            command.append("--private-network")
        command += [f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()]
        return subprocess.Popen(["sh", "-c", join + 'exec "$@"', "sh", *command, *args],
                                stdin=subprocess.DEVNULL, start_new_session=True, **popen)

    def run_unbooted(self, script: str) -> subprocess.CompletedProcess:
        """Run a shell script in the root with no service manager, as an image build would."""
        proc = self._nspawn("--pipe", "/bin/sh", "-c", script, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=scaled(CONTAINER_LIFETIME))
            return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the session this test started
                proc.wait()
            self._remove_cgroups()

    def boot(self) -> "Container":
        """Boot with systemd as PID 1 and wait until it is up; ``state`` is what
        `systemctl is-system-running` said (running, or degraded if a unit failed)."""
        self.proc = self._nspawn("--console=passive", "-b", stdout=subprocess.DEVNULL,
                                 stderr=self.errors)
        deadline = time.monotonic() + scaled(BOOT_TIMEOUT)
        while not self.leader:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.errors.seek(0)
                raise ContainerError(f"nspawn did not boot: {self.errors.read()!r}")
            self.leader = self._find_init()
            time.sleep(0.05)
        while not Path(f"/proc/{self.leader}/root/run/systemd/private").exists():
            if time.monotonic() > deadline:
                raise ContainerError("systemd in the container never opened its bus")
            time.sleep(0.05)
        state = self.run("systemctl", "is-system-running", "--wait", check=False,
                         timeout=BOOT_TIMEOUT)
        self.state = state.stdout.strip()
        if self.state not in ("running", "degraded"):
            raise ContainerError(f"container did not come up: {state.stdout}{state.stderr}")
        return self

    def _find_init(self) -> int:
        """The container's systemd: a descendant of nspawn, itself named systemd."""
        pending = [self.proc.pid]
        while pending:
            pid = pending.pop()
            try:
                if pid != self.proc.pid and Path(f"/proc/{pid}/comm").read_text().strip() \
                        == "systemd":
                    return pid
            except OSError:
                continue
            pending.extend(_children(pid))
        return 0

    def run(self, *command: str, check: bool = True, timeout: float = 120.0,
            user: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
        """``command`` in the booted container, with a clean environment."""
        if user:
            command = ("runuser", "-u", user, "--", *command)
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "env", "-i", f"PATH={DEBIAN_PATH}",
             "LANG=C.UTF-8", "MANPAGER=cat", "MANWIDTH=80", *command],
            input=stdin, capture_output=True, text=True, timeout=scaled(timeout))
        if check and result.returncode != 0:
            raise ContainerError(f"{' '.join(command)} exited {result.returncode}:\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    def sh(self, script: str, check: bool = True) -> str:
        """A shell script in the booted container; its output."""
        return self.run("sh", "-c", script, check=check, timeout=60).stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_active(self, unit: str, other_than: str = "", timeout: float = 30.0) -> str:
        """Wait until ``unit`` runs with a main pid other than ``other_than``; return it."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            state = self.show(unit, "ActiveState", "SubState", "MainPID")
            if state["SubState"] == "running" and state["MainPID"] not in ("0", other_than):
                return state["MainPID"]
            assert time.monotonic() < deadline, f"{unit} not running again: {state}"
            time.sleep(0.05)

    def fd_names(self, pid: str) -> list[str]:
        """LISTEN_FDNAMES as systemd passed it to process ``pid`` (arqond unsets its own copy,
        but /proc/PID/environ keeps the environment the process started with)."""
        env = self.sh(f"cat /proc/{pid}/environ").split("\0")
        return next(v for k, _, v in (e.partition("=") for e in env)
                    if k == "LISTEN_FDNAMES").split(":")

    def journal(self, unit: str) -> list[dict]:
        out = self.sh(f"journalctl -u {unit} -o json --no-pager")
        return [json.loads(line) for line in out.splitlines()]

    def shutdown(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # timeout passes it on; nspawn powers off
            try:
                self.proc.wait(timeout=scaled(30))
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the session this test started
                self.proc.wait()
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        for path in self.cgroups:
            if path.exists():
                _remove_cgroup(path)
