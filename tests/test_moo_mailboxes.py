"""Mailbox files (arqond/moo/mailboxes.py): replay, truncation when empty, rewrites."""

from __future__ import annotations

from collections import deque

import pytest

from arqond.moo import mailboxes
from arqond.moo.mailboxes import MailboxLog


def refused(exc: OSError) -> None:
    raise AssertionError(f"the disk refused: {exc}")


def test_replay_applies_puts_and_takes_in_order():
    raw = b'{"n":1}\n{"n":2}\n-\n{"n":3}\n-\n{"n":4}\n'
    assert mailboxes.replay(raw) == [{"n": 3}, {"n": 4}]
    assert mailboxes.replay(b"") == []


def test_a_last_line_cut_short_is_not_a_message():
    assert mailboxes.replay(b'{"n":1}\n{"n":2') == [{"n": 1}]


@pytest.mark.parametrize("raw, reason", [
    (b"-\n", "line 1 takes from an empty mailbox"),
    (b'{"n":1}\n[1]\n', "line 2 is not a JSON object"),
])
def test_a_file_that_is_not_a_mailbox_is_refused_with_the_line(raw, reason):
    with pytest.raises(ValueError, match=reason):
        mailboxes.replay(raw)


def test_garbage_is_refused():
    with pytest.raises(ValueError):
        mailboxes.replay(b"not json\n")


def test_the_file_follows_the_mailbox_and_is_emptied_with_it(tmp_path):
    path = tmp_path / "z.jsonl"
    unread = deque([{"n": 0}])
    log = MailboxLog(str(path), list(unread), refused)
    for n in (1, 2):
        unread.append({"n": n})
        log.put({"n": n})
    unread.popleft()
    log.took(unread)
    assert mailboxes.replay(path.read_bytes()) == [{"n": 1}, {"n": 2}]
    unread.clear()
    log.took(unread, 2)
    assert path.read_bytes() == b""
    log.put({"n": 3})
    assert path.read_bytes() == b'{"n":3}\n'
    log.remove()
    assert not path.exists()


def test_taken_messages_are_rewritten_away_so_the_file_stays_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(mailboxes, "COMPACT_SLACK", 64)
    path = tmp_path / "z.jsonl"
    unread: deque[dict] = deque([{"n": -1}])
    log = MailboxLog(str(path), list(unread), refused)
    for n in range(200):   # never empty: one message waits while the next comes in
        unread.append({"n": n})
        log.put({"n": n})
        unread.popleft()
        log.took(unread)
        assert mailboxes.replay(path.read_bytes()) == list(unread)
        assert path.stat().st_size <= 2 * len(b'{"n":199}\n') + 64 + 16
    log.close()


def test_a_full_mailbox_writes_each_new_message_and_its_dropped_oldest_together(
        tmp_path, monkeypatch):
    monkeypatch.setattr(mailboxes, "COMPACT_SLACK", 64)
    path = tmp_path / "z.jsonl"
    unread: deque[dict] = deque({"n": -n} for n in range(1, 4))   # full at three
    log = MailboxLog(str(path), list(unread), refused)
    writes = []
    monkeypatch.setattr(mailboxes.os, "write",
                        lambda fd, data, write=mailboxes.os.write: writes.append(data) or
                        write(fd, data))
    for n in range(200):
        unread.append({"n": n})
        unread.popleft()
        log.put_over_oldest({"n": n}, unread)
        assert mailboxes.replay(path.read_bytes()) == list(unread)
        assert path.stat().st_size <= 2 * 3 * len(b'{"n":199}\n') + 64 + 16
    assert len(writes) == 200   # one per message, appended or rewritten
    log.close()


def test_a_write_the_disk_refuses_stops_the_file_and_says_so_once(tmp_path, monkeypatch):
    failures = []
    log = MailboxLog(str(tmp_path / "z.jsonl"), [], failures.append)
    log.put({"n": 1})
    monkeypatch.setattr(mailboxes.os, "write", lambda fd, data: 0)   # the disk is full
    log.put({"n": 2})
    assert [exc.strerror for exc in failures] == ["No space left on device"]
    log.put({"n": 3})
    log.put_over_oldest({"n": 4}, deque())
    log.took(deque(), 1)
    assert len(failures) == 1 and log.file is None
    log.remove()
    assert not (tmp_path / "z.jsonl").exists()
