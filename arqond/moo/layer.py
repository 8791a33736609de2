"""The MOO layer: each registered Zgent's files (inbox FIFO, socket, mailbox journal) and the
registry on disk, around the I/O-free core (arqond/core/moo), which decides what happens to
messages, requests and socket connections.

Messages to NAME (FIFO lines, replies routed by replyTo, ``inbox_line`` from other parts) are
published on NAME:inbox and kept in NAME's mailbox until read, or given to a reader already
waiting. JSON-RPC requests go to NAME's handler when one is attached (``arqon.serve``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import socket
import stat
import time
from typing import TYPE_CHECKING, Any

import orjson

from arqond.config import Config
from arqond.core.access import Owners
from arqond.core.bus import Bus
from arqond.core.commands import Command
from arqond.core.metrics import Sample, counters_of, gauge
from arqond.core.moo import registry
from arqond.core.moo.owners import owners_of
from arqond.core.moo.names import check_name
from arqond.core.moo.registry import Spec, Zgent
from arqond.core.moo.session import Session
from arqond.core.moo.zgents import Elsewhere, Served, TooManyZgents, Zgents
from arqond.core.principal import SERVER, Principal
from arqond.core.timers import Timers
from arqond.log import log_event
from arqond.moo import files
from arqond.moo.broadcast import BROADCAST_TARGET, Broadcasts
from arqond.moo.commands import zgent_commands
from arqond.unix import NotOurs
from arqond.moo.inbox import InboxReader, Peeker
from arqond.moo.mailboxes import MailboxLog, MailboxStore
from arqond.moo.registry_writer import RegistryWriter, Snapshot
from arqond.moo.sockets import ZgentConnection
from arqond.unix import ListenerError, group_id

if TYPE_CHECKING:
    from arqond.principals import PrincipalResolver
    from arqond.system.fdstore import FdStore

log = logging.getLogger("arqond.moo")

STATE_FILE = "moo-zgents.json"
# Under the state dir: one file per Zgent holding its unread messages (arqond/moo/mailboxes.py).
MAILBOX_DIR = "mailboxes"

# What /metrics exports of the MOO layer (arqonbus_moo_<name>), by the part that counts it.
CORE_COUNTERS = {
    "inbox_lines_total": "Lines read from inbox FIFOs (and narrative queries) delivered.",
    "inbox_refused_total": "Inbox lines refused (too long, no such Zgent), each logged.",
    "mailbox_dropped_total": "Mailbox messages dropped, oldest first, at moo.mailbox_size.",
    "socket_connections_total": "Connections accepted on Zgent sockets.",
    "socket_requests_total": "Requests received on Zgent sockets.",
    "socket_errors_total": "JSON-RPC errors answered on Zgent sockets.",
    "socket_clients_cut_total": "Zgent socket clients cut off for falling behind.",
    "socket_clients_refused_total": "Zgent socket clients refused at moo.max_clients.",
    "internal_errors_total": "Inbox and socket lines that failed inside arqond (a bug), each "
                             "logged with where: an inbox line is delivered as {\"raw\": ...} "
                             "instead, a socket line answered -32603.",
    "abandoned_waits_total": "Messages not handed to an arqon.recv waiter that had gone away; "
                             "each stayed in the mailbox.",
    "registry_purged_total": "Unregistered Zgents dropped from registry.json after "
                             "moo.purge_offline_after.",
    "zgents_refused_total": "Zgent registrations refused at moo.max_zgents, each logged.",
    "pane_captures_cut_total": "Pane captures cut to their last moo.pane_max_bytes bytes, "
                               "each logged.",
}
RPC_COUNTERS = {
    "handler_requests_total": "Requests forwarded to attached Zgent handlers.",
    "handler_timeouts_total": "Handler requests answered -32002 after moo.handler_timeout.",
    "late_replies_total": "Handler replies that came after their request timed out.",
}
MAILBOX_COUNTERS = {
    "mailbox_restored_total": "Unread mailbox messages taken back from disk at registration.",
    "mailbox_journal_errors_total": "Mailboxes no longer kept on disk after a write failed.",
}
LAYER_COUNTERS = {
    "inbox_second_reader_total": "Times another process was caught reading an inbox FIFO "
                                 "(lines then reach one reader or the other), each logged.",
}
WRITER_COUNTERS = {"registry_writes_total": "Atomic rewrites of registry.json."}
BROADCAST_COUNTERS = {"broadcasts_total": "Broadcasts appended to broadcast.jsonl."}


class ZgentFiles:
    """What a registered Zgent holds open."""

    __slots__ = ("reader", "sock", "sock_path", "server", "journal", "closed")

    def __init__(self, reader: InboxReader, sock: socket.socket, sock_path: str,
                 journal: MailboxLog | None) -> None:
        self.reader = reader
        self.sock = sock
        self.sock_path = sock_path
        self.server: asyncio.Server | None = None
        self.journal = journal
        self.closed = False


def _user_id(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


class MooLayer:
    name = "moo"

    def __init__(self, bus: Bus, config: Config, fdstore: "FdStore", timers: Timers,
                 principals: "PrincipalResolver") -> None:
        self.principals = principals
        self.bus = bus
        self.config = config
        self.fdstore = fdstore
        self.dir = config.moo.dir
        self.log_dir = config.moo.log_dir
        self.registry_path = os.path.join(self.dir, "registry.json")
        self.state_path = os.path.join(config.server.state_dir, STATE_FILE)
        self.mailboxes = MailboxStore(os.path.join(config.server.state_dir, MAILBOX_DIR))
        self.zgents = Zgents(bus, config, timers, time.time, time.monotonic,
                             on_change=self._changed)
        self.files: dict[str, ZgentFiles] = {}
        self.problems: dict[str, str] = {}     # Zgent -> why a part of it stopped working
        self.broadcasts = Broadcasts(bus, os.path.join(self.dir, "broadcast.jsonl"),
                                     os.path.join(self.log_dir, "broadcast.jsonl"))
        self.writer = RegistryWriter(self.registry_path, self.state_path, None)
        self.gid: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.peeker: Peeker | None = None
        self._flush_scheduled = False
        self.inbox_second_reader_total = 0

    @property
    def publish_broadcasts(self) -> bool:
        """False once the log-dir tailer publishes broadcast.jsonl lines itself."""
        return self.broadcasts.publishing

    @publish_broadcasts.setter
    def publish_broadcasts(self, value: bool) -> None:
        self.broadcasts.publishing = value

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.peeker = Peeker()
        try:
            os.makedirs(self.dir, exist_ok=True)
        except OSError as exc:
            raise ListenerError(f"cannot create the MOO dir {self.dir}: {exc.strerror}") \
                from None
        self.gid = group_id(self.config.moo.group)
        if self.gid is None:
            log.warning("group %r does not exist: MOO files keep arqond's group (create it, "
                        "or set moo.group)", self.config.moo.group)
        self.writer.gid = self.gid
        state = files.read_or_set_aside(self.state_path, "saved Zgents",
                                        registry.check_saved) or {}
        saved, written = state.get("zgents", {}), state.get("registry_sha256")
        files.read_or_set_aside(self.registry_path, "registry",
                                lambda raw: registry.check_written_registry(raw, written))
        self.broadcasts.open(self.gid)
        specs = dict(registry.check_table(self.config.tables.get("zgents", {})))
        for zgent_id, table in saved.items():
            if zgent_id not in specs:
                specs[zgent_id] = Spec.from_saved(zgent_id, table)
        for spec in specs.values():
            self._register_logged(spec)
        self.mailboxes.drop_orphans(self.zgents.served)
        self.writer.write_now(self._snapshot())   # before anything is read or answered
        self.zgents.schedule_sweep()

    async def stop(self) -> None:
        self.zgents.stop()
        # Sockets systemd keeps in its fd store stay on disk: the next run takes them over.
        kept = self.fdstore.stored
        for name, held in self.files.items():
            self._close_files(held, remove_socket=f"{name}.sock" not in kept)
            if held.journal is not None:
                held.journal.close()
        if self.peeker is not None:
            self.peeker.close()
        if self.loop is not None:
            await self.written()
        self.writer.close()
        self.broadcasts.close()

    def reload(self, config: Config) -> None:
        self.config = config
        self.zgents.reload(config)
        wanted = registry.check_table(config.tables.get("zgents", {}))
        # [zgents.NAME] after a reload: new tables registered, removed ones unregistered,
        # changed ones updated in place (their FIFO, socket and mailbox stay).
        for name, served in list(self.zgents.served.items()):
            if served.zgent.spec.source == "config" and name not in wanted:
                self.unregister(name)
        for name, spec in wanted.items():
            served = self.zgents.served.get(name)
            if served is None:
                self._register_logged(spec)
            elif served.zgent.spec != spec:
                served.zgent.spec = spec
                self.bus.access.owners[name] = self._owners(spec)

    def faults(self) -> list[str]:
        """What stopped working and why (an inbox closed after a read error, a socket that
        could not be served, registry.json not written), one line each; empty while every
        part runs."""
        failure = self.writer.failure
        return [*self.problems.values(), *([failure] if failure else [])]

    # -- registry.json ------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        return Snapshot(orjson.dumps(self.zgents.registry.document(),
                                     option=orjson.OPT_INDENT_2) + b"\n",
                        self.zgents.registry.saved())

    def _changed(self) -> None:
        """Rewrite registry.json soon: the changes of one loop turn become one write."""
        if not self._flush_scheduled and self.loop is not None:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.writer.write(self._snapshot())

    def written(self) -> asyncio.Future[None]:
        """registry.json as it is now, on disk once this is done."""
        return self.writer.write(self._snapshot())

    # -- registration ---------------------------------------------------------------------

    def _owners(self, spec: Spec) -> Owners:
        owners, unknown = owners_of(spec, _user_id, group_id)
        for complaint in unknown:
            log.warning("%s", complaint)
        return owners

    def register(self, spec: Spec, by: Principal = SERVER) -> dict[str, Any]:
        """Create NAME-inbox and NAME.sock and start serving them (NotOurs if refused);
        returns its registry entry. ``by``: who asked, for the log."""
        inbox = os.path.join(self.dir, f"{spec.id}-inbox")
        sock_path = os.path.join(self.dir, f"{spec.id}.sock")
        zgent = Zgent(spec, inbox, sock_path,
                      os.path.join(self.log_dir, f"{spec.id}-narrative.jsonl"), time.time())
        owners = self._owners(spec)
        try:
            fd = files.open_fifo(inbox, self.gid, self.fdstore.inherited(f"{spec.id}-inbox"))
        except OSError as exc:
            raise NotOurs(f"{inbox}: {exc.strerror}") from None
        try:
            sock = files.listen_socket(sock_path, self.gid,
                                       self.fdstore.inherited(f"{spec.id}.sock"))
        except (NotOurs, OSError) as exc:
            os.close(fd)
            raise NotOurs(exc.strerror if isinstance(exc, OSError) else str(exc)) from None
        self.fdstore.store(f"{spec.id}-inbox", fd, poll=False)
        self.fdstore.store(f"{spec.id}.sock", sock.fileno())
        mailbox, journal = self.mailboxes.open(spec.id, self.config.moo.mailbox_size)
        self.zgents.mailbox_dropped_total += mailbox.dropped
        self.zgents.add(zgent, mailbox, owners)
        assert self.loop is not None and self.peeker is not None
        name, zgents = spec.id, self.zgents
        reader = InboxReader(
            self.loop, inbox, fd, self.config.moo.max_line_bytes, self.peeker,
            on_line=lambda raw: zgents.fifo_line(name, raw),
            on_refused=lambda reason, size: zgents.fifo_refused(name, reason, size),
            on_error=lambda text: self._failed(name, f"{inbox}: {text}; inbox closed"),
            on_second_reader=self._second_reader)
        held = self.files[name] = ZgentFiles(reader, sock, sock_path, journal)
        self.loop.create_task(self._serve_socket(name, held)).add_done_callback(
            lambda task: self._served_or_not(name, held, task))
        log_event(log, logging.INFO, "zgent_registered",
                  f"Zgent {name} registered ({spec.source}) by {by.name}", zgent=name,
                  **by.log_fields())
        return zgent.entry()

    def register_elsewhere(self, spec: Spec, elsewhere: "Elsewhere") -> Served:
        """A Zgent another node of the cluster serves: NAME-inbox and NAME.sock here too,
        and what comes in through them goes there (arqond/cluster/zgents.py)."""
        self.register(spec)
        served = self.zgents.served[spec.id]
        served.elsewhere = served.handler = elsewhere
        served.zgent.node = elsewhere.node
        return served

    async def _serve_socket(self, name: str, held: ZgentFiles) -> None:
        assert self.loop is not None
        if held.closed:
            return

        def open_session(peer: Any, link: Any) -> Session:
            return Session(self.zgents, name, peer, self.principals.unix(peer), link)
        server = await self.loop.create_unix_server(lambda: ZgentConnection(open_session),
                                                    sock=held.sock)
        if held.closed:  # unregistered or stopping while the server was being set up
            server.close()
        else:
            held.server = server

    def _served_or_not(self, name: str, held: ZgentFiles, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._failed(name, f"{held.sock_path}: not served: {task.exception()}")

    def _failed(self, name: str, why: str) -> None:
        self.problems[name] = why
        log_event(log, logging.ERROR, "file_refused", why, zgent=name)

    def _second_reader(self) -> None:
        self.inbox_second_reader_total += 1

    def _close_files(self, held: ZgentFiles, *, remove_socket: bool) -> None:
        held.closed = True
        held.reader.close()
        if held.server is not None:
            held.server.close()
        else:
            held.sock.close()
        if remove_socket:
            files.remove_if(held.sock_path, stat.S_ISSOCK)

    def _register_logged(self, spec: Spec) -> bool:
        try:
            self.register(spec)
        except NotOurs as exc:
            log_event(log, logging.ERROR, "file_refused", f"Zgent {spec.id} not served: {exc}",
                      zgent=spec.id)
            return False
        return True

    def ensure_zgent(self, name: str) -> None:
        """Register NAME, whose narrative file has appeared, unless it is served already: with
        default attributes, owned by the file's owner."""
        check_name(name)
        if name not in self.zgents.served:
            try:
                self.zgents.check_room(None)
            except TooManyZgents:
                return   # logged as the limit reached
            try:
                owner: str | None = "uid:%d" % os.lstat(
                    os.path.join(self.log_dir, f"{name}-narrative.jsonl")).st_uid
            except OSError:
                owner = None   # gone again already: admins' alone
            spec = Spec.from_table(name, {}, "narrative", owner)
            if not self._register_logged(spec):
                return
            self.writer.write_now(self._snapshot())
        self.touch(name)

    def touch(self, name: str) -> None:
        """A sign of life from NAME: lastSeen now, status active."""
        self.zgents.touch(name)

    def inbox_line(self, name: str, obj: dict[str, Any]) -> None:
        """One message to NAME, exactly as if read from NAME-inbox."""
        self.zgents.inbox_line(name, obj)

    def unregister(self, name: str, by: Principal = SERVER) -> dict[str, Any]:
        inbox = self.zgents.served[name].zgent.inbox
        entry = self.zgents.remove(name)
        held = self.files.pop(name)
        self.problems.pop(name, None)
        self._close_files(held, remove_socket=True)
        files.remove_if(inbox, stat.S_ISFIFO)
        if held.journal is not None:
            held.journal.remove()
        self.fdstore.remove(f"{name}-inbox")
        self.fdstore.remove(f"{name}.sock")
        log_event(log, logging.INFO, "zgent_unregistered",
                  f"Zgent {name} unregistered by {by.name}", zgent=name, **by.log_fields())
        return entry

    # -- what the layer plugs into the Bus ----------------------------------------------------

    def commands(self) -> dict[str, Command]:
        return zgent_commands(self)

    def intercepts(self) -> dict[tuple[str, str], Any]:
        return {BROADCAST_TARGET: self.broadcasts.from_bus}

    # -- introspection ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The "zgents" section of HTTP /status: registry entries, handler, mailbox depth."""
        served = self.zgents.served
        return {"zgents": {name: {**entry, "handler": name in served and
                                  served[name].handler is not None,
                                  "mailbox": len(served[name].mailbox) if name in served else 0}
                           for name, entry in self.zgents.registry.entries().items()}}

    def samples(self) -> list[Sample]:
        return [gauge("arqonbus_moo_zgents", "Zgents served now.", len(self.zgents.served)),
                *counters_of(self.zgents, "arqonbus_moo", CORE_COUNTERS),
                *counters_of(self.zgents.calls, "arqonbus_moo", RPC_COUNTERS),
                *counters_of(self, "arqonbus_moo", LAYER_COUNTERS),
                *counters_of(self.mailboxes, "arqonbus_moo", MAILBOX_COUNTERS),
                *counters_of(self.broadcasts, "arqonbus_moo", BROADCAST_COUNTERS),
                *counters_of(self.writer, "arqonbus_moo", WRITER_COUNTERS)]
