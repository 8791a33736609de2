"""What the reference decoder says, for expectations that quote it."""

from __future__ import annotations

from typing import Any

import orjson

# How arqond names JSON types in its errors, written out here rather than imported.
TYPE_NAMES = {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
              str: "a string", list: "an array", dict: "an object"}


def syntax_error(data: bytes | str) -> str:
    """orjson's own words about ``data``, which must not decode."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return str(exc)
    raise AssertionError(f"{data[:60]!r} decodes: not a syntax error")


def utf8(data: bytes) -> bool:
    """Whether ``data`` can be a WebSocket text frame."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def type_name(value: Any) -> str:
    return TYPE_NAMES[type(value)]


def depth(value: Any) -> int:
    """Levels of arrays and objects in a decoded value (a scalar has none); iterative, as
    the corpus nests past the interpreter's recursion limit."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item \
            if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest
