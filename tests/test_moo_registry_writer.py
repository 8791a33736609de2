"""registry.json written by a worker thread (arqond/moo/registry_writer.py), on real files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import threading

import orjson
import pytest

from arqond.moo.registry_writer import RegistryWriter, Snapshot


def snapshot(n: int) -> Snapshot:
    return Snapshot(orjson.dumps({"schemaVersion": 1, "zgents": {}, "n": n}) + b"\n",
                    {"z": {"name": f"z{n}"}})


@pytest.fixture
def writer(tmp_path):
    made = RegistryWriter(str(tmp_path / "moo" / "registry.json"),
                          str(tmp_path / "state" / "moo-zgents.json"), None)
    (tmp_path / "moo").mkdir()
    yield made
    made.close()


def on_disk(writer: RegistryWriter) -> int:
    with open(writer.registry_path, "rb") as handle:
        return orjson.loads(handle.read())["n"]


async def test_a_write_is_done_once_on_disk_whole_with_its_saved_zgents(writer):
    await writer.write(snapshot(1))
    assert on_disk(writer) == 1
    assert stat.S_IMODE(os.stat(writer.registry_path).st_mode) == 0o644
    with open(writer.state_path, "rb") as handle:
        saved = orjson.loads(handle.read())
    assert saved == {"zgents": {"z": {"name": "z1"}}, "registry_sha256": hashlib.sha256(
        snapshot(1).registry).hexdigest()}
    assert not [name for name in os.listdir(os.path.dirname(writer.registry_path))
                if ".tmp" in name]


async def test_the_writes_happen_off_the_event_loop(writer, monkeypatch):
    threads = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: threads.append(threading.current_thread())
                        or real(fd))
    await writer.write(snapshot(1))
    assert threads and threading.main_thread() not in threads


async def test_changes_made_while_writing_are_coalesced_into_the_next_write(writer):
    waits = [writer.write(snapshot(n)) for n in range(1, 6)]
    await asyncio.gather(*waits)
    # The first went out at once; the four made meanwhile became one write, of the newest.
    assert writer.registry_writes_total == 2 and on_disk(writer) == 5


async def test_an_older_snapshot_never_replaces_a_newer_one(writer):
    waiting = writer.write(snapshot(1))
    writer.write_now(snapshot(2))   # a narrative registration, written before it returns
    assert on_disk(writer) == 2
    await waiting
    assert on_disk(writer) == 2


async def test_a_failed_write_is_logged_remembered_and_cleared_by_the_next(writer, caplog):
    os.rmdir(os.path.dirname(writer.registry_path))
    await writer.write(snapshot(1))
    assert writer.failure == f"cannot write {writer.registry_path}: No such file or directory"
    assert writer.failure in caplog.text and writer.registry_writes_total == 0
    os.mkdir(os.path.dirname(writer.registry_path))
    await writer.write(snapshot(2))
    assert writer.failure is None and on_disk(writer) == 2


async def test_a_state_dir_that_cannot_be_made_is_logged(writer, tmp_path, caplog):
    (tmp_path / "state").write_text("not a dir")
    await writer.write(snapshot(1))
    assert f"cannot write {writer.state_path}" in caplog.text
    assert on_disk(writer) == 1 and writer.failure is None
