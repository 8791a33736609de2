"""The shipped systemd units, catalog, sysusers.d and tmpfiles.d, checked by systemd's own tools."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from arqond.log import MESSAGE_IDS
from tests.conftest import scaled

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
UNIT_NAMES = ["arqond.service", "arqond.socket", "arqond-telemetry.socket",
              "arqond-http.socket", "arqond-control.socket"]
MAX_EXPOSURE = 2.0
# arqon-serve@.service runs any handler a user writes, so it leaves the network and system
# calls open (its comments say why).
SERVE_MAX_EXPOSURE = 4.0


def unit_options(name: str) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            options.setdefault(key, []).append(value)
    return options


@pytest.fixture
def unit_root(tmp_path):
    """A root for ``systemd-analyze verify --root``: the host's stock units (for sysinit.target
    and friends), arqond's units, and stand-ins for the binaries the units run."""
    root = tmp_path / "root"
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name in UNIT_NAMES:
        shutil.copy(UNITS / name, root / "etc/systemd/system" / name)
    for binary in ("usr/bin/arqond", "bin/kill"):
        (root / binary).parent.mkdir(parents=True, exist_ok=True)
        (root / binary).write_text("#!/bin/sh\n")
        (root / binary).chmod(0o755)
    return root


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}",
                           *UNIT_NAMES], capture_output=True, text=True, timeout=scaled(60))


def test_units_verify_clean(unit_root):
    result = verify(unit_root)
    # Unknown keys are only warnings (rc 0), so any output at all counts as unclean.
    assert result.returncode == 0 and result.stdout + result.stderr == "", result


def test_verify_catches_a_missing_executable(unit_root):
    (unit_root / "usr/bin/arqond").unlink()
    result = verify(unit_root)
    assert result.returncode != 0
    assert "/usr/bin/arqond" in result.stderr


def test_service_exposure_within_bound():
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                             str(UNITS / "arqond.service")],
                            capture_output=True, text=True, timeout=scaled(60))
    match = re.search(r"Overall exposure level for arqond.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_every_open_hardening_item_is_explained():
    """Each item systemd-analyze still marks as open is named in a comment of the unit."""
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--json=short",
                             str(UNITS / "arqond.service")],
                            capture_output=True, text=True, timeout=scaled(60))
    items = json.loads(result.stdout)
    text = (UNITS / "arqond.service").read_text()
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    open_items = {item["name"] for item in items if item.get("exposure")}
    assert open_items, "nothing open at all: the check would prove nothing"
    for name in open_items:
        stem = re.split(r"[=~/]", name)[0]
        assert stem in comments, f"{name} is left open without a comment saying why"


def test_socket_units_name_each_listener():
    names = {}
    for unit in UNIT_NAMES[1:]:
        options = unit_options(unit)
        assert options["Service"] == ["arqond.service"], unit
        assert len(options["ListenStream"]) == 1, unit
        names[options["FileDescriptorName"][0]] = options["ListenStream"][0]
    assert names == {"ws": "127.0.0.1:9100", "telemetry": "127.0.0.1:9101",
                     "http": "127.0.0.1:8080", "control": "/run/arqond/control.sock"}
    service = unit_options("arqond.service")
    assert service["Sockets"][0].split() == UNIT_NAMES[1:]
    for key, value in {"Type": "notify", "User": "arqond", "Group": "zgents",
                       "Restart": "on-failure", "ExecStartPre": "/usr/bin/arqond --check-config",
                       "ExecReload": "/bin/kill -HUP $MAINPID"}.items():
        assert service[key] == [value], key
    assert int(service["FileDescriptorStoreMax"][0]) > 0
    assert service["WatchdogSec"] and service["RuntimeDirectory"] and service["StateDirectory"]


def test_catalog_has_an_entry_for_every_message_id(tmp_path):
    catalog_dir = tmp_path / "usr/lib/systemd/catalog"
    catalog_dir.mkdir(parents=True)
    shutil.copy(UNITS / "arqond.catalog", catalog_dir)
    subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], check=True,
                   timeout=scaled(60))
    listed = subprocess.run(["journalctl", f"--root={tmp_path}", "--list-catalog"],
                            capture_output=True, text=True, check=True, timeout=scaled(60)).stdout
    ids = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert ids == set(MESSAGE_IDS.values())


def test_sysusers_and_tmpfiles(tmp_path):
    """systemd-sysusers and systemd-tmpfiles apply the files to a scratch root."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / name).write_text("root:x:0:0:root:/root:/bin/sh\n" if name == "passwd"
                                        else "root:x:0:\n" if name == "group"
                                        else "root:*::\n" if name == "gshadow"
                                        else "root:*:19000:0:99999:7:::\n")
    subprocess.run(["systemd-sysusers", f"--root={root}",
                    str(UNITS / "sysusers.d/arqond.conf")], check=True, timeout=scaled(60))
    group = (root / "etc/group").read_text()
    passwd = (root / "etc/passwd").read_text()
    arqond = next(line for line in passwd.splitlines() if line.startswith("arqond:"))
    zgents = next(line for line in group.splitlines() if line.startswith("zgents:"))
    assert zgents.split(":")[3] == "arqond"
    assert arqond.split(":")[6] == "/usr/sbin/nologin"
    uid, gid = int(arqond.split(":")[2]), int(zgents.split(":")[2])
    subprocess.run(["systemd-tmpfiles", "--create", f"--root={root}",
                    str(UNITS / "tmpfiles.d/arqond.conf")], check=True, timeout=scaled(60))
    for path, mode in (("var/moo", 0o2755), ("var/log/moo", 0o3775), ("run/arqond", 0o755)):
        info = (root / path).stat()
        assert (info.st_mode & 0o7777, info.st_uid, info.st_gid) == (mode, uid, gid), path


def test_the_serve_template_verifies_and_runs_arqon_serve_with_the_handler(unit_root):
    shutil.copy(UNITS / "arqon-serve@.service", unit_root / "etc/systemd/system")
    (unit_root / "usr/bin/arqon").write_text("#!/bin/sh\n")
    (unit_root / "usr/bin/arqon").chmod(0o755)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={unit_root}",
                             "arqon-serve@dreader.service"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result
    options = unit_options("arqon-serve@.service")
    # $HANDLER alone as a word reaches arqon whole, spaces included: one shell command.
    assert options["ExecStart"] == ["/usr/bin/arqon serve %i --exec $HANDLER"]
    assert options["EnvironmentFile"] == ["-/etc/arqond/serve/%i.env"]
    assert (options["Restart"], options["Group"], options["DynamicUser"]) == (
        ["on-failure"], ["zgents"], ["yes"])
    assert options["Wants"] == options["After"] == ["arqond.service"]
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                               str(UNITS / "arqon-serve@.service")],
                              capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert match and float(match.group(1)) <= SERVE_MAX_EXPOSURE, security.stdout
