"""A place in a channel's stream written as text, ``SEQ:EPOCH``: the ``id:`` of each event of
/v1/stream as server-sent events (so a browser's ``Last-Event-ID`` resumes it), what
``arqon tail --since`` takes, and what ``arqon read`` shows. The epoch may be left out
(``SEQ``): then it means the stream's epoch of the moment, which the reader looks up.
"""

from __future__ import annotations

import re

# As many digits as SQLite's integers hold; epochs are arqond's own hex (streams.new_epoch).
POSITION = re.compile(r"(?P<seq>[0-9]{1,18})(?::(?P<epoch>[0-9a-f]{1,64}))?")
FORM = "SEQ or SEQ:EPOCH, as a message's metadata.seq and .epoch (say 42:3f2a9c01)"


def position_text(seq: int, epoch: str) -> str:
    return f"{seq}:{epoch}"


def parse_position(text: str) -> tuple[int, str | None]:
    """(seq, epoch or None) from ``SEQ:EPOCH`` or ``SEQ``; ValueError names the form."""
    found = POSITION.fullmatch(text)
    if found is None:
        raise ValueError(f"{text!r} is not {FORM}")
    return int(found["seq"]), found["epoch"]
