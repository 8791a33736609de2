"""The MOO layer: each registered Zgent's inbox FIFO, socket, mailbox and registry entry.

Messages to NAME (FIFO lines, replies routed by replyTo, ``inbox_line`` from other parts) are
published on NAME:inbox and kept in NAME's mailbox until read, or given to a reader already
waiting. JSON-RPC requests go to NAME's handler when one is attached (``arqon.serve``).
"""

from __future__ import annotations

import asyncio
import grp
import hashlib
import logging
import os
import pwd
import socket
import stat
import time
from typing import Any, Callable

import orjson

from arqond.config import Config
from arqond.core import jsonrpc, payload, zgents
from arqond.core.bus import Bus
from arqond.core.clients import Client
from arqond.core.commands import Command, CommandContext, CommandError
from arqond.core.envelope import SERVER_SENDER, now_iso
from arqond.core.errors import ErrorCode, RpcCode
from arqond.core.jsonrpc import Pending, PendingTable, RpcError
from arqond.core.payload import PayloadError
from arqond.core.router import RoutingError, split_target
from arqond.core.zgents import Spec, Zgent, ZgentError
from arqond.moo import files, mailboxes
from arqond.moo.broadcast import BroadcastLog
from arqond.moo.files import NotOurs
from arqond.moo.inbox import InboxReader, Peeker
from arqond.moo.mailboxes import MailboxLog
from arqond.moo.sockets import SocketSink, ZgentConnection
from arqond.core.metrics import Sample, counters_of, gauge
from arqond.system.fdstore import FdStore
from arqond.log import log_event
from arqond.unix import ListenerError, group_id, group_ids

log = logging.getLogger("arqond.moo")

BROADCAST_TARGET = ("moo", "broadcast")
# Requests one socket client (or one replyTo Zgent) may have waiting on a handler at once;
# more get -32004, so a flooding client cannot bury a handler under work nobody else asked for.
MAX_PENDING_PER_CLIENT = 256
MAX_RECV_WAIT = 3600.0
STATE_FILE = "moo-zgents.json"
# Under the state dir: one file per Zgent holding its unread messages (arqond/moo/mailboxes.py).
MAILBOX_DIR = "mailboxes"


class Waiter:
    __slots__ = ("connection", "request_id", "timer")

    def __init__(self, connection: ZgentConnection, request_id: Any) -> None:
        self.connection = connection
        self.request_id = request_id
        self.timer: asyncio.TimerHandle | None = None


class Served:
    """A registered Zgent's live parts next to its model."""

    __slots__ = ("zgent", "reader", "sock", "server", "handler", "waiters", "uids", "gids",
                 "closed", "journal")

    def __init__(self, zgent: Zgent) -> None:
        self.zgent = zgent
        self.reader: InboxReader | None = None
        self.sock: socket.socket | None = None
        self.server: asyncio.Server | None = None
        self.closed = False
        self.handler: ZgentConnection | None = None
        self.waiters: list[Waiter] = []
        self.uids: set[int] = set()
        self.gids: set[int] = set()
        self.journal: MailboxLog | None = None   # the mailbox on disk; None: memory only


# What /metrics exports of the MOO layer (arqonbus_moo_<name>).
MOO_COUNTERS = {
    "inbox_lines_total": "Lines read from inbox FIFOs (and narrative queries) delivered.",
    "inbox_refused_total": "Inbox lines refused (too long, no such Zgent), each logged.",
    "mailbox_dropped_total": "Mailbox messages dropped, oldest first, at moo.mailbox_size.",
    "mailbox_restored_total": "Unread mailbox messages taken back from disk at registration.",
    "mailbox_journal_errors_total": "Mailboxes no longer kept on disk after a write failed.",
    "socket_connections_total": "Connections accepted on Zgent sockets.",
    "socket_requests_total": "Requests received on Zgent sockets.",
    "socket_errors_total": "JSON-RPC errors answered on Zgent sockets.",
    "socket_clients_cut_total": "Zgent socket clients cut off for falling behind.",
    "socket_clients_refused_total": "Zgent socket clients refused at moo.max_clients.",
    "handler_requests_total": "Requests forwarded to attached Zgent handlers.",
    "handler_timeouts_total": "Handler requests answered -32002 after moo.handler_timeout.",
    "late_replies_total": "Handler replies that came after their request timed out.",
    "broadcasts_total": "Broadcasts appended to broadcast.jsonl.",
    "registry_writes_total": "Atomic rewrites of registry.json.",
    "internal_errors_total": "Inbox lines that failed inside arqond (a bug), each logged and "
                             "delivered as {\"raw\": ...} instead.",
    "abandoned_waits_total": "Messages not handed to an arqon.recv waiter that had gone away; "
                             "each stayed in the mailbox.",
}


