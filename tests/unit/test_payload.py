"""The one JSON acceptance rule (arqond/core/payload.py): it decodes, and nests at most
max_depth levels, whichever the surface."""

from __future__ import annotations

import re

import pytest

from arqond.core import payload
from arqond.core.errors import ErrorCode


def nested(depth: int, opening: str = "[", closing: str = "]") -> str:
    return opening * depth + closing * depth


@pytest.mark.parametrize("raw", [nested(8), nested(8).encode(), '{"a":' * 7 + "1" + "}" * 7,
                                 '"[[[[[[[[[[[[[[["', "[1, [2, [3]], {}, []]", "7"])
def test_values_within_the_bound_are_accepted(raw):
    assert payload.loads(raw, 8) is not None


@pytest.mark.parametrize("raw", [nested(9), nested(9).encode(), '{"a":' * 9 + "1" + "}" * 9,
                                 "[" * 5 + '{"x": [[[{"y": 1}]]]}' + "]" * 5])
def test_values_one_level_past_the_bound_are_refused(raw):
    with pytest.raises(payload.PayloadError) as refused:
        payload.loads(raw, 8)
    assert (refused.value.code, refused.value.message) == (
        ErrorCode.VALIDATION_ERROR, "JSON nests deeper than 8 levels (server.max_json_depth)")


def test_text_that_is_not_json_says_why():
    with pytest.raises(payload.PayloadError) as refused:
        payload.loads(b"{nope", 8)
    assert refused.value.code == ErrorCode.INVALID_JSON
    assert re.fullmatch(r"not valid JSON: .+", refused.value.message)


def test_many_brackets_that_do_not_nest_pass_the_walk():
    wide = "[" + ",".join(["[]"] * 100) + "]"
    assert payload.loads(wide, 2) == [[]] * 100
    assert payload.depth_exceeds([[]] * 100, 2) is False
    assert payload.depth_exceeds([[[]]], 2) is True
    assert payload.depth_exceeds({"a": {"b": 1}}, 2) is False
    assert payload.depth_exceeds(5, 0) is False


def test_a_deep_value_is_walked_without_recursion():
    deep: list = []
    for _ in range(100000):
        deep = [deep]
    assert payload.depth_exceeds(deep, 64) is True
