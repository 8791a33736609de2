"""What each principal may hold at once, charged when a resource is made and released when it
goes, as dbus-broker charges each user for what its peers own.

A quota is a config key of [quotas]; a refusal names it. Admins and arqond itself are not
charged: they can change the configuration anyway, and the benchmarks run as root.
"""

from __future__ import annotations

from collections import defaultdict
from enum import StrEnum
from typing import Any, Callable, Mapping

from arqond.config import OPTIONS
from arqond.core.principal import Principal


class Quota(StrEnum):
    CONNECTIONS = "connections"       # connections open at once
    CHANNELS = "channels"             # channels it created that still exist
    STORE_KEYS = "store_keys"         # op.store keys
    STORE_BYTES = "store_bytes"       # op.store value bytes (serialized)
    CRON_JOBS = "cron_jobs"           # op.cron jobs scheduled
    CRON_RATE = "cron_rate"           # op.cron messages per second, all its jobs together
    WEBHOOKS = "webhooks"             # op.webhook rules
    ZGENTS = "zgents"                 # Zgents registered


def limits_of(section: Any) -> dict[Quota, float]:
    """The limits the [quotas] section sets, one key per quota."""
    return {quota: getattr(section, quota.value) for quota in Quota}


def default_limits() -> dict[Quota, float]:
    return {quota: OPTIONS[f"quotas.{quota.value}"].default for quota in Quota}


class QuotaExceeded(Exception):
    def __init__(self, quota: Quota, limit: float, used: float, principal: Principal) -> None:
        self.quota = quota
        self.limit = limit
        super().__init__(f"quota quotas.{quota.value} ({limit:g}) reached for "
                         f"{principal.name}: {used:g} in use")


class Charges:
    def __init__(self, limits: Mapping[Quota, float]) -> None:
        self.limits = dict(limits)
        self.used: defaultdict[str, defaultdict[Quota, float]] = \
            defaultdict(lambda: defaultdict(float))
        # Refusals per quota, for /metrics; and who hears of each (the Bus logs them).
        self.refused: defaultdict[Quota, int] = defaultdict(int)
        self.on_refused: Callable[[QuotaExceeded, Principal], None] | None = None

    def charge(self, principal: Principal, quota: Quota, amount: float = 1, *,
               key: str | None = None) -> None:
        """Take ``amount`` of ``quota`` for ``principal`` (or for what it shares with others,
        ``key``), or QuotaExceeded with nothing taken."""
        if principal.admin:
            return
        used = self.used[key or principal.key]
        self.check(principal, quota, used[quota], amount)
        used[quota] += amount

    def check(self, principal: Principal, quota: Quota, used: float, amount: float = 1
              ) -> None:
        """QuotaExceeded unless ``principal``, holding ``used`` already (counted here, or by
        the caller: the Zgents it owns), may take ``amount`` more."""
        if principal.admin or used + amount <= self.limits[quota]:
            return
        self.refused[quota] += 1
        exc = QuotaExceeded(quota, self.limits[quota], used, principal)
        if self.on_refused is not None:
            self.on_refused(exc, principal)
        raise exc

    def release(self, principal: Principal, quota: Quota, amount: float = 1, *,
                key: str | None = None) -> None:
        if principal.admin:
            return
        key = key or principal.key
        used = self.used.get(key)
        if used is None:
            return
        used[quota] = max(0.0, used[quota] - amount)
        if not any(used.values()):
            del self.used[key]

    def usage(self, principal: Principal) -> dict[str, float]:
        return {quota.value: value for quota, value in self.used.get(principal.key, {}).items()
                if value}
