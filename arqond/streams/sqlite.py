"""The streams' store: one SQLite database in WAL mode, STATE_DIR/streams.sqlite3.

One writer thread owns the writing connection: what the event loop appends is queued, and
each turn of the thread stores everything queued so far in one transaction (group commit),
trims what retention lets go, and tells the Bus, on the loop, how many records are stored.
Reads of a bounded size (a history page) are made at once on the loop through a second
connection; WAL lets them run beside the writer without waiting. Replays of any length run
on a reader thread.

Durability is SQLite's ``synchronous``: OFF for "write" (a commit is in the operating system
once it returns: it survives arqond being killed), FULL for "fsync" (on the disk).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import orjson

from arqond.core.streams import Record, Retention, Stored, Stream
from arqond.log import Throttle, log_event

if TYPE_CHECKING:
    from arqond.core.bus import Bus

log = logging.getLogger("arqond.streams")

FILE_NAME = "streams.sqlite3"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    room TEXT NOT NULL, channel TEXT NOT NULL,
    epoch TEXT NOT NULL,
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL, bytes INTEGER NOT NULL,
    retention TEXT NOT NULL,        -- {"messages", "bytes", "age"}
    details TEXT NOT NULL,          -- the channel: {"type", "description", "created_by", ...}
    UNIQUE (room, channel));
CREATE TABLE IF NOT EXISTS messages (
    stream INTEGER NOT NULL, seq INTEGER NOT NULL,
    received REAL NOT NULL, frame BLOB NOT NULL,
    PRIMARY KEY (stream, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors (
    principal TEXT NOT NULL, name TEXT NOT NULL, stream INTEGER NOT NULL,
    seq INTEGER NOT NULL, epoch TEXT NOT NULL,
    PRIMARY KEY (principal, name, stream)) WITHOUT ROWID;
"""
# One transaction stores at most this much of what is queued; the rest waits a turn.
BATCH_RECORDS = 4096
BATCH_BYTES = 8 << 20
# Rows go in by multi-row INSERTs of power-of-two sizes up to this (a few statement texts,
# all cached). Not executemany: it takes the GIL back for every row, and each time waits for
# the busy event loop to let go of it (measured: 72 us a row against 14).
INSERT_ROWS = 1024
# How often, at most, a stream with a maximum age is checked for messages past it.
AGE_CHECK_INTERVAL = 10.0
# A replay reads this many messages per trip to the reader thread.
REPLAY_CHUNK = 2000


class StoreError(Exception):
    """The store cannot be opened (not a corrupt file, which is set aside)."""


class Limits(NamedTuple):
    total_bytes: int


class Job(NamedTuple):
    """Work for the writer inside its next transaction; ``then``, when given, hears on the
    loop that it is committed (None) or why it failed."""

    run: Callable[[sqlite3.Connection], None]
    then: Callable[[str | None], None] | None = None


def _connect(path: str, durability: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if durability == 'fsync' else 'OFF'}")
    db.execute("PRAGMA busy_timeout=5000")
    return db


_INSERTS = {size: "INSERT INTO messages VALUES " + ", ".join(("(?, ?, ?, ?)",) * size)
            for size in (1 << n for n in range(INSERT_ROWS.bit_length()))}


def _insert(db: sqlite3.Connection, rows: list[tuple[int, int, float, bytes]]) -> None:
    """``rows`` into messages, in statements of INSERT_ROWS, then halves, down to one."""
    start, size = 0, INSERT_ROWS
    while start < len(rows):
        while start + size > len(rows):
            size //= 2
        db.execute(_INSERTS[size], [value for row in rows[start:start + size] for value in row])
        start += size


def describe_failure(exc: BaseException, path: str) -> str:
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
        return f"the disk holding {path} is full"
    return f"{path}: {exc}"


