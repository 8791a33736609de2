"""What ships: `make deb` and `make rpm` build clean packages with the same files, and the .deb
installs, serves, renders its man pages and purges cleanly on a fresh Debian 12 booted with
systemd as PID 1 (tests/nspawn.py, on a private network). Both packages are built once for
the whole module."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.nspawn import Container, image

DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = ("dpkg-buildpackage", "rpmbuild", "lintian", "debootstrap", "systemd-nspawn",
         "nsenter")
PKG = "/opt/arqond-pkg"  # where the container sees the built packages

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="building and booting packages needs root"),
    pytest.mark.skipif(any(shutil.which(t, path=DEBIAN_PATH) is None for t in TOOLS),
                       reason=f"needs {', '.join(TOOLS)} (make system-deps)"),
    pytest.mark.timeout(600),
]

# Installed on both, relative to /; units differ in their directory only.
SHIPPED = ["usr/bin/arqond", "usr/bin/arqon", "usr/lib/arqond/arqond/app.py",
           "usr/lib/arqond/arqonbus/sdk/client.py", "usr/lib/arqond/arqonbus/protocol/ids.py",
           "usr/lib/arqond/websockets/__init__.py", "usr/lib/arqond/orjson/__init__.py",
           "usr/lib/sysusers.d/arqond.conf", "usr/lib/tmpfiles.d/arqond.conf",
           "etc/arqond/arqond.toml", "etc/logrotate.d/arqond",
           "usr/share/man/man1/arqon.1.gz", "usr/share/man/man5/arqond.conf.5.gz",
           "usr/share/man/man7/arqond-moo.7.gz", "usr/share/man/man8/arqond.8.gz",
           "usr/share/bash-completion/completions/arqon",
           "usr/share/doc/arqond/examples/dreader-handler.sh"]
# zsh reads vendor completion from here on Debian, from site-functions on RPM distributions.
ZSH_COMPLETION = {"deb": "usr/share/zsh/vendor-completions/_arqon",
                  "rpm": "usr/share/zsh/site-functions/_arqon"}
# Persistent dirs from tmpfiles.d (path, octal mode, user, group): both packages make them so.
TMPFILES_DIRS = [(f[1], int(f[2], 8), f[3], f[4]) for f in (
    line.split() for line in (ROOT / "systemd/tmpfiles.d/arqond.conf").read_text().splitlines())
    if f and f[0] == "d" and not f[1].startswith("/run/")]
# Users and groups sysusers.d creates: ("u"|"g", name).
SYSUSERS = [(f[0], f[1]) for f in (line.split() for line in (
    ROOT / "systemd/sysusers.d/arqond.conf").read_text().splitlines()) if f and f[0] in "ug"]
UNITS = sorted(p.name for p in (ROOT / "systemd").iterdir() if p.suffix in (".socket",
                                                                             ".service"))


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("packages")
    build = subprocess.run(["make", "-C", str(ROOT), "deb", "rpm", f"PACKAGE_DIR={out}/build",
                            f"DIST_DIR={out}/dist"], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    debs = list((out / "dist").glob("arqond_*.deb"))
    rpms = list((out / "dist").glob("*/arqond-*.rpm"))
    assert len(debs) == 1 and len(rpms) == 1, (debs, rpms)
    return {"deb": debs[0], "rpm": rpms[0], "dir": out / "dist"}


def deb_files(deb: Path) -> set[str]:
    """Paths of the files (not directories) in the .deb, relative to /."""
    listing = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                             check=True).stdout
    names = subprocess.run(["tar", "-t"], input=listing, capture_output=True,
                           check=True).stdout.decode().split()
    return {name.removeprefix("./") for name in names if not name.endswith("/")}


def rpm_query(rpm: Path, *args: str) -> str:
    return subprocess.run(["rpm", "-qp", *args, str(rpm)], capture_output=True, text=True,
                          check=True).stdout


def rpm_files(rpm: Path) -> set[str]:
    """Paths of the files (not directories) in the .rpm, relative to /."""
    listing = rpm_query(rpm, "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]")
    return {line.split(" ", 1)[1].lstrip("/") for line in listing.splitlines()
            if not line.startswith("d")}


def comparable(files: set[str]) -> set[str]:
    """Files both packages must share: units normalised, build ids and docs left out."""
    out = set()
    for name in files:
        name = re.sub(r"^(usr/)?lib/systemd/system/", "UNITDIR/", name)
        name = re.sub(r"^usr/share/zsh/(vendor-completions|site-functions)/", "ZSHCOMPDIR/",
                      name)
        # Debian 12's systemd (252) has no use for drop-ins that need systemd 254.
        if not name.startswith(("usr/lib/.build-id", "usr/share/doc", "UNITDIR/arqond.service.d/"
                                )) and "__pycache__" not in name \
                and not name.startswith("usr/share/python3"):
            out.add(name)
    return out


def test_deb_holds_every_shipped_file_and_no_build_leftovers(packages):
    files = deb_files(packages["deb"])
    expected = SHIPPED + [ZSH_COMPLETION["deb"]] + [f"lib/systemd/system/{unit}"
                                                    for unit in UNITS]
    assert not [f for f in expected if f not in files], sorted(files)
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert "usr/lib/arqond/bin" not in files  # pip's own launchers would use the build python
    control = subprocess.run(["dpkg-deb", "-f", str(packages["deb"]), "Depends"],
                             capture_output=True, text=True, check=True).stdout
    assert "python3 (<< 3.12)" in control and "systemd" in control
    conffiles = subprocess.run(["dpkg-deb", "-I", str(packages["deb"]), "conffiles"],
                               capture_output=True, text=True, check=True).stdout.split()
    assert conffiles == ["/etc/arqond/arqond.toml", "/etc/logrotate.d/arqond"]


def test_deb_launcher_uses_the_system_python_and_the_private_dir(packages, tmp_path):
    subprocess.run(["dpkg-deb", "-x", str(packages["deb"]), str(tmp_path)], check=True)
    launcher = (tmp_path / "usr/bin/arqond").read_text()
    assert launcher.startswith("#!/usr/bin/python3 -I\n")
    assert 'sys.path.insert(0, "/usr/lib/arqond")' in launcher


def test_lintian_reports_no_errors(packages):
    result = subprocess.run(["lintian", "--fail-on", "error", str(packages["deb"])],
                            capture_output=True, text=True, env={"PATH": DEBIAN_PATH})
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert result.returncode == 0 and not errors, result.stdout + result.stderr


def test_rpm_holds_the_same_files_as_the_deb(packages):
    rpm = rpm_files(packages["rpm"])
    expected = SHIPPED + [ZSH_COMPLETION["rpm"]] + [f"usr/lib/systemd/system/{unit}"
                                                    for unit in UNITS]
    assert not [f for f in expected if f not in rpm], sorted(rpm)
    only_deb = comparable(deb_files(packages["deb"])) - comparable(rpm)
    only_rpm = comparable(rpm) - comparable(deb_files(packages["deb"]))
    assert only_deb == only_rpm == set(), (only_deb, only_rpm)
    owned = rpm_query(packages["rpm"], "--qf", "[%{FILEMODES:octal} %{FILEUSERNAME} "
                      "%{FILEGROUPNAME} %{FILENAMES}\n]").splitlines()
    for path, mode, user, group in TMPFILES_DIRS:  # owned as tmpfiles.d makes them
        assert f"{0o40000 | mode:o} {user} {group} {path}" in owned, (path, owned)


def test_rpm_scriptlets_and_dependencies(packages):
    scripts = rpm_query(packages["rpm"], "--scripts")
    for step in ("systemd-sysusers --replace=/usr/lib/sysusers.d/arqond.conf",
                 "g zgents", "systemd-tmpfiles --create /usr/lib/tmpfiles.d/arqond.conf",
                 'systemctl --no-reload preset "${unit##*/}"', "/arqond*.socket",
                 'systemctl --no-reload disable --now "${unit##*/}"',
                 "systemctl try-restart arqond.service"):
        assert step in scripts, step
    requires = rpm_query(packages["rpm"], "-R")
    assert re.search(r"^python\(abi\) = 3\.\d+$", requires, re.M), requires
    provides = rpm_query(packages["rpm"], "--provides")
    assert "websockets" not in provides and "orjson" not in provides  # vendored, not offered
    config = rpm_query(packages["rpm"], "-c").split()
    assert config == ["/etc/arqond/arqond.toml", "/etc/logrotate.d/arqond"]


@pytest.mark.skipif(shutil.which("rpmlint") is None, reason="rpmlint is not installed")
def test_rpmlint_reports_no_errors(packages):
    result = subprocess.run(["rpmlint", "-r", str(ROOT / "packaging/rpm/arqond.rpmlintrc"),
                             str(packages["rpm"])], capture_output=True, text=True)
    assert result.returncode == 0 and " 0 errors" in result.stdout, result.stdout


# ---- the .deb on a booted Debian 12 --------------------------------------------------------

# Paths that change on any running system, whatever is installed.
VOLATILE = re.compile(r"^/(proc|sys|dev|run|tmp|var/tmp|var/log/journal|var/cache/man"
                      r"|var/lib/systemd/(catalog|random-seed|timers|coredump))(/|$)")
SNAPSHOT = ("find / -xdev -path /proc -prune -o -path /sys -prune -o -path /dev -prune"
            " -o -print")

WS_CLIENT = r"""
import json, sys, time
sys.path.insert(0, "/usr/lib/arqond")
from websockets.sync.client import connect
deadline = time.monotonic() + 20
while True:
    try:
        ws = connect("ws://127.0.0.1:9100/", open_timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
welcome = json.loads(ws.recv(timeout=5))
ws.send(json.dumps({"id": "r1", "type": "command", "command": "ping"}))
reply = json.loads(ws.recv(timeout=5))
print(json.dumps({"welcome": welcome, "reply": reply}))
"""


def test_install_without_a_running_systemd_enables_the_socket_and_starts_nothing(packages):
    """As in an image build (chroot, debootstrap, docker): user, group, dirs and the enable
    link are made; no service manager is asked to start anything."""
    container = Container(image(), {packages["dir"]: PKG})
    dirs = " ".join(path for path, *_ in TMPFILES_DIRS)
    result = container.run_unbooted(
        f"dpkg -i {PKG}/{packages['deb'].name} >&2 && id -Gn arqond | grep -ow zgents && "
        "readlink /etc/systemd/system/sockets.target.wants/arqond.socket && "
        f"stat -c '%n %a %U %G' {dirs} && "
        "if [ -e /run/arqond/control.sock ]; then echo started; else echo not started; fi")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "zgents", "/lib/systemd/system/arqond.socket",
        *(f"{path} {mode:o} {user} {group}" for path, mode, user, group in TMPFILES_DIRS),
        "not started"], result.stdout + result.stderr


def snapshot(container: Container) -> set[str]:
    paths = container.run("sh", "-c", SNAPSHOT).stdout.splitlines()
    return {p for p in paths if not VOLATILE.match(p)}


@pytest.fixture(scope="module")
def system(packages):
    """A booted Debian 12 with the .deb installed; yields (container, paths before)."""
    container = Container(image(), {packages["dir"]: PKG})
    try:
        container.boot()
        # Test users exist before the snapshot: useradd leaves /etc/*- backups behind.
        container.run("useradd", "-m", "alice")
        container.run("useradd", "-m", "bob")
        before = snapshot(container)
        container.run("sh", "-c", f"dpkg -i {PKG}/{packages['deb'].name}")
        yield container, before
    finally:
        container.shutdown()


def test_install_creates_user_group_and_dirs_and_enables_the_socket(system):
    container, _ = system
    assert "zgents" in container.run("id", "-Gn", "arqond").stdout.split()
    for socket in (unit for unit in UNITS if unit.endswith(".socket")):
        assert container.run("systemctl", "is-enabled", socket).stdout.strip() == "enabled"
    assert TMPFILES_DIRS
    for path, mode, user, group in TMPFILES_DIRS:
        shown = container.run("stat", "-c", "%a %U %G", path).stdout.split()
        assert shown == [f"{mode:o}", user, group], (path, shown)


def test_started_socket_serves_a_websocket_client(system):
    container, _ = system
    container.run("systemctl", "start", "arqond.socket")
    result = json.loads(container.run("python3", "-I", "-", stdin=WS_CLIENT).stdout)
    assert result["welcome"]["payload"]["welcome"] == "Connected to ArqonBus"
    assert result["welcome"]["payload"]["client_id"].startswith("arq_client_")
    assert result["reply"]["type"] == "response" and result["reply"]["request_id"] == "r1"
    assert result["reply"]["status"] == "success", result["reply"]
    assert result["reply"]["payload"]["data"]["pong"] is True
    assert container.run("systemctl", "is-active", "arqond.service").stdout.strip() == "active"
    pid = container.run("systemctl", "show", "-P", "MainPID", "arqond.service").stdout.strip()
    assert container.run("stat", "-c", "%U %G", f"/proc/{pid}").stdout.split() == \
        ["arqond", "zgents"]


def test_zgents_member_writes_an_inbox_and_others_cannot(system):
    container, _ = system
    container.run("usermod", "-aG", "zgents", "alice")
    container.run("arqon", "zgent", "register", "demo")
    write = "echo '{\"hello\":\"moo\"}' > /var/moo/demo-inbox"
    container.run("timeout", "5", "sh", "-c", write, user="alice")
    refused = container.run("timeout", "5", "sh", "-c", write, user="bob", check=False)
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    message = json.loads(container.run("arqon", "recv", "demo", "--wait", "5").stdout)
    assert message.get("hello") == "moo" or message.get("payload", {}).get("hello") == "moo"


MOO_MEMBERS = "(allowed: members of the MOO group (moo.group) and admins)"
JOIN_ZGENTS = "(members of group zgents may: sudo usermod -aG zgents $USER)"


def test_with_the_packaged_modes_a_member_owns_only_what_she_makes(system):
    """mallory is in zgents, eve is not; root registered dreader. The tmpfiles.d modes and the
    CLI's door (the bus socket, as neither may use the control socket) under systemd."""
    container, _ = system
    # No home dirs (-M): the purge test finds nothing left that was not there before.
    for user in ("mallory", "eve"):
        container.run("useradd", "-M", user)
    container.run("usermod", "-aG", "zgents", "mallory")
    container.run("arqon", "zgent", "register", "dreader")
    shown = container.sh("stat -c '%n %a %U %G' /var/moo /var/log/moo /var/moo/dreader.sock "
                         "/var/moo/dreader-inbox /var/moo/registry.json").splitlines()
    assert shown == ["/var/moo 2755 arqond zgents", "/var/log/moo 3775 arqond zgents",
                     "/var/moo/dreader.sock 660 arqond zgents",
                     "/var/moo/dreader-inbox 660 arqond zgents",
                     "/var/moo/registry.json 644 arqond zgents"]

    def as_(user: str, *command: str):
        return container.run("timeout", "20", *command, user=user, check=False)

    mine = as_("mallory", "arqon", "zgent", "register", "mine")
    assert (mine.returncode, mine.stderr) == (0, ""), mine.stderr
    assert json.loads(mine.stdout)["inbox"] == "/var/moo/mine-inbox"
    narrative = "/var/log/moo/mine-narrative.jsonl"
    line = '{"ts":"2026-02-12T14:30:00Z","from":"mine","type":"narrative","content":"hi"}'
    assert as_("mallory", "sh", "-c", f"echo '{line}' >> {narrative}").returncode == 0
    tail = as_("mallory", "timeout", "--preserve-status", "-s", "INT", "5", "arqon", "tail",
               "--moo", "mine")
    assert (tail.returncode, tail.stdout) == (0, "[14:30:00] hi\n"), tail.stderr
    for path in ("/var/moo/dreader.sock", "/var/moo/registry.json"):
        removed = as_("mallory", "rm", "-f", path)
        assert (removed.returncode, removed.stderr) == (
            1, f"rm: cannot remove '{path}': Permission denied\n")
    taken = as_("mallory", "python3", "-c", "import socket; socket.socket(socket.AF_UNIX)"
                ".bind('/var/moo/dreader2.sock')")
    assert taken.returncode == 1 and "PermissionError" in taken.stderr
    unregister = as_("mallory", "arqon", "zgent", "unregister", "dreader")
    assert (unregister.returncode, unregister.stderr) == (1, (
        "arqon: zgent.unregister: not allowed to manage Zgent dreader (allowed: the owners of "
        "dreader: who registered it, its uids and groups; and admins) (AUTHORIZATION_ERROR)\n"))
    evil = as_("eve", "arqon", "zgent", "register", "evil")
    assert (evil.returncode, evil.stderr) == (1, (
        f"arqon: zgent.register: not allowed to register a Zgent {MOO_MEMBERS} "
        "(AUTHORIZATION_ERROR)\n"))
    send = as_("eve", "arqon", "send-to", "dreader", '{"from": "eve"}')
    assert (send.returncode, send.stderr) == (1, (
        f"arqon: cannot write to /var/moo/dreader-inbox: Permission denied {JOIN_ZGENTS}\n"))
    # Nothing of that changed anything: dreader and its files are there, its inbox empty.
    registry = json.loads(container.run("cat", "/var/moo/registry.json").stdout)["zgents"]
    assert {"dreader", "mine"} <= set(registry) and "evil" not in registry
    listing = set(container.sh("ls /var/moo").split())
    assert {"dreader-inbox", "dreader.sock", "mine-inbox", "mine.sock", "registry.json"} <= \
        listing and not listing & {"evil-inbox", "evil.sock", "dreader2.sock"}
    assert container.run("arqon", "recv", "dreader", check=False).stderr == \
        "arqon: no message for dreader\n"
    # Her log is hers to remove (the purge keeps what Zgents wrote; this one goes now).
    assert as_("mallory", "rm", narrative).returncode == 0


def test_man_pages_render_in_the_installed_system(system):
    container, _ = system
    for page, title in (("arqond", "ARQOND(8)"), ("arqond.conf", "ARQOND.CONF(5)"),
                        ("arqon", "ARQON(1)"), ("arqond-moo", "ARQOND-MOO(7)")):
        shown = container.run("man", page)
        assert shown.stdout.startswith(title) and "\nNAME\n" in shown.stdout, shown.stdout[:200]
    assert "server.port (integer, default 9100)" in container.run("man", "arqond.conf").stdout


def test_purge_stops_arqond_and_leaves_nothing_behind(system):
    container, before = system
    container.run("dpkg", "--purge", "arqond")
    # A template (arqon-serve@.service) has no state of its own: systemctl refuses its name.
    units = [unit for unit in UNITS if "@." not in unit]
    states = container.run("systemctl", "is-active", *units, check=False).stdout.split()
    assert states == ["inactive"] * len(units), dict(zip(units, states))
    # No process runs arqond any more ("[d]" keeps grep from finding its own command line).
    running = container.run("sh", "-c", "grep -ls '/usr/bin/arqon[d]' /proc/[0-9]*/cmdline",
                            check=False)
    assert running.stdout == "", running.stdout
    for kind, name in SYSUSERS:  # a user's own group goes with it
        for database in ("passwd", "group") if kind == "u" else ("group",):
            assert container.run("getent", database, name, check=False).returncode == 2, name
    left = sorted(snapshot(container) - before)
    assert left == [], left
