"""The SQLite store (arqond/streams/sqlite.py) in process, its writer thread held back where
the order of its queue is the point."""

import asyncio
import sqlite3

import pytest

from arqond.core.streams import Record, Retention, Stream
from arqond.streams.sqlite import INSERT_ROWS, Job, Limits, SqliteStore, _insert


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, INSERT_ROWS - 1, INSERT_ROWS,
                                   INSERT_ROWS + 1, 3 * INSERT_ROWS + 5, 4096])
def test_every_row_goes_in_once_in_order(count):
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE messages (stream, seq, received, frame)")
    rows = [(1, seq, seq / 2, b"frame %d" % seq) for seq in range(count)]
    _insert(db, rows)
    assert db.execute("SELECT * FROM messages ORDER BY rowid").fetchall() == rows


class QuietBus:
    """What the writer tells, unheard: the loop it calls through is never run."""

    def committed(self, *args):
        pass

    def failed(self, *args):
        pass


def test_a_channel_deleted_before_its_first_message_is_stored_leaves_nothing(tmp_path):
    """Deleted while its first message still waits in the writer's queue (the stream has no
    id in the store yet): the message and the stream go all the same."""
    store = SqliteStore(str(tmp_path), "write", Limits(1 << 30))
    assert store.open() == []
    stream = Stream("lab", "gone", "e1", Retention(100, 1 << 20, 0.0))
    store.append(Record(stream, 1, 0.0, b'{"n":1}', None, None))
    store.forget(stream)
    loop = asyncio.new_event_loop()
    try:
        store.start(QuietBus(), loop)
        store.close_reader()
        store.close()
    finally:
        loop.close()
    again = SqliteStore(str(tmp_path), "write", Limits(1 << 30))
    assert again.open() == []
    db = sqlite3.connect(again.path)
    assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)


def full(db):
    raise sqlite3.OperationalError("database or disk is full")


@pytest.fixture
def writer(tmp_path):
    """An opened store whose writer's work the test runs itself, on its own connection."""
    store = SqliteStore(str(tmp_path), "write", Limits(1 << 30))
    store.open()
    loop = asyncio.new_event_loop()
    store.bus, store.loop = QuietBus(), loop
    db = sqlite3.connect(store.path, isolation_level=None)
    yield store, db
    db.close()
    loop.close()


def test_a_failed_job_alone_leaves_the_store_writing_and_a_failed_message_stops_it(writer):
    store, db = writer
    heard = []
    store._store(db, [Job(full, heard.append)])
    assert store._failing is None and store.write_errors_total == 1
    stream = Stream("lab", "notes", "e1", Retention(100, 1 << 20, 0.0))
    store._store(db, [Record(stream, 1, 0.0, b"{}", None, None), Job(full)])
    assert store._failing == f"the disk holding {store.path} is full"


def test_a_rolled_back_transaction_gives_back_the_ids_it_gave_and_the_streams_it_forgot(writer):
    store, db = writer
    old = Stream("lab", "notes", "e1", Retention(100, 1 << 20, 0.0))
    store._store(db, [Record(old, 1, 0.0, b'{"n":1}', None, None)])
    first_id = old.stored_id
    # Deleted and made again in one transaction that fails: the new stream may have taken
    # the old one's id.
    new = Stream("lab", "notes", "e2", Retention(100, 1 << 20, 0.0))
    store._store(db, [Job(lambda db: store._forget(db, old.stored_id)),
                      Job(lambda db: store._stream_id(db, new)), Job(full)])
    assert (new.stored_id, store._streams) == (None, {first_id: old})
    assert db.execute("SELECT id, epoch FROM streams").fetchall() == [(first_id, "e1")]
