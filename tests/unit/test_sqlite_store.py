"""The SQLite store (arqond/streams/sqlite.py) in process, its writer thread held back where
the order of its queue is the point."""

import asyncio
import sqlite3

import pytest

from arqond.core.streams import Record, Retention, Stream
from arqond.streams.sqlite import INSERT_ROWS, Limits, SqliteStore, _insert


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
