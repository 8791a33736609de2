"""The zgent.* bus commands: register, unregister and list Zgents.

Who may (arqond/core/access.py): members of the MOO group and admins register, owning what
they register (within quotas.zgents and moo.max_zgents); a Zgent's owners and admins
unregister it; anyone lists. A registration's or unregistration's reply comes once
registry.json says so on disk, so a caller may read the file right after
``arqon zgent register``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from arqond.core.access import Action
from arqond.core.commands import Command, CommandContext, CommandError
from arqond.core.errors import ErrorCode
from arqond.core.moo.names import ZgentError, check_name
from arqond.core.moo.registry import Spec, registry_document
from arqond.core.moo.zgents import TooManyZgents
from arqond.core.quotas import QuotaExceeded
from arqond.log import log_event
from arqond.unix import NotOurs

if TYPE_CHECKING:
    from arqond.moo.layer import MooLayer

log = logging.getLogger("arqond.moo")

Reply = tuple[str, dict[str, Any]]


def zgent_commands(layer: "MooLayer") -> dict[str, Command]:
    def register(ctx: CommandContext) -> asyncio.Task[Reply]:
        ctx.require(Action.REGISTER_ZGENT)
        principal = ctx.client.principal
        spec = _spec(ctx, principal.key)
        if spec.id in layer.zgents.served:
            raise CommandError(ErrorCode.ZGENT_EXISTS, f"Zgent {spec.id} is already registered")
        try:
            layer.zgents.check_room(principal)
        except (TooManyZgents, QuotaExceeded) as exc:
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, str(exc)) from None
        try:
            entry = layer.register(spec, principal)
        except NotOurs as exc:
            log_event(log, logging.ERROR, "file_refused", f"Zgent {spec.id} not registered: "
                      f"{exc}", zgent=spec.id)
            raise CommandError(ErrorCode.FILE_REFUSED, str(exc)) from None
        return _once_written(layer, f"Zgent {spec.id} registered", {"id": spec.id, **entry})

    def unregister(ctx: CommandContext) -> asyncio.Task[Reply]:
        zgent_id = _zgent_id(ctx)
        served = layer.zgents.served.get(zgent_id)
        if served is None:
            raise CommandError(ErrorCode.NOT_FOUND, f"no registered Zgent {zgent_id}")
        ctx.require(Action.MANAGE_ZGENT, zgent_id)
        if served.zgent.spec.source == "config":
            raise CommandError(ErrorCode.ZGENT_CONFIGURED, f"Zgent {zgent_id} comes from the "
                               f"configuration file ([zgents.{zgent_id}]); remove it there")
        entry = layer.unregister(zgent_id, ctx.client.principal)
        return _once_written(layer, f"Zgent {zgent_id} unregistered", {"id": zgent_id, **entry})

    def listing(ctx: CommandContext) -> Reply:
        entries = layer.zgents.registry.entries()
        return f"{len(entries)} Zgent(s)", registry_document(entries)

    return {"zgent.register": Command(register, False,
                                      "register a Zgent: its inbox FIFO and socket"),
            "zgent.unregister": Command(unregister, False,
                                        "remove a Zgent's inbox and socket (offline)"),
            "zgent.list": Command(listing, False, "the registered Zgents, as in registry.json")}


def _once_written(layer: "MooLayer", text: str, data: dict[str, Any]) -> asyncio.Task[Reply]:
    """The reply, once registry.json as it is now is on disk."""
    written = layer.written()

    async def reply() -> Reply:
        await written
        return text, data
    return asyncio.get_running_loop().create_task(reply())


def _zgent_id(ctx: CommandContext) -> str:
    """The Zgent a command is about: args id (or zgent, or name), validated."""
    for key in ("id", "zgent", "name"):
        if key in ctx.args:
            try:
                return check_name(ctx.args[key])
            except ZgentError as exc:
                raise CommandError(ErrorCode.VALIDATION_ERROR, str(exc)) from None
    raise CommandError(ErrorCode.VALIDATION_ERROR, f"{ctx.name} requires argument 'id' (the "
                       "Zgent name, e.g. \"dreader\")")


def _spec(ctx: CommandContext, owner: str) -> Spec:
    zgent_id = _zgent_id(ctx)
    table = {k: v for k, v in ctx.args.items() if k not in ("id", "zgent")}
    try:
        return Spec.from_table(zgent_id, table, "command", owner)
    except ZgentError as exc:
        raise CommandError(ErrorCode.VALIDATION_ERROR, str(exc)) from None
