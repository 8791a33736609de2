"""arqond's directories at start against the real daemon (moo.dir_check, arqond/system/dirs.py):
one it owns is fixed and logged; one owned by another user stops the start with the fix, or
with moo.dir_check = "warn" is logged and used. The rule itself is a table in
tests/unit/test_dir_modes.py."""

from __future__ import annotations

import os
import stat

import pytest

from tests.conftest import run_arqon

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="gives directories to another uid")


def mode_of(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_directories_arqond_owns_are_fixed_and_logged(make_daemon):
    daemon = make_daemon(start=False)
    os.chmod(daemon.moo_dir, 0o2775)   # the old packaged /var/moo
    os.chmod(daemon.log_dir, 0o2775)   # the old /var/log/moo: no sticky bit
    os.chmod(daemon.state_dir, 0o777)
    daemon.start()
    assert (mode_of(daemon.moo_dir), mode_of(daemon.log_dir), mode_of(daemon.state_dir)) == \
        (0o2755, 0o3775, 0o755)
    for key, path, old, reason, new in (
            ("moo.dir", daemon.moo_dir, "2775", "group-writable", "2755"),
            ("moo.log_dir", daemon.log_dir, "2775", "group-writable without the sticky bit",
             "3775"),
            ("server.state_dir", daemon.state_dir, "0777", "group- and world-writable",
             "0755")):
        assert daemon.wait_for_line(f"{key} {path} was") == (
            f"<5>{key} {path} was mode {old} ({reason}): others than root could replace "
            f"arqond's files there; set it to {new} PATH={path}")
    # And it serves as usual.
    assert run_arqon(daemon, "zgent", "register", "dreader").returncode == 0
    assert stat.S_ISFIFO(os.lstat(daemon.moo_dir / "dreader-inbox").st_mode)


def test_a_directory_owned_by_another_user_stops_the_start_with_the_fix(make_daemon):
    daemon = make_daemon(start=False)
    os.chown(daemon.moo_dir, NOBODY, NOBODY)
    os.chmod(daemon.moo_dir, 0o2775)
    daemon.start(wait_ready=False)
    assert daemon.proc.wait(15) == 1
    path = daemon.moo_dir
    assert daemon.wait_for_line(f"moo.dir {path}") == (
        f"<3>moo.dir {path} is mode 2775, owner nobody, group nogroup: owned by another user "
        f"and group-writable, so others than root could replace arqond's files there; fix: "
        f'chown root {path} && chmod 2755 {path} (or set moo.dir_check = "warn" to start '
        "anyway)")
    # Nothing was made there, and nothing was changed.
    assert os.listdir(path) == [] and mode_of(path) == 0o2775
    assert os.lstat(path).st_uid == NOBODY
    assert not any("ready" in line for line in daemon.lines)


def test_with_dir_check_warn_the_same_is_logged_and_arqond_starts(make_daemon):
    daemon = make_daemon({"moo": {"dir_check": "warn"}}, start=False)
    os.chown(daemon.log_dir, NOBODY, NOBODY)
    os.chmod(daemon.log_dir, 0o775)
    daemon.start()
    path = daemon.log_dir
    assert daemon.wait_for_line(f"moo.log_dir {path}") == (
        f"<4>moo.log_dir {path} is mode 0775, owner nobody, group nogroup: owned by another "
        f"user and group-writable without the sticky bit, so others than root could replace "
        f"arqond's files there; fix: chown root {path} && chmod 1775 {path}; starting anyway "
        f'(moo.dir_check = "warn") PATH={path}')
    assert mode_of(path) == 0o775 and os.lstat(path).st_uid == NOBODY   # not arqond's to fix
    assert os.readlink(path / "broadcast.jsonl") == str(daemon.moo_dir / "broadcast.jsonl")


def test_a_directory_the_whole_system_shares_is_never_changed(make_daemon):
    daemon = make_daemon(start=False)
    os.chmod(daemon.moo_dir, 0o1777)   # as /tmp: arqond owns it (root) but must not take it
    daemon.start(wait_ready=False)
    assert daemon.proc.wait(15) == 1
    path = daemon.moo_dir
    assert daemon.wait_for_line(f"moo.dir {path}") == (
        f"<3>moo.dir {path} is mode 1777: group- and world-writable, a directory the whole "
        'system shares; fix: give moo.dir a directory of its own (or set moo.dir_check = '
        '"warn" to start anyway)')
    assert mode_of(path) == 0o1777


def test_a_symbolic_link_for_a_directory_is_refused_naming_the_real_one(make_daemon, tmp_path):
    daemon = make_daemon(start=False)
    real = tmp_path / "real-state"
    real.mkdir()
    daemon.state_dir.rmdir()
    daemon.state_dir.symlink_to(real)
    daemon.start(wait_ready=False)
    assert daemon.proc.wait(15) == 1
    assert daemon.wait_for_line("server.state_dir") == (
        f"<3>server.state_dir {daemon.state_dir} is a symbolic link, which arqond does not "
        f"follow; fix: set server.state_dir to the directory itself ({real}) (or set "
        'moo.dir_check = "warn" to start anyway)')
    assert os.listdir(real) == []


def test_dir_check_takes_only_refuse_or_warn(make_daemon):
    daemon = make_daemon({"moo": {"dir_check": "ignore"}}, start=False)
    daemon.start(wait_ready=False)
    assert daemon.proc.wait(15) == 1
    daemon.wait_for_line("moo.dir_check: must be one of refuse, warn (got 'ignore')")


def test_a_fifo_put_at_the_broadcast_log_never_blocks_the_start(make_daemon):
    # Only where others may write to the MOO dir, tolerated with moo.dir_check = "warn".
    daemon = make_daemon({"moo": {"dir_check": "warn"}}, start=False)
    os.chown(daemon.moo_dir, NOBODY, NOBODY)
    os.mkfifo(daemon.moo_dir / "broadcast.jsonl")
    daemon.start()
    path = daemon.moo_dir / "broadcast.jsonl"
    assert daemon.wait_for_line("broadcast log off") == (
        f"<3>broadcast log off: {path}: cannot open for appending (No such device or "
        "address); refusing to touch it")
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    assert run_arqon(daemon, "zgent", "register", "dreader").returncode == 0
