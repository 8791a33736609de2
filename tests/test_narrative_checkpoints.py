"""The checkpoint file (arqond/moo/checkpoints.py): one appended document per save, the newest
whole one wins, the file starts afresh past its bound, and a short write is never appended to."""

from __future__ import annotations

import errno

import pytest

from arqond.moo import checkpoints
from arqond.core.narrative.files import Record
from arqond.moo.checkpoints import CheckpointStore, CorruptCheckpoints


def record(offset: int, name: str = "dreader-narrative.jsonl") -> Record:
    return Record(name=name, dev=1, ino=2, fingerprint="ab", key="1:2:ab:0", generation=0,
                  offset=offset)


def test_each_save_is_one_line_and_the_newest_counts(tmp_path):
    store = CheckpointStore(str(tmp_path))
    for offset in (10, 20, 30):
        store.save([record(offset)])
    store.close()
    assert len((tmp_path / checkpoints.FILENAME).read_bytes().splitlines()) == 3
    assert CheckpointStore(str(tmp_path)).load() == [record(30)]


def test_a_document_written_by_an_earlier_arqond_is_read(tmp_path):
    (tmp_path / checkpoints.FILENAME).write_bytes(
        b'{"version":1,"files":[{"name":"dreader-narrative.jsonl","dev":1,"ino":2,'
        b'"fingerprint":"ab","key":"1:2:ab:0","generation":0,"offset":7}]}')
    assert CheckpointStore(str(tmp_path)).load() == [record(7)]


def test_the_file_starts_afresh_past_its_bound_and_stays_readable(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "COMPACT_BYTES", 1000)
    store = CheckpointStore(str(tmp_path))
    path = tmp_path / checkpoints.FILENAME
    for offset in range(200):
        store.save([record(offset)])
        assert path.stat().st_size <= 1000
        assert CheckpointStore(str(tmp_path)).load() == [record(offset)]
    assert store.writes == 200
    assert not (tmp_path / f"{checkpoints.FILENAME}.tmp").exists()
    store.close()


def test_a_short_write_is_an_error_and_the_next_save_starts_afresh(tmp_path, monkeypatch):
    store = CheckpointStore(str(tmp_path))
    store.save([record(1)])
    real_write = checkpoints.os.write
    monkeypatch.setattr(checkpoints.os, "write", lambda fd, data: real_write(fd, data[:20]))
    with pytest.raises(OSError) as refused:
        store.save([record(2)])
    assert refused.value.errno == errno.ENOSPC
    monkeypatch.setattr(checkpoints.os, "write", real_write)
    store.save([record(3)])
    store.close()
    raw = (tmp_path / checkpoints.FILENAME).read_bytes()
    assert raw.count(b"\n") == 1   # the torn line went with the file it was in
    assert CheckpointStore(str(tmp_path)).load() == [record(3)]


@pytest.mark.parametrize("raw", [b"", b"\n", b'{"version": 1, "files": [{"name": ',
                                 b'{"version":2,"files":[]}\n', b'{"version":1,"files":{}}\n'])
def test_a_file_with_no_whole_document_is_set_aside(tmp_path, raw):
    path = tmp_path / checkpoints.FILENAME
    path.write_bytes(raw)
    with pytest.raises(CorruptCheckpoints) as corrupt:
        CheckpointStore(str(tmp_path)).load()
    assert not path.exists()
    assert open(corrupt.value.set_aside, "rb").read() == raw
