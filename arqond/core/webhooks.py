"""op.webhook.*: per-owner rules that POST routed messages to HTTP endpoints.

The table and the commands live here, without I/O. ``Webhooks.matching`` tells the delivery
adapter which rules a routed envelope matches; the adapter does the POSTs. A client's rules go
when it disconnects. Who may register rules is the access policy's (admins, by default);
where they may point is webhooks.allowed_destinations' (arqond/core/destinations.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit

from arqond.core.access import Action
from arqond.core.commands import Command, CommandContext, CommandError, owned_item
from arqond.core.destinations import refusal
from arqond.core.envelope import now_iso
from arqond.core.errors import ErrorCode
from arqond.core.principal import Principal
from arqond.core.quotas import Charges, Quota, QuotaExceeded
from arqond.core.router import check_name, split_target

MAX_HEADERS = 32
MAX_URL_LENGTH = 2048
MAX_TIMEOUT_SECONDS = 60.0
DEFAULT_TIMEOUT_SECONDS = 2.0
# Envelope key (never on the wire) counting the webhook POSTs a message came through, and the
# header every webhook POST carries it in.
HOPS = "_webhook_hops"
HOPS_HEADER = "X-Arqond-Webhook-Hops"
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Headers the delivery itself must control.
RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "connection",
                              "transfer-encoding", "x-arqond-webhook-hops"})


@dataclass
class Rule:
    rule_id: str
    owner: str                  # the client that registered it: the rule ends with it
    principal: Principal        # who it is charged to
    url: str
    room: str | None
    channel: str | None
    headers: dict[str, str]
    timeout_seconds: float
    created_at: str

    def describe(self, *, owner: bool = False) -> dict[str, Any]:
        data = {"rule_id": self.rule_id, "url": self.url, "room": self.room,
                "channel": self.channel, "timeout_seconds": self.timeout_seconds,
                "created_at": self.created_at}
        if owner:  # header values may hold credentials: never listed
            data["owner_client_id"] = self.owner
        return data

    def matches(self, room: str | None, channel: str | None) -> bool:
        return (self.room is None or self.room == room) and \
            (self.channel is None or self.channel == channel)


class Webhooks:
    def __init__(self, settings: Any, charges: Charges) -> None:
        """``settings``: the [webhooks] section (max_rules, allowed_destinations, ...)."""
        self.settings = settings
        self.charges = charges
        self.rules: dict[str, Rule] = {}

    def commands(self) -> dict[str, Command]:
        return {"op.webhook.register": Command(self._register, False, "POST messages of "
                                               "room/channel to url (rules end with the "
                                               "client)"),
                "op.webhook.list": Command(self._list, False,
                                           "your webhook rules (admin: all)"),
                "op.webhook.unregister": Command(self._unregister, False,
                                                 "remove a webhook rule")}

    def matching(self, room: str | None, channel: str | None) -> Iterator[Rule]:
        return (rule for rule in self.rules.values() if rule.matches(room, channel))

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "client_disconnected":
            owner = fields["client_id"]
            for rule_id in [r.rule_id for r in self.rules.values() if r.owner == owner]:
                self._remove(rule_id)

    def _register(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        ctx.require(Action.WEBHOOK)
        url = _check_url(ctx.arg("url", str, required=True))
        problem = refusal(urlsplit(url), (), self.settings.allowed_destinations)
        if problem is not None:
            ctx.bus.emit("access_refused", client_id=ctx.client.id,
                         text=f"webhook refused: {problem}", **ctx.client.principal.log_fields())
            raise CommandError(ErrorCode.AUTHORIZATION_ERROR, problem)
        room, channel = split_target(ctx.arg("room", str), ctx.arg("channel", str))
        for kind, name in (("room", room), ("channel", channel)):
            if name is not None:
                check_name(kind, name)
        headers = _check_headers(ctx.arg("headers", dict, {}))
        timeout = ctx.arg("timeout_seconds", (int, float), DEFAULT_TIMEOUT_SECONDS)
        if isinstance(timeout, bool) or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
            raise CommandError(ErrorCode.VALIDATION_ERROR,
                               "Validation error: timeout_seconds must be "
                               f"greater than 0 and at most {MAX_TIMEOUT_SECONDS:g}")
        limit = self.settings.max_rules
        if len(self.rules) >= limit:
            ctx.bus.emit("limit_reached", limit="webhooks.max_rules", value=limit,
                         client_id=ctx.client.id)
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, f"webhooks.max_rules ({limit}) "
                               "rules exist already")
        principal = ctx.client.principal
        try:
            self.charges.charge(principal, Quota.WEBHOOKS)
        except QuotaExceeded as exc:
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, str(exc)) from None
        rule = Rule("wh_" + os.urandom(6).hex(), ctx.client.id, principal, url, room, channel,
                    headers, float(timeout), now_iso())
        self.rules[rule.rule_id] = rule
        ctx.bus.audit(principal, f"webhook {rule.rule_id} registered to {url}",
                      client_id=ctx.client.id)
        return "Webhook registered", rule.describe()

    def _remove(self, rule_id: str) -> None:
        rule = self.rules.pop(rule_id)
        self.charges.release(rule.principal, Quota.WEBHOOKS)

    def _list(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        rules = [r.describe(owner=True) for r in self.rules.values()
                 if ctx.client.admin or r.owner == ctx.client.id]
        return "Webhook rules listed", {"rules": rules, "count": len(rules)}

    def _unregister(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        rule_id, _ = owned_item(ctx, self.rules, "rule_id", "webhook rule", "unregister")
        self._remove(rule_id)
        ctx.bus.audit(ctx.client.principal, f"webhook {rule_id} unregistered",
                      client_id=ctx.client.id)
        return "Webhook unregistered", {"rule_id": rule_id, "removed": True}


def _check_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CommandError(ErrorCode.VALIDATION_ERROR,
                           f"Validation error: bad url: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CommandError(ErrorCode.VALIDATION_ERROR,
                           "Validation error: url must start with http:// "
                           "or https:// and name a host")
    if len(url) > MAX_URL_LENGTH or any(c in url for c in "\r\n ") or port == 0:
        raise CommandError(ErrorCode.VALIDATION_ERROR,
                           "Validation error: url is too long, contains "
                           "whitespace, or names port 0")
    return url


def _check_headers(headers: dict[str, Any]) -> dict[str, str]:
    if len(headers) > MAX_HEADERS:
        raise CommandError(ErrorCode.VALIDATION_ERROR,
                           f"Validation error: at most {MAX_HEADERS} headers")
    for name, value in headers.items():
        if not HEADER_NAME.fullmatch(name) or name.lower() in RESERVED_HEADERS:
            raise CommandError(ErrorCode.VALIDATION_ERROR,
                               f"Validation error: header name {name!r} is "
                               "not a valid token or is set by arqond itself")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise CommandError(ErrorCode.VALIDATION_ERROR,
                               f"Validation error: header {name!r} must be "
                               "a string without line breaks")
    return dict(headers)
