"""The store's multi-row INSERT (arqond/streams/sqlite.py): every row once, in order, for
batch sizes around the statement sizes it uses."""

import sqlite3

import pytest

from arqond.streams.sqlite import INSERT_ROWS, _insert


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, INSERT_ROWS - 1, INSERT_ROWS,
                                   INSERT_ROWS + 1, 3 * INSERT_ROWS + 5, 4096])
def test_every_row_goes_in_once_in_order(count):
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE messages (stream, seq, received, frame)")
    rows = [(1, seq, seq / 2, b"frame %d" % seq) for seq in range(count)]
    _insert(db, rows)
    assert db.execute("SELECT * FROM messages ORDER BY rowid").fetchall() == rows
