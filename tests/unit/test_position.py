"""A stream position as text, SEQ:EPOCH (arqond/core/position.py)."""

from __future__ import annotations

import pytest

from arqond.core.position import parse_position, position_text

FORM = "is not SEQ or SEQ:EPOCH, as a message's metadata.seq and .epoch (say 42:3f2a9c01)"


@pytest.mark.parametrize("text, position", [
    ("0", (0, None)), ("42", (42, None)), ("42:3f2a9c01", (42, "3f2a9c01")),
    ("999999999999999999", (999999999999999999, None)),
])
def test_a_position_reads_as_its_seq_and_epoch(text, position):
    assert parse_position(text) == position


def test_an_event_id_reads_back_as_the_position_it_was_made_from():
    assert parse_position(position_text(7, "0badcafe")) == (7, "0badcafe")


@pytest.mark.parametrize("text", [
    "", "-1", "+1", " 1", "1 ", "1.0", "abc", "1:", ":ab", "1:AB", "1:xyz", "1:ab:cd",
    "1000000000000000000", "1:" + "a" * 65, "١", "1\n",
])
def test_anything_else_is_refused_naming_the_form(text):
    with pytest.raises(ValueError) as refused:
        parse_position(text)
    assert str(refused.value) == f"{text!r} {FORM}"
