"""THE Zgent-name rule. Every part that takes a Zgent name (registration, a request's replyTo,
narrative file names, the CLI) checks it here, so a name one part accepts no other refuses."""

from __future__ import annotations

import re
from typing import Any

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class ZgentError(ValueError):
    """A refused Zgent name or attribute; the text says which and why."""


def check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise ZgentError(f"a Zgent name must be a string, not {type(name).__name__}")
    # ".." would let NAME-inbox or NAME.sock climb out of the MOO dir through a path join.
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise ZgentError(f"invalid Zgent name {name!r}: 1 to 63 of a-z 0-9 . _ -, starting "
                         "with a letter or digit, without '..'")
    return name
