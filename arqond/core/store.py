"""op.store.*: a small key-value store, one space per principal, bounded in keys and bytes.

Each principal has its own space (principals that share a token's ``tenant_id`` share one),
so one client can neither list nor delete another's keys; the ``namespace`` argument
subdivides a space, as in ArqonBus (where an explicit namespace reached across tenants; here
it never leaves the principal's space). Bounds: store.max_value_bytes per value, store.max_keys
and store.max_bytes in all, quotas.store_keys and quotas.store_bytes per principal.
"""

from __future__ import annotations

from typing import Any

import orjson

from arqond.core.commands import Command, CommandContext, CommandError
from arqond.core.errors import ErrorCode
from arqond.core.principal import Principal
from arqond.core.quotas import Charges, Quota, QuotaExceeded

DEFAULT_NAMESPACE = "default"


def space_of(principal: Principal) -> str:
    return f"tenant:{principal.tenant}" if principal.tenant else principal.key


class Store:
    def __init__(self, settings: Any, charges: Charges) -> None:
        """``settings``: the [store] section (max_keys, max_value_bytes, max_bytes)."""
        self.settings = settings
        self.charges = charges
        # (space, namespace) -> key -> (value, its size in bytes)
        self.data: dict[tuple[str, str], dict[str, tuple[Any, int]]] = {}
        self.keys = 0
        self.bytes = 0
        self.refused_total = 0

    def commands(self) -> dict[str, Command]:
        return {"op.store.set": Command(self._set, False, "store a value under key"),
                "op.store.get": Command(self._get, False, "read a stored value"),
                "op.store.delete": Command(self._delete, False, "delete a stored value"),
                "op.store.list": Command(self._list, False, "list stored keys")}

    def _refuse(self, message: str) -> CommandError:
        self.refused_total += 1
        return CommandError(ErrorCode.LIMIT_EXCEEDED, message)

    def _set(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        namespace, key = _namespace(ctx), _key(ctx)
        if "value" not in ctx.args or ctx.args["value"] is None:
            raise CommandError(ErrorCode.VALIDATION_ERROR,
                               "op.store.set requires a non-null 'value'")
        value = ctx.args["value"]
        size = len(orjson.dumps(value))
        settings = self.settings
        if size > settings.max_value_bytes:
            raise self._refuse(f"value of {size} bytes is larger than store.max_value_bytes "
                               f"({settings.max_value_bytes})")
        space_key = space_of(ctx.client.principal)
        space = self.data.setdefault((space_key, namespace), {})
        old = space.get(key)
        new_keys, new_bytes = (0, size - old[1]) if old else (1, size)
        if self.keys + new_keys > settings.max_keys:
            raise self._refuse(f"the store holds store.max_keys ({settings.max_keys}) keys "
                               "already")
        if self.bytes + new_bytes > settings.max_bytes:
            raise self._refuse(f"the store holds {self.bytes} of store.max_bytes "
                               f"({settings.max_bytes}) bytes; this value needs {new_bytes}")
        # Charged to the space, so tenants sharing one share its quota.
        principal, charged = ctx.client.principal, space_key
        try:
            self.charges.charge(principal, Quota.STORE_KEYS, new_keys, key=charged)
            try:
                self.charges.charge(principal, Quota.STORE_BYTES, max(new_bytes, 0),
                                    key=charged)
            except QuotaExceeded:
                self.charges.release(principal, Quota.STORE_KEYS, new_keys, key=charged)
                raise
        except QuotaExceeded as exc:
            raise self._refuse(str(exc)) from None
        if new_bytes < 0:
            self.charges.release(principal, Quota.STORE_BYTES, -new_bytes, key=charged)
        space[key] = (value, size)
        self.keys += new_keys
        self.bytes += new_bytes
        return "Value stored", {"namespace": namespace, "key": key, "updated": old is not None}

    def _get(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        namespace, key = _namespace(ctx), _key(ctx)
        found = self.data.get((space_of(ctx.client.principal), namespace), {}).get(key)
        return "Value retrieved", {"namespace": namespace, "key": key,
                                   "found": found is not None,
                                   "value": found[0] if found else None}

    def _delete(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        namespace, key = _namespace(ctx), _key(ctx)
        principal = ctx.client.principal
        where = (space_of(principal), namespace)
        found = self.data.get(where, {}).pop(key, None)
        if found is not None:
            self.keys -= 1
            self.bytes -= found[1]
            self.charges.release(principal, Quota.STORE_KEYS, key=where[0])
            self.charges.release(principal, Quota.STORE_BYTES, found[1], key=where[0])
            if not self.data[where]:
                del self.data[where]
        return "Value deleted" if found else "Key not found", {
            "namespace": namespace, "key": key, "deleted": found is not None}

    def _list(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        namespace = _namespace(ctx)
        keys = sorted(self.data.get((space_of(ctx.client.principal), namespace), {}))
        return "Store keys listed", {"namespace": namespace, "count": len(keys), "keys": keys}


def _namespace(ctx: CommandContext) -> str:
    """The namespace as ArqonBus names it (given, else the token's tenant, else "default");
    it subdivides the principal's space, it never reaches into another's."""
    tenant = ctx.client.principal.tenant
    return ctx.arg("namespace", str) or (f"tenant:{tenant}" if tenant else DEFAULT_NAMESPACE)


def _key(ctx: CommandContext) -> str:
    key = ctx.arg("key", str, required=True)
    if not key:
        raise CommandError(ErrorCode.VALIDATION_ERROR, "key must not be empty")
    return key
