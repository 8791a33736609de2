"""File-based queries (seed Phase 3): who asked, so that the answer goes back to them."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class QueryTracker:
    """Remembers who asked: queryId → requester, per answering Zgent, bounded.

    A request in NAME-queries.jsonl names its requester in ``replyTo`` (or ``from``) and its
    id in ``queryId`` (or JSON-RPC ``id``); a ``query-response`` line in NAME's narrative with
    the same queryId goes back to that requester. Past ``limit`` open queries the oldest is
    forgotten and counted in ``evicted``.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.open: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.evicted = 0

    def note_request(self, zgent: str, obj: dict[str, Any]) -> None:
        query_id = obj.get("queryId", obj.get("id"))
        requester = obj.get("replyTo") or obj.get("from")
        if not isinstance(query_id, (str, int)) or not isinstance(requester, str):
            return
        self.open[(zgent, str(query_id))] = requester
        self.open.move_to_end((zgent, str(query_id)))
        while len(self.open) > self.limit:
            self.open.popitem(last=False)
            self.evicted += 1

    def take_response(self, zgent: str, obj: dict[str, Any]) -> str | None:
        """The requester a narrative line answers, if it is a response to an open query."""
        if obj.get("type") != "query-response" or not isinstance(obj.get("queryId"), str):
            return None
        return self.open.pop((zgent, obj["queryId"]), None)