class SqliteStore:
    numbers = False     # the Bus numbers what it appends here

    def __init__(self, state_dir: str, durability: str, limits: Limits,
                 file_name: str = FILE_NAME) -> None:
        self.path = os.path.join(state_dir, file_name)
        self.durability = durability
        self.limits = limits
        self.bus: "Bus | None" = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.reader: sqlite3.Connection | None = None
        self._queue: deque[Record | Job] = deque()
        self._wake = threading.Condition()
        self._failing: str | None = None       # why writes fail, until resume()
        self._closing = False
        self._writer: threading.Thread | None = None
        self._replays = concurrent.futures.ThreadPoolExecutor(1, "arqond-replay")
        self._throttle = Throttle()     # a disk that stays full: loud once, never a flood
        self._replay_db = threading.local()
        # Streams the writer knows, by id: the stream, its size, when its age was checked.
        self._streams: dict[int, Stream] = {}
        self._new_rows: list[Stream] = []      # given their row in the current transaction
        self._sizes: dict[int, list[int]] = {}          # id -> [count, bytes]
        self._age_checked: dict[int, float] = {}
        # /metrics
        self.commits_total = 0
        self.stored_total = 0
        self.trimmed_total = 0
        self.write_errors_total = 0
        self.set_aside_total = 0

    # -- life cycle ---------------------------------------------------------------------

    def open(self) -> list[Stream]:
        """Open (or create) the store, setting a corrupt one aside; the streams it holds."""
        try:
            return self._open()
        except sqlite3.DatabaseError as exc:
            aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
            self.set_aside_total += 1
            log_event(log, logging.ERROR, "file_refused", f"{self.path} is unreadable ({exc}); "
                      f"set aside as {aside}: every stream starts again with a new epoch",
                      path=self.path)
            return self._open()

    def _open(self) -> list[Stream]:
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o750, exist_ok=True)
            db = _connect(self.path, self.durability)
        except (OSError, sqlite3.OperationalError) as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        try:
            db.executescript(SCHEMA)
            version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if version is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif version[0] != str(SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"schema version {version[0]}, this arqond "
                                            f"knows {SCHEMA_VERSION}")
            rows = db.execute("SELECT id, room, channel, epoch, first_seq, last_seq, count, "
                              "bytes, retention, details FROM streams").fetchall()
        except sqlite3.DatabaseError:
            db.close()
            raise
        restored = []
        for (stream_id, room, channel, epoch, first, last, count, size, retention,
             details) in rows:
            kept = Retention(**orjson.loads(retention))
            stream = Stream(room, channel, epoch, kept, first_seq=first, last_seq=last,
                            stored_id=stream_id, details=orjson.loads(details))
            self._streams[stream_id] = stream
            self._sizes[stream_id] = [count, size]
            restored.append(stream)
        db.close()
        return restored

    def start(self, bus: "Bus", loop: asyncio.AbstractEventLoop) -> None:
        self.bus = bus
        self.loop = loop
        self.reader = _connect(self.path, self.durability)
        self._writer = threading.Thread(target=self._write_loop, name="arqond-streams",
                                        daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Store what is queued, then stop (the loop no longer hears of it). Blocking: the
        caller runs it off the loop, after ``close_reader`` on the loop."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._writer is not None:
            self._writer.join()
        self._replays.shutdown(wait=True, cancel_futures=True)

    def close_reader(self) -> None:
        """The loop's reading connection (SQLite's objects stay in their thread)."""
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    # -- what the Bus calls (on the loop) -------------------------------------------------

    def append(self, record: Record) -> None:
        self._enqueue(record)

    def forget(self, stream: Stream) -> None:
        # Its id read by the writer, in turn: records still queued before this may be the
        # ones that give the stream an id.
        self._enqueue(Job(lambda db: self._forget(db, stream.stored_id)))

    def note(self, key: str, value: str) -> None:
        """Keep ``key`` = ``value`` with the messages appended so far, in the same
        transaction as the last of them (what a store built on this one must know again at
        start, such as how far it has read)."""
        self._enqueue(Job(lambda db: db.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))))

    def noted(self, key: str) -> str | None:
        """What ``note`` kept under ``key`` (after ``open``)."""
        db = sqlite3.connect(self.path)
        try:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        finally:
            db.close()
        return row[0] if row else None

    def resume(self) -> None:
        with self._wake:
            self._failing = None

    def read(self, stream: Stream, after: int, before: int, limit: int) -> list[Stored]:
        if stream.stored_id is None or self.reader is None:
            return []
        rows = self.reader.execute(
            "SELECT seq, received, frame FROM messages WHERE stream=? AND seq>? AND seq<? "
            "ORDER BY seq DESC LIMIT ?", (stream.stored_id, after, before, limit)).fetchall()
        return [Stored(*row) for row in reversed(rows)]

    def read_later(self, stream: Stream, after: int, limit: int,
                   then: Callable[[list[Stored]], None]) -> None:
        assert self.loop is not None
        stream_id = stream.stored_id
        if stream_id is None:
            self.loop.call_soon(then, [])
            return
        future = self._replays.submit(self._read_after, stream_id, after, limit)
        loop = self.loop
        future.add_done_callback(
            lambda done: loop.call_soon_threadsafe(then, done.result()))

    def _read_after(self, stream_id: int, after: int, limit: int) -> list[Stored]:
        db = getattr(self._replay_db, "db", None)
        if db is None:
            db = self._replay_db.db = _connect(self.path, self.durability)
        rows = db.execute("SELECT seq, received, frame FROM messages WHERE stream=? AND seq>? "
                          "ORDER BY seq LIMIT ?", (stream_id, after, limit)).fetchall()
        return [Stored(*row) for row in rows]

    def keep(self, stream: Stream, then: Callable[[str | None], None]) -> None:
        def store(db: sqlite3.Connection) -> None:
            self._stream_id(db, stream)
        self._enqueue(Job(store, then))

    def save_cursor(self, principal: str, name: str, stream: Stream, seq: int,
                    then: Callable[[str | None], None]) -> None:
        epoch = stream.epoch

        def save(db: sqlite3.Connection) -> None:
            stream_id = self._stream_id(db, stream)
            db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?, ?, ?, ?)",
                       (principal, name, stream_id, seq, epoch))
        self._enqueue(Job(save, then))

    def cursors(self) -> dict[tuple[str, str, int], tuple[int, str]]:
        """Every saved cursor: (principal, name, stream id) -> (seq, epoch); read at start."""
        assert self.reader is not None
        return {(principal, name, stream): (seq, epoch) for principal, name, stream, seq, epoch
                in self.reader.execute("SELECT * FROM cursors")}

    def _enqueue(self, item: Record | Job) -> None:
        with self._wake:
            self._queue.append(item)
            self._wake.notify()

    # -- the writer thread ------------------------------------------------------------------

    def _write_loop(self) -> None:
        db = _connect(self.path, self.durability)
        try:
            while True:
                with self._wake:
                    while not self._queue and not self._closing:
                        self._wake.wait()
                    if not self._queue:
                        return
                    batch = self._take()
                    failing = self._failing
                if failing is not None:
                    self._report_failed(batch, failing)
                    continue
                try:
                    self._store(db, batch)
                except Exception as exc:   # a bug: the batch fails, the thread goes on
                    log.exception("streams store: a write failed inside arqond")
                    self._failed(db, batch, f"internal error in arqond ({exc!r}; it is logged)")
        finally:
            db.close()

    def _take(self) -> list[Record | Job]:
        """The next batch from the queue (the lock is held)."""
        batch: list[Record | Job] = []
        size = 0
        queue = self._queue
        while queue and len(batch) < BATCH_RECORDS and size < BATCH_BYTES:
            item = queue.popleft()
            batch.append(item)
            if isinstance(item, Record):
                size += len(item.frame)
        return batch

    def _store(self, db: sqlite3.Connection, batch: list[Record | Job]) -> None:
        records = [item for item in batch if isinstance(item, Record)]
        known = dict(self._streams)
        self._new_rows.clear()
        try:
            db.execute("BEGIN IMMEDIATE")
            touched: dict[Stream, int] = {}
            rows = []
            for item in batch:
                if isinstance(item, Job):
                    item.run(db)
                    continue
                stream_id = self._stream_id(db, item.stream)
                rows.append((stream_id, item.seq, item.received, item.frame))
                touched[item.stream] = stream_id
            _insert(db, rows)
            for stream_id, _, _, frame in rows:
                sizes = self._sizes[stream_id]
                sizes[0] += 1
                sizes[1] += len(frame)
            first_seqs = {stream: self._trim(db, stream, stream_id)
                          for stream, stream_id in touched.items()}
            first_seqs.update(self._trim_total(db))
            for stream, stream_id in touched.items():
                count, size = self._sizes[stream_id]
                # The epoch too: a row kept before its first message (create_channel) may
                # have been made before a cluster node took the cluster's epoch.
                db.execute("UPDATE streams SET epoch=?, first_seq=?, last_seq=?, count=?, "
                           "bytes=? WHERE id=?", (stream.epoch, first_seqs[stream],
                                                  self._last_seq(records, stream), count,
                                                  size, stream_id))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            # Rolled back: the rows this batch made are gone (a new row may have taken the id
            # of one it deleted, which is back), and the streams it forgot are kept again.
            for stream in self._new_rows:
                stream.stored_id = None
            self._streams = known
            self._failed(db, batch, describe_failure(exc, self.path))
            return
        self.commits_total += 1
        self.stored_total += len(records)
        if records:
            self._tell(self._bus().committed, len(records), first_seqs)
        self._tell_jobs(batch, None)

    def _failed(self, db: sqlite3.Connection, batch: list[Record | Job], why: str) -> None:
        """A transaction failed: rolled back, and it and everything queued behind it fail
        too (until the Bus, with nothing pending, calls ``resume``)."""
        if db.in_transaction:
            db.execute("ROLLBACK")
        self._reload_sizes(db)
        self.write_errors_total += 1
        loud, count = self._throttle(why)
        if loud:
            log_event(log, logging.ERROR, "store_failed", f"streams store: {why} ({count} "
                      "failed write(s) so far)", path=self.path)
        with self._wake:
            rest = list(self._queue)
            self._queue.clear()
            failed = [*batch, *rest]
            # Messages behind one that failed fail too, in order, until the Bus (told of
            # them, nothing pending) calls resume; a failed job alone leaves nothing to wait.
            if any(isinstance(item, Record) for item in failed):
                self._failing = why
        self._report_failed(failed, why)

    def _report_failed(self, batch: list[Record | Job], why: str) -> None:
        count = sum(isinstance(item, Record) for item in batch)
        if count:
            self._tell(self._bus().failed, count, why)
        self._tell_jobs(batch, why)

    def _tell_jobs(self, batch: list[Record | Job], failure: str | None) -> None:
        for item in batch:
            if isinstance(item, Job) and item.then is not None:
                self._tell(item.then, failure)

    def _bus(self) -> "Bus":
        assert self.bus is not None
        return self.bus

    def _tell(self, method: Callable[..., None], *args: Any) -> None:
        assert self.loop is not None
        try:
            self.loop.call_soon_threadsafe(method, *args)
        except RuntimeError:
            pass   # the loop is closed: arqond is stopping, nobody is left to tell

    @staticmethod
    def _last_seq(records: list[Record], stream: Stream) -> int:
        return max(record.seq for record in records if record.stream is stream)

    def _stream_id(self, db: sqlite3.Connection, stream: Stream) -> int:
        if stream.stored_id is None:
            cursor = db.execute(
                "INSERT INTO streams (room, channel, epoch, first_seq, last_seq, count, bytes, "
                "retention, details) VALUES (?, ?, ?, ?, ?, 0, 0, ?, ?) "
                "ON CONFLICT (room, channel) DO UPDATE SET epoch=excluded.epoch, "
                "first_seq=excluded.first_seq, last_seq=excluded.last_seq, count=0, bytes=0, "
                "retention=excluded.retention, details=excluded.details RETURNING id",
                (stream.room, stream.channel, stream.epoch, stream.first_seq,
                 stream.first_seq - 1, orjson.dumps(stream.retention._asdict()).decode(),
                 orjson.dumps(stream.details).decode()))
            stream_id = cursor.fetchone()[0]
            # A stream made again under a name the store held (deleted, then re-created):
            # its old messages are not this one's past.
            db.execute("DELETE FROM messages WHERE stream=?", (stream_id,))
            self._streams[stream_id] = stream
            self._sizes[stream_id] = [0, 0]
            stream.stored_id = stream_id
            self._new_rows.append(stream)
        return stream.stored_id

    def _forget(self, db: sqlite3.Connection, stream_id: int | None) -> None:
        if stream_id is None:
            return
        db.execute("DELETE FROM messages WHERE stream=?", (stream_id,))
        db.execute("DELETE FROM cursors WHERE stream=?", (stream_id,))
        db.execute("DELETE FROM streams WHERE id=?", (stream_id,))
        self._sizes.pop(stream_id, None)
        self._streams.pop(stream_id, None)

    # -- retention ------------------------------------------------------------------------

    def _trim(self, db: sqlite3.Connection, stream: Stream, stream_id: int) -> int:
        """Apply the stream's retention; its first seq afterwards."""
        keep = stream.retention
        count, size = self._sizes[stream_id]
        cut = 0
        if count > keep.messages:
            cut = self._seq_at(db, stream_id, count - keep.messages)
        if size > keep.bytes:
            cut = max(cut, self._seq_dropping_bytes(db, stream_id, size - keep.bytes))
        now = time.monotonic()
        if keep.age and now - self._age_checked.get(stream_id, 0.0) > AGE_CHECK_INTERVAL:
            self._age_checked[stream_id] = now
            row = db.execute("SELECT max(seq) FROM messages WHERE stream=? AND received<?",
                             (stream_id, time.time() - keep.age)).fetchone()
            cut = max(cut, row[0] or 0)
        # The first seq from which on nothing of the stream was dropped: one past the last
        # seq dropped. Where seqs skip numbers (a cluster's), that is not the first one kept.
        if cut:
            self._drop_through(db, stream_id, cut)
            return cut + 1
        return db.execute("SELECT first_seq FROM streams WHERE id=?", (stream_id,)).fetchone()[0]

    def _trim_total(self, db: sqlite3.Connection) -> dict[Stream, int]:
        """streams.total_bytes: the largest streams give up their oldest first (each keeps
        its newest). The streams trimmed, with their first seq now."""
        over = sum(size for _, size in self._sizes.values()) - self.limits.total_bytes
        trimmed: dict[Stream, int] = {}
        while over > 0:
            stream_id = max(self._sizes, key=lambda s: self._sizes[s][1])
            if self._sizes[stream_id][0] <= 1:
                break
            newest = db.execute("SELECT max(seq) FROM messages WHERE stream=?",
                                (stream_id,)).fetchone()[0]
            cut = min(self._seq_dropping_bytes(db, stream_id, over) or newest, newest - 1)
            over -= self._drop_through(db, stream_id, cut)
            stream = self._streams[stream_id]
            trimmed[stream] = cut + 1
            count, size = self._sizes[stream_id]
            db.execute("UPDATE streams SET first_seq=?, count=?, bytes=? WHERE id=?",
                       (cut + 1, count, size, stream_id))
        return trimmed

    def _seq_at(self, db: sqlite3.Connection, stream_id: int, nth: int) -> int:
        """The seq of the stream's ``nth`` oldest message."""
        row = db.execute("SELECT seq FROM messages WHERE stream=? ORDER BY seq LIMIT 1 "
                         "OFFSET ?", (stream_id, nth - 1)).fetchone()
        return row[0]

    def _seq_dropping_bytes(self, db: sqlite3.Connection, stream_id: int, excess: int) -> int:
        """The seq through which dropping the oldest frees at least ``excess`` bytes."""
        freed = 0
        for seq, size in db.execute("SELECT seq, length(frame) FROM messages WHERE stream=? "
                                    "ORDER BY seq", (stream_id,)):
            freed += size
            if freed >= excess:
                return seq
        return 0

    def _drop_through(self, db: sqlite3.Connection, stream_id: int, seq: int) -> int:
        """Drop the stream's messages up to ``seq``; the bytes freed."""
        count, size = db.execute("SELECT count(*), coalesce(sum(length(frame)), 0) FROM "
                                 "messages WHERE stream=? AND seq<=?",
                                 (stream_id, seq)).fetchone()
        db.execute("DELETE FROM messages WHERE stream=? AND seq<=?", (stream_id, seq))
        sizes = self._sizes[stream_id]
        sizes[0] -= count
        sizes[1] -= size
        self.trimmed_total += count
        return size

    def _reload_sizes(self, db: sqlite3.Connection) -> None:
        """After a rolled-back transaction: sizes as the store holds them."""
        self._sizes = {stream_id: [count, size] for stream_id, count, size in
                       db.execute("SELECT id, count, bytes FROM streams")}
