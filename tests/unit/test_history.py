"""What history keeps (arqond/core/history.py): frames, bounded per window and in all."""

from __future__ import annotations

import orjson

from arqond.core.history import History, HistoryLimits


def frames(window) -> list[bytes]:
    return [entry.frame for entry in window]


def test_a_window_keeps_the_newest_messages_up_to_its_count():
    history = History(HistoryLimits(messages=2, bytes=1000, total_bytes=10000))
    window = history.window()
    for n in range(4):
        history.record(window, float(n), b"m%d" % n)
    assert frames(window) == [b"m2", b"m3"] and history.evicted_total == 2
    assert [entry.received for entry in window] == [2.0, 3.0]


def test_a_window_keeps_the_newest_bytes_and_always_its_newest_message():
    history = History(HistoryLimits(messages=100, bytes=10, total_bytes=10000))
    window = history.window()
    for frame in (b"aaaa", b"bbbb", b"cccc"):
        history.record(window, 0.0, frame)
    assert frames(window) == [b"bbbb", b"cccc"] and window.bytes == 8
    history.record(window, 0.0, b"x" * 50)   # larger than the bound alone: still kept
    assert frames(window) == [b"x" * 50] and history.bytes == 50


def test_past_the_total_the_written_window_gives_first_then_the_largest():
    history = History(HistoryLimits(messages=100, bytes=1000, total_bytes=20))
    big, small = history.window(), history.window()
    for _ in range(3):
        history.record(big, 0.0, b"b" * 5)
    history.record(small, 0.0, b"s" * 5)
    assert history.bytes == 20
    history.record(small, 0.0, b"t" * 5)     # over: small gives its oldest first
    assert frames(small) == [b"t" * 5] and len(big) == 3
    fresh = history.window()
    history.record(fresh, 0.0, b"u" * 5)     # fresh holds one only: the largest gives
    assert frames(fresh) == [b"u" * 5] and len(big) == 2 and len(small) == 1
    assert history.bytes == 20


def test_entries_keep_the_frame_as_it_went_out_and_an_arqond_wide_order():
    history = History(HistoryLimits(10, 1000, 10000))
    one, two = history.window(), history.window()
    history.record(one, 1.0, orjson.dumps({"n": 1}))
    history.record(two, 2.0, orjson.dumps({"n": 2}))
    history.record(one, 3.0, orjson.dumps({"n": 3}))
    merged = sorted([*one, *two])
    assert [entry.envelope()["n"] for entry in merged] == [1, 2, 3]


def test_forgetting_a_window_frees_its_bytes_and_resizing_applies_new_bounds():
    history = History(HistoryLimits(10, 1000, 10000))
    one, two = history.window(), history.window()
    for n in range(5):
        history.record(one, 0.0, b"1234")
        history.record(two, 0.0, b"5678")
    history.forget(two)
    assert history.bytes == 20
    history.resize(HistoryLimits(messages=3, bytes=1000, total_bytes=8))
    assert len(one) == 2 and history.bytes == 8
