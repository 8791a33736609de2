"""A Debian 12 root booted with systemd as PID 1 in systemd-nspawn, for tests of what ships.

The root is made once with debootstrap and cached (CACHE_DIR); each boot uses it read-only
with a throw-away overlay (--volatile=overlay), its own network namespace (so ports never
clash with the host or other tests), and runs in a private cgroup: a service manager started
from the root cgroup would take over the host's processes (reference/systemd-testing.md §3).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

CACHE_DIR = Path(os.environ.get("ARQOND_TEST_CACHE", "/var/cache/arqond-pkgtest"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("systemd-sysv", "dbus", "python3", "man-db")
CGROUP_ROOT = Path("/sys/fs/cgroup")
BOOT_TIMEOUT = 60.0
CONTAINER_LIFETIME = 600  # seconds; `timeout` ends a container a crashed test left behind


class ContainerError(Exception):
    pass


def debian_root() -> Path:
    """The cached minimal Debian root, made on first use (about a minute)."""
    key = hashlib.sha256(" ".join((SUITE, MIRROR) + PACKAGES).encode()).hexdigest()[:12]
    root = CACHE_DIR / f"{SUITE}-{key}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one debootstrap at a time
        if not (root / ".complete").exists():
            partial = root.with_suffix(".partial")
            shutil.rmtree(partial, ignore_errors=True)
            with open(CACHE_DIR / "debootstrap.log", "w") as log:
                subprocess.run(["timeout", "900", "debootstrap", "--variant=minbase",
                                "--include=" + ",".join(PACKAGES), SUITE, str(partial), MIRROR],
                               stdout=log, stderr=subprocess.STDOUT, check=True,
                               env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
            (partial / ".complete").touch()
            shutil.rmtree(root, ignore_errors=True)
            partial.rename(root)
    return root


def cgroup_dirs(name: str) -> list[Path]:
    if (CGROUP_ROOT / "cgroup.procs").exists():  # unified hierarchy only
        return [CGROUP_ROOT / name]
    return [hierarchy / name for hierarchy in sorted(CGROUP_ROOT.iterdir())
            if (hierarchy / "cgroup.procs").exists()]


def remove_cgroup(path: Path, patience: float = 10.0) -> None:
    """Remove a cgroup and the ones nspawn made in it, once their last processes are gone."""
    deadline = time.monotonic() + patience
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


def children(pid: int) -> list[int]:
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
    """One booted container; ``run`` executes a command inside it with nsenter."""

    def __init__(self, root: Path, binds: dict[Path, str]) -> None:
        self.root = root
        self.binds = binds
        self.name = f"arqond-pkgtest-{os.getpid()}"
        self.cgroups = cgroup_dirs(self.name)
        self.proc: subprocess.Popen[bytes] | None = None
        self.errors = tempfile.TemporaryFile()  # nspawn's stderr: a pipe nobody reads fills up
        self.leader = 0

    def _nspawn(self, *args: str, **popen) -> subprocess.Popen:
        """systemd-nspawn on a throw-away overlay of the root, started in the private cgroup."""
        for path in self.cgroups:
            path.mkdir(exist_ok=True)
        join = "".join(f'echo $$ > "{path}/cgroup.procs"; ' for path in self.cgroups)
        command = ["timeout", "--kill-after=10", str(CONTAINER_LIFETIME), "systemd-nspawn",
                   "-D", str(self.root), "--volatile=overlay", "--register=no",
                   "--keep-unit", "--private-network", "-M", self.name, "-q"]
        command += [f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()]
        return subprocess.Popen(["sh", "-c", join + 'exec "$@"', "sh", *command, *args],
                                stdin=subprocess.DEVNULL, start_new_session=True, **popen)

    def run_unbooted(self, script: str) -> subprocess.CompletedProcess:
        """Run a shell script in the root with no service manager, as an image build would."""
        proc = self._nspawn("--pipe", "/bin/sh", "-c", script, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=CONTAINER_LIFETIME)
            return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the session this test started
                proc.wait()
            self._remove_cgroups()

    def boot(self) -> "Container":
        self.proc = self._nspawn("--console=passive", "-b", stdout=subprocess.DEVNULL,
                                 stderr=self.errors)
        deadline = time.monotonic() + BOOT_TIMEOUT
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
        if state.stdout.strip() not in ("running", "degraded"):
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
            pending.extend(children(pid))
        return 0

    def run(self, *command: str, check: bool = True, timeout: float = 120.0,
            user: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
        if user:
            command = ("runuser", "-u", user, "--", *command)
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "env", "-i",
             "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "MANPAGER=cat",
             "MANWIDTH=80", *command],
            input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ContainerError(f"{' '.join(command)} exited {result.returncode}:\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    def shutdown(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # timeout passes it on; nspawn powers off
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the session this test started
                self.proc.wait()
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        for path in self.cgroups:
            if path.exists():
                remove_cgroup(path)