class MooLayer:
    name = "moo"

    def __init__(self, bus: Bus, config: Config, fdstore: FdStore | None = None) -> None:
        self.bus = bus
        self.config = config
        self.fdstore = fdstore or FdStore()
        moo = config.moo
        self.dir = moo.dir
        self.log_dir = moo.log_dir
        self.registry_path = os.path.join(self.dir, "registry.json")
        self.state_path = os.path.join(config.server.state_dir, STATE_FILE)
        self.mailbox_dir = os.path.join(config.server.state_dir, MAILBOX_DIR)
        self.served: dict[str, Served] = {}
        self.retired: dict[str, dict[str, Any]] = {}   # unregistered: kept as "offline"
        self.pending = PendingTable()
        self.connections: set[ZgentConnection] = set()
        self.broadcast: BroadcastLog | None = None
        # False once the log-dir tailer publishes broadcast.jsonl lines itself.
        self.publish_broadcasts = True
        self.gid: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.peeker: Peeker | None = None
        self._flush_scheduled = False
        self._stale_timer: asyncio.TimerHandle | None = None
        # Counters for /metrics.
        self.inbox_lines_total = 0
        self.inbox_refused_total = 0
        self.mailbox_dropped_total = 0
        self.mailbox_restored_total = 0
        self.mailbox_journal_errors_total = 0
        self.socket_connections_total = 0
        self.socket_requests_total = 0
        self.socket_errors_total = 0
        self.socket_clients_cut_total = 0
        self.socket_clients_refused_total = 0
        self.handler_requests_total = 0
        self.handler_timeouts_total = 0
        self.late_replies_total = 0
        self.broadcasts_total = 0
        self.registry_writes_total = 0
        self.internal_errors_total = 0
        self.abandoned_waits_total = 0

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.peeker = Peeker()
        try:
            os.makedirs(self.dir, exist_ok=True)
        except OSError as exc:
            raise ListenerError(f"cannot create the MOO dir {self.dir}: {exc.strerror}") \
                from None
        self._resolve_group()
        state = self._set_aside_corrupt(self.state_path, "saved Zgents", _check_state) or {}
        saved, written = state.get("zgents", {}), state.get("registry_sha256")
        self._set_aside_corrupt(self.registry_path, "registry",
                                lambda raw: _check_registry(raw, written))
        self._open_broadcast()
        specs = dict(zgents.check_table(self.config.tables.get("zgents", {})))
        for zgent_id, table in saved.items():
            if zgent_id not in specs:
                specs[zgent_id] = Spec.from_table(zgent_id, table, "command")
        for spec in specs.values():
            self._register_logged(spec)
        self._drop_orphan_mailboxes()
        self._write_registry()
        self._schedule_stale_check()

    async def stop(self) -> None:
        if self._stale_timer is not None:
            self._stale_timer.cancel()
        # Sockets systemd keeps in its fd store stay on disk: the next run takes them over.
        kept = self.fdstore.stored
        for pending in self.pending.take(lambda p: True):
            self._answer(pending, jsonrpc.error(pending.original_id, RpcCode.NOT_SERVING,
                                                "arqond is stopping"))
        for connection in list(self.connections):
            connection.end()
        for name, served in self.served.items():
            self._close_served(served, remove_socket=f"{name}.sock" not in kept)
            served.zgent.status = "offline"
            if served.journal is not None:
                served.journal.close()
        if self.peeker is not None:
            self.peeker.close()
        self._write_registry()
        if self.broadcast is not None:
            self.broadcast.close()
            self.broadcast = None

    def reload(self, config: Config) -> None:
        self.config = config
        for served in self.served.values():
            dropped = served.zgent.mailbox.resize(config.moo.mailbox_size)
            self.mailbox_dropped_total += dropped
            if dropped:
                self._journal_took(served, dropped)
        self._apply_config_zgents(zgents.check_table(config.tables.get("zgents", {})))
        self._changed()
        self._schedule_stale_check()

    def _apply_config_zgents(self, wanted: dict[str, Spec]) -> None:
        """[zgents.NAME] after a reload: new tables registered, removed ones unregistered,
        changed ones updated in place (their FIFO, socket and mailbox stay)."""
        for name, served in list(self.served.items()):
            if served.zgent.spec.source == "config" and name not in wanted:
                self.unregister(name)
        for name, spec in wanted.items():
            served = self.served.get(name)
            if served is None:
                self._register_logged(spec)
            elif served.zgent.spec != spec:
                served.zgent.spec = spec
                served.uids.clear()
                served.gids.clear()
                self._resolve_principals(served)

    def _resolve_group(self) -> None:
        name = self.config.moo.group
        self.gid = group_id(name)
        if self.gid is None:
            log.warning("group %r does not exist: MOO files keep arqond's group (create it, "
                        "or set moo.group)", name)

    def _set_aside_corrupt(self, path: str, what: str, check: Callable[[bytes], Any]) -> Any:
        """Read a JSON file arqond wrote earlier; a broken one is renamed to PATH.bad."""
        try:
            with open(path, "rb") as handle:
                return check(handle.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, ZgentError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            try:
                os.replace(path, path + ".bad")
            except OSError as move:
                reason += f"; cannot set it aside: {move.strerror}"
            log_event(log, logging.WARNING, "registry_corrupt",
                      f"{path}: unusable {what} ({reason}); kept as {path}.bad and rebuilt",
                      path=path)
            return None

    # -- mailboxes on disk ---------------------------------------------------------------

    def _mailbox_path(self, zgent_id: str) -> str:
        return os.path.join(self.mailbox_dir, f"{zgent_id}.jsonl")

    def _open_mailbox(self, served: Served) -> None:
        """Take back what NAME had not read (even after a kill -9), then keep it on disk."""
        path = self._mailbox_path(served.zgent.id)
        unread = self._set_aside_corrupt(path, "mailbox", mailboxes.replay) or []
        mailbox = served.zgent.mailbox
        for message in unread:
            if not mailbox.put(message):
                self.mailbox_dropped_total += 1
        self.mailbox_restored_total += len(unread)
        try:
            os.makedirs(self.mailbox_dir, mode=0o750, exist_ok=True)
            served.journal = MailboxLog(path, list(mailbox.messages))
        except OSError as exc:
            self._journal_failed(served, exc)

    def _journal_took(self, served: Served, count: int) -> None:
        if served.journal is not None:
            try:
                served.journal.took(served.zgent.mailbox.messages, count)
            except OSError as exc:
                self._journal_failed(served, exc)

    def _journal_failed(self, served: Served, exc: OSError) -> None:
        """Keep the mailbox in memory only: a file missing writes would replay wrong."""
        self.mailbox_journal_errors_total += 1
        name = served.zgent.id
        log.error("mailbox of %s no longer kept on disk (%s: %s): its unread messages will "
                  "not survive a restart", name, self._mailbox_path(name), exc.strerror)
        if served.journal is not None:
            served.journal.close()
            served.journal = None
        try:
            os.unlink(self._mailbox_path(name))
        except OSError:
            pass

    def _drop_orphan_mailboxes(self) -> None:
        """Mailbox files of Zgents gone from the configuration while arqond was down."""
        try:
            names = os.listdir(self.mailbox_dir)
        except FileNotFoundError:
            return
        for entry in names:
            zgent_id, dot, ext = entry.rpartition(".")
            if ext != "jsonl" or not dot or zgent_id in self.served:
                continue
            path = os.path.join(self.mailbox_dir, entry)
            try:
                with open(path, "rb") as handle:
                    count = len(mailboxes.replay(handle.read()))
            except (OSError, ValueError):
                count = 0
            log.warning("%d unread message(s) to %s dropped: %s is no longer registered",
                        count, zgent_id, zgent_id)
            try:
                os.unlink(path)
            except OSError as exc:
                log.error("cannot remove %s: %s", path, exc.strerror)

    def _open_broadcast(self) -> None:
        try:
            self.broadcast = BroadcastLog(os.path.join(self.dir, "broadcast.jsonl"),
                                          os.path.join(self.log_dir, "broadcast.jsonl"), self.gid)
        except NotOurs as exc:
            log_event(log, logging.ERROR, "file_refused", f"broadcast log off: {exc}")
            return
        try:
            os.makedirs(self.log_dir, exist_ok=True)
            self.broadcast.ensure_link()
        except (NotOurs, OSError) as exc:
            log_event(log, logging.ERROR, "file_refused", f"broadcast link: {exc}")

    # -- registration ---------------------------------------------------------------------

    def _paths(self, zgent_id: str) -> tuple[str, str, str]:
        return (os.path.join(self.dir, f"{zgent_id}-inbox"),
                os.path.join(self.dir, f"{zgent_id}.sock"),
                os.path.join(self.log_dir, f"{zgent_id}-narrative.jsonl"))

    def _register(self, spec: Spec) -> Served:
        """Create NAME-inbox and NAME.sock and start serving them (NotOurs if refused)."""
        inbox, sock_path, narrative = self._paths(spec.id)
        zgent = Zgent(spec, inbox, sock_path, narrative, time.time(),
                      mailbox=zgents.Mailbox(self.config.moo.mailbox_size))
        served = Served(zgent)
        self._resolve_principals(served)
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
        self._open_mailbox(served)
        assert self.loop is not None and self.peeker is not None
        served.reader = InboxReader(
            self.loop, inbox, fd, self.config.moo.max_line_bytes, self.peeker,
            on_line=lambda raw: self._fifo_line(spec.id, raw),
            on_refused=lambda reason, size: self._fifo_refused(spec.id, reason, size),
            on_error=lambda text: log_event(log, logging.ERROR, "file_refused",
                                            f"{inbox}: {text}; inbox closed", zgent=spec.id))
        served.sock = sock
        self.served[spec.id] = served
        self.retired.pop(spec.id, None)
        self.loop.create_task(self._serve_socket(served))
        log_event(log, logging.INFO, "zgent_registered",
                  f"Zgent {spec.id} registered ({spec.source})", zgent=spec.id)
        return served

    async def _serve_socket(self, served: Served) -> None:
        assert self.loop is not None
        if served.closed:
            return
        server = await self.loop.create_unix_server(
            lambda: ZgentConnection(self, served.zgent.id), sock=served.sock)
        if served.closed:  # unregistered or stopping while the server was being set up
            server.close()
        else:
            served.server = server

    def _resolve_principals(self, served: Served) -> None:
        spec = served.zgent.spec
        for user in spec.uids:
            try:
                served.uids.add(user if isinstance(user, int) else pwd.getpwnam(user).pw_uid)
            except KeyError:
                log.warning("Zgent %s: no user %r; ignored in uids", spec.id, user)
        for group in spec.groups:
            try:
                served.gids.add(group if isinstance(group, int) else grp.getgrnam(group).gr_gid)
            except KeyError:
                log.warning("Zgent %s: no group %r; ignored in groups", spec.id, group)

    def _close_served(self, served: Served, *, remove_socket: bool) -> None:
        served.closed = True
        if served.reader is not None:
            served.reader.close()
        if served.server is not None:
            served.server.close()
        elif served.sock is not None:
            served.sock.close()
        if remove_socket:
            files.remove_if(served.zgent.socket, stat.S_ISSOCK)
        for waiter in served.waiters:
            if waiter.timer is not None:
                waiter.timer.cancel()
        served.waiters.clear()

    def _register_logged(self, spec: Spec) -> bool:
        try:
            self._register(spec)
        except NotOurs as exc:
            log_event(log, logging.ERROR, "file_refused", f"Zgent {spec.id} not served: {exc}",
                      zgent=spec.id)
            return False
        return True

    def ensure_zgent(self, name: str, source: str) -> None:
        """Register NAME with default attributes unless it is served already."""
        zgents.check_name(name)
        if name not in self.served:
            if not self._register_logged(Spec.from_table(name, {}, source)):
                return
            self._write_registry()
        self.touch(name)

    def touch(self, name: str) -> None:
        """A sign of life from NAME: lastSeen now, status active."""
        served = self.served.get(name)
        if served is not None and served.zgent.touch(time.time()):
            self._changed()

    def unregister(self, name: str) -> dict[str, Any]:
        served = self.served.pop(name)
        zgent = served.zgent
        for pending in self.pending.take(lambda p: p.handler is served.handler):
            self._answer(pending, jsonrpc.error(pending.original_id, RpcCode.NOT_SERVING,
                                                f"{name} was unregistered"))
        for connection in [c for c in self.connections if c.zgent_id == name]:
            connection.end()
        self._close_served(served, remove_socket=True)
        files.remove_if(zgent.inbox, stat.S_ISFIFO)
        if served.journal is not None:
            served.journal.remove()
        self.fdstore.remove(f"{name}-inbox")
        self.fdstore.remove(f"{name}.sock")
        zgent.status = "offline"
        self.retired[name] = zgent.entry()
        log_event(log, logging.INFO, "zgent_unregistered", f"Zgent {name} unregistered",
                  zgent=name)
        self._write_registry()
        return self.retired[name]

    # -- registry -------------------------------------------------------------------------

    def entries(self) -> dict[str, dict[str, Any]]:
        entries = dict(self.retired)
        entries.update({name: s.zgent.entry() for name, s in self.served.items()})
        return entries

    def _changed(self) -> None:
        """Rewrite registry.json soon: status and lastSeen changes made in one loop turn
        become one write (registrations are written at once)."""
        if not self._flush_scheduled and self.loop is not None:
            self._flush_scheduled = True
            self.loop.call_soon(self._write_registry)

    def _write_registry(self) -> None:
        self._flush_scheduled = False
        document = zgents.registry_document(self.entries())
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
        try:
            files.write_atomically(self.registry_path, data, 0o644, self.gid)
            self.registry_writes_total += 1
        except OSError as exc:
            log.error("cannot write %s: %s", self.registry_path, exc.strerror)
        # Zgents registered at run time come back after a restart; the registry's digest
        # tells a file edited by hand from the one arqond left.
        saved = {"zgents": {name: s.zgent.spec.table() for name, s in sorted(self.served.items())
                            if s.zgent.spec.source != "config"},
                 "registry_sha256": hashlib.sha256(data).hexdigest()}
        try:
            os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
            files.write_atomically(self.state_path, orjson.dumps(saved) + b"\n", 0o644, None)
        except OSError as exc:
            log.error("cannot write %s: %s", self.state_path, exc.strerror)

    def _schedule_stale_check(self) -> None:
        if self._stale_timer is not None:
            self._stale_timer.cancel()
        if self.loop is not None:
            interval = max(0.5, min(self.config.moo.stale_after / 4, 60.0))
            self._stale_timer = self.loop.call_later(interval, self._stale_check)

    def _stale_check(self) -> None:
        now, window = time.time(), self.config.moo.stale_after
        changed = False
        for served in self.served.values():
            # An attached handler is a standing sign of life.
            if served.handler is not None:
                changed |= served.zgent.touch(now)
            else:
                changed |= served.zgent.check_stale(now, window)
        if changed:
            self._changed()
        self._schedule_stale_check()

    # -- messages to a Zgent ----------------------------------------------------------------

    def _fifo_line(self, name: str, raw: bytes) -> None:
        """JSON objects as they are, any other line as {"raw": line}; a line that fails inside
        arqond is logged, counted and delivered as raw, never lost."""
        try:
            obj = payload.loads(raw, self.config.server.max_json_depth)
        except PayloadError as exc:
            obj = None
            if exc.code != ErrorCode.INVALID_JSON:
                log_event(log, logging.WARNING, "line_malformed", f"{name}-inbox: "
                          f"{exc.message}; delivered as raw", zgent=name)
        text = raw.decode("utf-8", "replace")
        if not isinstance(obj, dict):
            obj = {"raw": text}
        try:
            self.inbox_line(name, obj)
        except Exception:
            self.internal_errors_total += 1
            log.exception("%s-inbox: a line failed inside arqond; delivered as raw", name)
            if obj.keys() != {"raw"}:
                self.inbox_line(name, {"raw": text})

    def _fifo_refused(self, name: str, reason: str, size: int) -> None:
        self.inbox_refused_total += 1
        log_event(log, logging.WARNING, "line_refused",
                  f"{name}-inbox: {size} byte(s) refused: {reason}", zgent=name)

    def inbox_line(self, name: str, obj: dict[str, Any]) -> None:
        """One message to NAME, exactly as if read from NAME-inbox."""
        served = self.served.get(name)
        if served is None:
            self.inbox_refused_total += 1
            log_event(log, logging.WARNING, "line_refused",
                      f"message to {name!r} refused: no such Zgent", zgent=name)
            return
        self.inbox_lines_total += 1
        sender = obj.get("from") if isinstance(obj.get("from"), str) else SERVER_SENDER
        self.bus.publish({"type": "message", "room": name, "channel": "inbox",
                          "sender": sender, "payload": obj, "metadata": {"zgent": name}})
        if self._fifo_request(served, obj):
            return
        self._deliver(served, obj)

    def _fifo_request(self, served: Served, obj: dict[str, Any]) -> bool:
        """Hand a request line with replyTo to NAME's handler; False to treat it as a message
        (no handler: a Zgent reading its inbox with arqon recv answers it)."""
        if not jsonrpc.is_request(obj) or "replyTo" not in obj or served.handler is None:
            return False
        try:
            jsonrpc.check_request(obj)
            reply_to = zgents.check_name(obj["replyTo"])
        except (RpcError, ZgentError) as exc:
            log_event(log, logging.WARNING, "line_refused",
                      f"{served.zgent.id}-inbox: request kept as a plain message: {exc}",
                      zgent=served.zgent.id)
            return False
        if reply_to not in self.served:
            log_event(log, logging.WARNING, "line_refused",
                      f"{served.zgent.id}-inbox: replyTo {reply_to!r} is not a registered "
                      "Zgent; request kept as a plain message", zgent=served.zgent.id)
            return False
        if "id" not in obj:
            self._forward(served, obj, None, None)
        else:
            # The requesting Zgent is the origin: its pending requests are capped like a
            # socket client's.
            self._forward(served, obj, lambda answer: self.inbox_line(reply_to, answer),
                          self.served[reply_to])
        return True

    def _deliver(self, served: Served, obj: dict[str, Any]) -> None:
        while served.waiters:
            waiter = served.waiters.pop(0)
            if waiter.timer is not None:
                waiter.timer.cancel()
            if waiter.connection.offer(jsonrpc.result(waiter.request_id, obj)):
                waiter.connection.finish_if_done()
                return
            # The waiter went away (socat's -t ran out, Ctrl-C): the message stays.
            self._abandoned(served, waiter.connection)
        mailbox = served.zgent.mailbox
        kept = mailbox.put(obj)
        if served.journal is not None:
            try:
                if kept:
                    served.journal.put(obj)
                else:
                    served.journal.put_over_oldest(obj, mailbox.messages)
            except OSError as exc:
                self._journal_failed(served, exc)
        if not kept:
            self.mailbox_dropped_total += 1
            if not mailbox.full_since_drain:
                mailbox.full_since_drain = True
                log_event(log, logging.WARNING, "mailbox_full",
                          f"mailbox of {served.zgent.id} full ({mailbox.size}): dropping the "
                          "oldest messages until it reads some", zgent=served.zgent.id)

    # -- JSON-RPC to a handler -------------------------------------------------------------

    def _forward(self, served: Served, request: dict[str, Any],
                 reply: jsonrpc.Reply | None, origin: object) -> None:
        handler = served.handler
        out = {"jsonrpc": "2.0", "method": request["method"]}
        if "params" in request:
            out["params"] = request["params"]
        if handler is None:
            if reply is not None:
                reply(jsonrpc.error(request.get("id"), RpcCode.NOT_SERVING,
                                    f"{served.zgent.id} is not serving: no handler attached "
                                    f"(arqon serve {served.zgent.id})"))
            return
        self.handler_requests_total += 1
        if reply is None:
            handler.write(out)
            return
        if origin is not None and self.pending.count_for(origin) >= MAX_PENDING_PER_CLIENT:
            reply(jsonrpc.error(request.get("id"), RpcCode.BUSY,
                                f"more than {MAX_PENDING_PER_CLIENT} requests waiting from "
                                "this client; wait for some replies"))
            return
        pending = Pending(request.get("id"), reply, origin, handler)
        internal = self.pending.add(pending)
        assert self.loop is not None
        pending.timer = self.loop.call_later(self.config.moo.handler_timeout,
                                             self._handler_timeout, internal, served.zgent.id)
        out["id"] = internal
        handler.write(out)

    def _handler_timeout(self, internal: str, name: str) -> None:
        pending = self.pending.pop(internal)
        if pending is None:
            return
        self.handler_timeouts_total += 1
        log.warning("Zgent %s: handler did not answer within %gs", name,
                    self.config.moo.handler_timeout)
        self._answer(pending, jsonrpc.error(
            pending.original_id, RpcCode.TIMEOUT,
            f"{name}'s handler did not answer within {self.config.moo.handler_timeout:g}s"))

    def _answer(self, pending: Pending, answer: dict[str, Any]) -> None:
        pending.reply(answer)
        if isinstance(pending.origin, ZgentConnection):
            pending.origin.finish_if_done()

    def _handler_reply(self, connection: ZgentConnection, obj: dict[str, Any]) -> None:
        pending = self.pending.pop(obj.get("id"))
        if pending is None or pending.handler is not connection:
            self.late_replies_total += 1
            log.debug("Zgent %s: reply to unknown or expired id %r dropped",
                      connection.zgent_id, obj.get("id"))
            return
        self.touch(connection.zgent_id)
        problem = jsonrpc.check_response(obj)
        if problem:
            log.warning("Zgent %s: handler sent an invalid reply: %s", connection.zgent_id,
                        problem)
            answer = jsonrpc.error(pending.original_id, RpcCode.INTERNAL_ERROR,
                                   f"{connection.zgent_id}'s handler sent an invalid reply: "
                                   f"{problem}")
        else:
            answer = {**obj, "jsonrpc": "2.0", "id": pending.original_id}
        self._answer(pending, answer)

    # -- socket connections -----------------------------------------------------------------

    def socket_connected(self, connection: ZgentConnection) -> None:
        self.socket_connections_total += 1
        limit = self.config.moo.max_clients
        if len(self.connections) >= limit:
            self.socket_clients_refused_total += 1
            log_event(log, logging.WARNING, "connection_refused",
                      f"{connection.zgent_id}.sock: client ({connection.peer}) refused: "
                      f"moo.max_clients ({limit}) reached", zgent=connection.zgent_id)
            connection.write(jsonrpc.error(None, RpcCode.BUSY, f"arqond serves {limit} Zgent "
                                           "socket clients already; try again later"))
            connection.open = False
            connection.transport.close()
            return
        self.connections.add(connection)

    def socket_gone(self, connection: ZgentConnection) -> None:
        self.connections.discard(connection)
        if connection.client is not None:
            self.bus.detach(connection.client, reason="socket closed")
        self.pending.take(lambda p: p.origin is connection)
        for pending in self.pending.take(lambda p: p.handler is connection):
            self._answer(pending, jsonrpc.error(
                pending.original_id, RpcCode.NOT_SERVING,
                f"{connection.zgent_id}'s handler went away before answering"))
        served = self.served.get(connection.zgent_id)
        if served is None:
            return
        served.waiters = [w for w in served.waiters if w.connection is not connection]
        if served.handler is connection:
            served.handler = None
            log.info("Zgent %s: handler detached (%s)", connection.zgent_id, connection.peer)
            if self.config.moo.offline_without_handler:
                served.zgent.status = "offline"
                self._changed()

    def socket_refused(self, connection: ZgentConnection, reason: str) -> None:
        self.socket_errors_total += 1
        log_event(log, logging.WARNING, "line_refused",
                  f"{connection.zgent_id}.sock: line refused: {reason}",
                  zgent=connection.zgent_id)
        connection.write(jsonrpc.error(None, RpcCode.INVALID_REQUEST, f"refused: {reason}"))

    def socket_too_slow(self, connection: ZgentConnection) -> None:
        self.socket_clients_cut_total += 1
        log_event(log, logging.WARNING, "client_slow",
                  f"{connection.zgent_id}.sock: client ({connection.peer}) fell more than "
                  f"{self.config.moo.client_buffer_bytes} bytes behind; disconnected",
                  zgent=connection.zgent_id)
        connection.close()

    def expecting(self, connection: ZgentConnection) -> bool:
        """Whether something is still due to a half-closed client."""
        if connection.wrap or self.pending.count_for(connection):
            return True
        served = self.served.get(connection.zgent_id)
        return served is not None and any(w.connection is connection for w in served.waiters)

    def socket_line(self, connection: ZgentConnection, raw: bytes) -> None:
        self.socket_requests_total += 1
        try:
            obj = jsonrpc.decode(raw, self.config.server.max_json_depth)
            if not jsonrpc.is_request(obj):
                if connection.serving and "id" in obj and "type" not in obj:
                    self._handler_reply(connection, obj)
                elif "type" in obj or "command" in obj:
                    self._bus_envelope(connection, raw)
                else:
                    raise RpcError(RpcCode.INVALID_REQUEST, 'invalid request: no "method" '
                                   '(and not a bus envelope: no "type")', obj.get("id"))
                return
            jsonrpc.check_request(obj)
            served = self.served.get(connection.zgent_id)
            if served is None:
                raise RpcError(RpcCode.NOT_SERVING, f"{connection.zgent_id} is unregistered",
                               obj.get("id"))
            method = obj["method"]
            if method.startswith("arqon."):
                self._arqon_method(connection, served, method, obj)
            elif "id" in obj:
                self._forward(served, obj, connection.write, connection)
            else:
                self._forward(served, obj, None, None)
        except RpcError as exc:
            self.socket_errors_total += 1
            connection.write(jsonrpc.error(exc.request_id, exc.code, exc.message))

    def _bus_client(self, connection: ZgentConnection) -> Client:
        if connection.client is None:
            connection.client = self.bus.attach(
                SocketSink(connection), "moo", welcome=False, join_default=False,
                peer=f"{connection.zgent_id}.sock {connection.peer}")
        return connection.client

    def _bus_envelope(self, connection: ZgentConnection, raw: bytes) -> None:
        self.bus.receive(self._bus_client(connection), raw)

    def _arqon_method(self, connection: ZgentConnection, served: Served, method: str,
                      obj: dict[str, Any]) -> None:
        request_id = obj.get("id")
        params = jsonrpc.params_dict(obj)
        name = served.zgent.id
        if method == "arqon.ping":
            value: Any = {"pong": True, "zgent": name, "timestamp": now_iso()}
        elif method == "arqon.info":
            value = served.zgent.entry()
        elif method == "arqon.history":
            value = self._history(name, params, request_id)
        elif method == "arqon.subscribe":
            value = self._subscribe(connection, name, params, request_id)
        elif method == "arqon.recv":
            self._recv(connection, served, params, request_id)
            return
        elif method == "arqon.serve":
            value = self._serve(connection, served, request_id)
        else:
            raise RpcError(RpcCode.METHOD_NOT_FOUND, f"method not found: {method} (arqon.ping, "
                           "arqon.info, arqon.history, arqon.subscribe, arqon.recv, "
                           "arqon.serve)", request_id)
        if "id" in obj:
            connection.write(jsonrpc.result(request_id, value))

    def _history(self, name: str, params: dict[str, Any], request_id: Any) -> dict[str, Any]:
        channel = params.get("channel")
        limit = params.get("limit", self.bus.settings.history_default_limit)
        if channel is not None and not isinstance(channel, str):
            raise RpcError(RpcCode.INVALID_PARAMS, "channel must be a string", request_id)
        if not isinstance(limit, int) or not 0 < limit <= self.bus.settings.history_size:
            raise RpcError(RpcCode.INVALID_PARAMS, "limit must be an integer from 1 to "
                           f"{self.bus.settings.history_size}", request_id)
        try:
            messages = self.bus.router.history(name, channel)
        except RoutingError:
            messages = []
        return {"room": name, "channel": channel, "messages": messages[-limit:]}

    def _subscribe(self, connection: ZgentConnection, name: str, params: dict[str, Any],
                   request_id: Any) -> dict[str, Any]:
        extra = params.get("channels", [])
        if not isinstance(extra, list) or not all(isinstance(t, str) for t in extra):
            raise RpcError(RpcCode.INVALID_PARAMS, 'channels must be a list of "room:channel"',
                           request_id)
        targets = [(name, "*")]
        for text in extra:
            room, channel = split_target(text, None)
            if room is None or channel is None:
                raise RpcError(RpcCode.INVALID_PARAMS, f'{text!r} is not "room:channel"',
                               request_id)
            targets.append((room, channel))
        client = self._bus_client(connection)
        try:
            for room, channel in targets:
                self.bus.router.join(client, room, channel)
        except RoutingError as exc:
            raise RpcError(RpcCode.INVALID_PARAMS, exc.message, request_id) from None
        connection.wrap = True
        self.touch(name)
        return {"subscribed": [f"{r}:{c}" for r, c in targets], "method": "arqon.message"}

    def _recv(self, connection: ZgentConnection, served: Served, params: dict[str, Any],
              request_id: Any) -> None:
        wait = params.get("wait", 0)
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or \
                not 0 <= wait <= MAX_RECV_WAIT:
            raise RpcError(RpcCode.INVALID_PARAMS, f"wait must be 0 to {MAX_RECV_WAIT:g} "
                           "seconds", request_id)
        self.touch(served.zgent.id)
        mailbox = served.zgent.mailbox
        message = mailbox.peek()
        if message is not None or wait == 0:
            # Taken out of the mailbox only once a live reader's socket has it.
            if not connection.offer(jsonrpc.result(request_id, message)):
                if message is not None:
                    self._abandoned(served, connection)
            elif message is not None:
                mailbox.get()
                self._journal_took(served, 1)
            return
        waiter = Waiter(connection, request_id)
        assert self.loop is not None
        waiter.timer = self.loop.call_later(wait, self._recv_expired, served, waiter)
        served.waiters.append(waiter)

    def _abandoned(self, served: Served, connection: ZgentConnection) -> None:
        self.abandoned_waits_total += 1
        log.info("Zgent %s: arqon.recv reader (%s) went away; the message stays in the "
                 "mailbox", served.zgent.id, connection.peer)
        connection.close()

    def _recv_expired(self, served: Served, waiter: Waiter) -> None:
        if waiter in served.waiters:
            served.waiters.remove(waiter)
            waiter.connection.write(jsonrpc.result(waiter.request_id, None))
            waiter.connection.finish_if_done()

    def _serve(self, connection: ZgentConnection, served: Served,
               request_id: Any) -> dict[str, Any]:
        name = served.zgent.id
        if not self._may_serve(connection, served):
            log_event(log, logging.WARNING, "policy_refusal",
                      f"Zgent {name}: arqon.serve refused to {connection.peer}: not among the "
                      "uids/groups allowed for it", zgent=name)
            raise RpcError(RpcCode.FORBIDDEN, f"uid {connection.uid} may not serve {name} "
                           f"(allowed: zgents.{name}.uids / .groups)", request_id)
        if served.handler is not None and served.handler is not connection:
            raise RpcError(RpcCode.BUSY, f"{name} already has a handler "
                           f"({served.handler.peer})", request_id)
        served.handler = connection
        connection.serving = True
        served.zgent.touch(time.time())
        self._changed()
        log.info("Zgent %s: handler attached (%s)", name, connection.peer)
        return {"serving": name}

    def _may_serve(self, connection: ZgentConnection, served: Served) -> bool:
        uid = connection.uid
        if uid in (0, os.getuid()) or uid in served.uids or connection.gid in served.gids:
            return True
        return bool(served.gids.intersection(group_ids(uid, connection.gid)))

    # -- what the layer plugs into the Bus ----------------------------------------------------

    def commands(self) -> dict[str, Command]:
        return {"zgent.register": Command(self._cmd_register, False,
                                          "register a Zgent: its inbox FIFO and socket"),
                "zgent.unregister": Command(self._cmd_unregister, False,
                                            "remove a Zgent's inbox and socket (offline)"),
                "zgent.list": Command(self._cmd_list, False,
                                      "the registered Zgents, as in registry.json")}

    def intercepts(self) -> dict[tuple[str, str], Any]:
        return {BROADCAST_TARGET: self._broadcast_from_bus}

    # -- broadcast --------------------------------------------------------------------------

    def _broadcast_from_bus(self, client: Client, env: dict[str, Any]) -> None:
        sender = client.screen_name or client.id
        try:
            line = zgents.broadcast_message(env.get("payload"), sender,
                                            zgents.iso_seconds(time.time()))
        except ZgentError as exc:
            raise RoutingError(ErrorCode.VALIDATION_ERROR, str(exc)) from None
        if self.broadcast is None:
            raise RoutingError(ErrorCode.EXECUTION_ERROR, "the broadcast log is not available "
                               "(see the arqond log for why)")
        try:
            offset = self.broadcast.append(line)
        except OSError as exc:
            raise RoutingError(ErrorCode.EXECUTION_ERROR, f"cannot append to the broadcast log: "
                               f"{exc}") from None
        self.broadcasts_total += 1
        if self.publish_broadcasts:
            self.bus.publish({"type": "event", "id": env["id"], "room": BROADCAST_TARGET[0],
                              "channel": BROADCAST_TARGET[1], "sender": line["from"],
                              "payload": line, "metadata": {"source": {
                                  "path": self.broadcast.link, "offset": offset}}},
                             exclude=client)

    # -- commands ---------------------------------------------------------------------------

    @staticmethod
    def _command_id(ctx: CommandContext) -> str:
        """The Zgent a command is about: args id (or zgent, or name), validated."""
        for key in ("id", "zgent", "name"):
            if key in ctx.args:
                try:
                    return zgents.check_name(ctx.args[key])
                except ZgentError as exc:
                    raise CommandError(ErrorCode.VALIDATION_ERROR, str(exc)) from None
        raise CommandError(ErrorCode.VALIDATION_ERROR, f"{ctx.name} requires argument 'id' (the "
                           "Zgent name, e.g. \"dreader\")")

    def _command_spec(self, ctx: CommandContext) -> Spec:
        zgent_id = self._command_id(ctx)
        table = {k: v for k, v in ctx.args.items() if k not in ("id", "zgent")}
        try:
            return Spec.from_table(zgent_id, table, "command")
        except ZgentError as exc:
            raise CommandError(ErrorCode.VALIDATION_ERROR, str(exc)) from None

    def _cmd_register(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        spec = self._command_spec(ctx)
        if spec.id in self.served:
            raise CommandError(ErrorCode.ZGENT_EXISTS, f"Zgent {spec.id} is already registered")
        try:
            served = self._register(spec)
        except NotOurs as exc:
            log_event(log, logging.ERROR, "file_refused", f"Zgent {spec.id} not registered: "
                      f"{exc}", zgent=spec.id)
            raise CommandError(ErrorCode.FILE_REFUSED, str(exc)) from None
        self._write_registry()  # on disk before the reply, so the caller can read it
        return f"Zgent {spec.id} registered", {"id": spec.id, **served.zgent.entry()}

    def _cmd_unregister(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        zgent_id = self._command_id(ctx)
        served = self.served.get(zgent_id)
        if served is None:
            raise CommandError(ErrorCode.NOT_FOUND, f"no registered Zgent {zgent_id}")
        if served.zgent.spec.source == "config":
            raise CommandError(ErrorCode.ZGENT_CONFIGURED, f"Zgent {zgent_id} comes from the "
                               f"configuration file ([zgents.{zgent_id}]); remove it there")
        return f"Zgent {zgent_id} unregistered", {"id": zgent_id, **self.unregister(zgent_id)}

    def _cmd_list(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        entries = self.entries()
        return f"{len(entries)} Zgent(s)", zgents.registry_document(entries)

    # -- introspection ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The "zgents" section of HTTP /status: registry entries, handler, mailbox depth."""
        return {"zgents": {name: {**entry, "handler": name in self.served and
                                  self.served[name].handler is not None,
                                  "mailbox": len(self.served[name].zgent.mailbox)
                                  if name in self.served else 0}
                           for name, entry in self.entries().items()}}

    def samples(self) -> list[Sample]:
        return [gauge("arqonbus_moo_zgents", "Zgents served now.", len(self.served)),
                *counters_of(self, "arqonbus_moo", MOO_COUNTERS)]


def _check_state(raw: bytes) -> dict[str, Any]:
    document = orjson.loads(raw)
    if not isinstance(document, dict) or not isinstance(document.get("zgents"), dict) \
            or not isinstance(document.get("registry_sha256"), str):
        raise ZgentError('expected {"zgents": {NAME: {...}}, "registry_sha256": "..."}')
    for zgent_id, table in document["zgents"].items():
        Spec.from_table(zgent_id, table, "command")
    return document


def _check_registry(raw: bytes, written_sha256: str | None) -> None:
    zgents.check_registry(orjson.loads(raw))
    if written_sha256 is not None and hashlib.sha256(raw).hexdigest() != written_sha256:
        raise ZgentError("changed since arqond wrote it (declare Zgents in [zgents.NAME] or "
                         "with arqon zgent register instead)")

