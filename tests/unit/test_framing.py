"""The one line framer of every byte stream (arqond/core/framing.py), without I/O."""

from __future__ import annotations

import pytest

from arqond.core.framing import Line, LineFramer, too_long


def data_of(lines: list[Line]) -> list[bytes]:
    return [line.data for line in lines]


def test_lines_are_split_across_chunks_with_their_offsets():
    framer = LineFramer(10)
    assert framer.feed(b"ab") == []
    assert framer.feed(b"c\nde\n\nf") == [Line(0, b"abc", 3), Line(4, b"de", 2),
                                          Line(7, b"", 0)]
    assert framer.feed(b"g\n") == [Line(8, b"fg", 2)]


def test_partial_lines_wait_for_their_newline_and_positions_follow():
    framer = LineFramer(1000, offset=100)
    assert framer.feed(b'{"a":') == []
    assert framer.read_position == 105 and framer.offset == 100
    lines = framer.feed(b'1}\n{"b":2}\n{"c"')
    assert lines == [Line(100, b'{"a":1}', 7), Line(108, b'{"b":2}', 7)]
    assert framer.offset == 116 and framer.read_position == 120
    assert framer.feed(b":3}\n") == [Line(116, b'{"c":3}', 7)]


def test_an_overlong_line_keeps_its_first_bytes_only_and_its_neighbours_whole():
    framer = LineFramer(10)
    lines = framer.feed(b"ok\n" + b"x" * 8) + framer.feed(b"y" * 30)
    assert len(framer.pending) == 10  # memory stays at the bound
    lines += framer.feed(b"z\nnext\n")
    assert lines == [Line(0, b"ok", 2), Line(3, b"x" * 8 + b"yy", 39), Line(43, b"next", 4)]
    assert [line.cut for line in lines] == [False, True, False]
    assert len(framer.pending) == 0 and framer.offset == 48


@pytest.mark.parametrize("chunk, expected", [
    (b"x" * 10 + b"\n", [Line(0, b"x" * 10, 10)]),     # whole, at the bound
    (b"x" * 11 + b"\n", [Line(0, b"x" * 10, 11)]),     # one past it: cut
    (b"\n", [Line(0, b"", 0)]),
    (b"", []),
])
def test_a_whole_line_in_one_piece_comes_out_as_the_long_way_gives_it(chunk, expected):
    assert LineFramer(10).feed(chunk) == expected
    long_way = LineFramer(10)
    assert long_way.feed(chunk[:1]) + long_way.feed(chunk[1:]) == expected


def test_finish_hands_over_an_unfinished_line_and_starts_afresh():
    framer = LineFramer(10)
    framer.feed(b"half")
    unfinished = framer.finish()
    assert unfinished == Line(0, b"half", 4) and not unfinished.cut
    assert framer.feed(b"whole\n") == [Line(4, b"whole", 5)]
    assert framer.finish() is None
    framer.feed(b"y" * 11)
    assert framer.finish() == Line(10, b"y" * 10, 11)


def test_reset_drops_the_partial_line():
    framer = LineFramer(10)
    framer.feed(b"abc")
    framer.reset(50)
    assert framer.feed(b"d\n") == [Line(50, b"d", 1)]


def test_the_refusal_text_names_the_bound():
    assert too_long(65536) == "line longer than 65536 bytes"


def test_a_line_shows_where_it_starts_what_it_holds_and_how_long_it_was():
    line = Line(7, b"ab", 5)
    assert repr(line) == "Line(7, b'ab', 5)"
    assert (line.end, line.cut) == (13, True)
    assert line != (7, b"ab", 5) and line == Line(7, b"ab", 5)
