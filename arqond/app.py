"""The arqond daemon: the one place that knows every part and wires them together."""

from __future__ import annotations

import argparse
import asyncio
import grp
import logging
import os
import signal
import socket
import sys
from typing import Any, Awaitable, Callable, Protocol

from arqond import __version__
from arqond import config as configuration
from arqond.config import Config, ConfigError
from arqond.core.access import Access, Action, Who
from arqond.core.bus import Bus, BusSettings
from arqond.core.casil import Casil
from arqond.core.cron import Cron
from arqond.core.cursors import Cursors
from arqond.core.metrics import Sample, counter, counters_of, gauge
from arqond.core.quotas import Charges, limits_of
from arqond.core.store import Store
from arqond.core.omega import Omega
from arqond.core.webhooks import Webhooks
from arqond.moo.layer import MooLayer
from arqond.moo.tailer import NarrativeTailer, TailerError
from arqond.system import activation, daemonize, journal
from arqond.system.activation import Activation, ActivationError
from arqond.system.dirs import DirError, check_dirs
from arqond.system.fdstore import FdStore
from arqond.log import MESSAGE_IDS, NOTICE, Throttle, log_event
from arqond.principals import PrincipalResolver
from arqond.system.listeners import ListenerError, bind_tcp, describe
from arqond.system.notify import Notifier
from arqond.system.policy import CasilReloader
from arqond.transports.control import ControlAdapter
from arqond.transports.http import HttpAdapter
from arqond.transports.telemetry import TelemetryAdapter
from arqond.streams.adapter import StreamsAdapter, retention_of, storage_health, storage_report
from arqond.transports.timers import LoopTimers
from arqond.transports.webhooks import WebhookDelivery
from arqond.transports.websocket import WebSocketAdapter
from arqond.unix import bind_unix, remove_socket_file

log = logging.getLogger("arqond")

# Bus events worth a log line, with their level; the rest stay at debug.
EVENT_LEVELS = {"client_slow": logging.WARNING, "channel_created": logging.INFO,
                "channel_deleted": logging.INFO, "policy_refusal": logging.WARNING,
                "casil_reloaded": NOTICE, "access_refused": logging.WARNING,
                "limit_reached": logging.WARNING, "audit": NOTICE,
                "store_failed": logging.WARNING,
                "casil_internal_error": logging.ERROR}
# The parts that catch failures inside arqond (bugs) one frame, line or request at a time;
# /metrics counts each, zero included, as arqonbus_internal_errors_total{component}.
INTERNAL_ERROR_COMPONENTS = ("ws", "control", "http", "telemetry", "moo", "narrative", "casil",
                             "observer", "streams")
# SIGTERM to exit: every stop callback and adapter shares this budget (the contract is 5 s).
STOP_BUDGET = 4.0
# How often what waits for all clients is held against server.output_budget_bytes: a sum over
# every client, about 3 ms for 10,000 of them.
OUTPUT_CHECK_INTERVAL = 0.25
# How often STATUS= is refreshed when no watchdog asks for more.
STATUS_INTERVAL = 5.0

StopCallback = Callable[[], Awaitable[None]]


class Adapter(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def reload(self, config: Config) -> None: ...


def bus_settings(config: Config) -> BusSettings:
    room, _, channel = config.server.default_channel.partition(":")
    return BusSettings(default_room=room or None, default_channel=channel or None,
                       history_size=config.server.history_size,
                       history_bytes=config.server.history_bytes,
                       history_total_bytes=config.server.history_total_bytes,
                       max_json_depth=config.server.max_json_depth,
                       max_channels=config.server.max_channels,
                       client_buffer_bytes=config.server.client_buffer_bytes,
                       output_budget_bytes=config.server.output_budget_bytes,
                       max_pending_bytes=config.streams.max_pending_bytes,
                       on_full=config.streams.on_full)


def apply_access_settings(access: Access, config: Config) -> None:
    """The rules the configuration may relax (arqond/core/access.py)."""
    access.rules[Action.WEBHOOK] = Who.IDENTIFIED if config.webhooks.allow_non_admin \
        else Who.ADMIN


def control_listener(config: Config) -> socket.socket:
    """The control socket, mode 0660 and owned by the admin group when that group exists."""
    path = config.server.control_socket
    sock = bind_unix(path, 0o660)
    try:
        # Through the path, as unix.chmod_socket says why; never through a symbolic link.
        os.chown(path, -1, grp.getgrnam(config.server.admin_group).gr_gid,
                 follow_symlinks=False)
    except KeyError:
        pass  # no such group: the adapter warns that only root is admin
    except OSError as exc:
        log.warning("cannot give %s to group %s: %s", path, config.server.admin_group,
                    exc.strerror)
    return sock


class Daemon:
    def __init__(self, config: Config, overrides: dict[str, Any],
                 activated: Activation | None = None, notifier: Notifier | None = None,
                 readiness: daemonize.Readiness | None = None) -> None:
        self.config = config
        self.overrides = overrides
        self.bus = Bus(bus_settings(config), charges=Charges(limits_of(config.quotas)))
        self.bus.router.retention = retention_of(config)
        self.bus.plug(on_event=self._log_bus_event)
        self.adapters: list[Adapter] = []
        self.stopping = asyncio.Event()
        self.activation = activated or Activation()
        self.notifier = notifier or Notifier({})
        # Who waits for a detached arqond to be ready (--daemon); nobody in the foreground.
        self.readiness = readiness or daemonize.Readiness()
        # Fds systemd kept for us (FIFOs, Zgent sockets): the MOO layer takes them back by name.
        self.fdstore = FdStore(self.activation.stored, self.notifier)
        # Flush hooks run on SIGTERM before the adapters stop (checkpoints, registry, ...).
        self.stop_callbacks: list[StopCallback] = []
        self.addresses: dict[str, str] = {}
        # Unix socket files bound here (not systemd's, which outlive arqond): removed at stop.
        self.bound_paths: list[str] = []
        # "starting", "ready" or "stopping": /health answers 200 only when "ready".
        self.state = "starting"
        self.principals = PrincipalResolver(config)
        self.limit_lines = Throttle()
        # internal_error events by component; the MOO layer, the tailer and CASIL count their
        # own (internal_error_samples adds them).
        self.internal_errors = dict.fromkeys(INTERNAL_ERROR_COMPONENTS, 0)
        self.tailer: NarrativeTailer | None = None
        self._add_operator_lane()

    def _add_operator_lane(self) -> None:
        """The op.* commands beyond op.store/history: CASIL, webhooks, cron, Tier-Omega."""
        bus = self.bus
        # Kept as attributes for their counters (*_total), which /metrics can export.
        self.casil = Casil(bus, configuration.casil_policy(self.config.values))
        self.omega = Omega(bus, self.config.omega)
        self.timers = LoopTimers()
        bus.timers = self.timers
        self.cron = Cron(bus, self.timers, self.config.cron)
        self.store = Store(self.config.store, bus.charges)
        bus.plug(commands=self.store.commands())
        webhooks = Webhooks(self.config.webhooks, bus.charges)
        self.webhooks = webhooks
        self.webhook_delivery = WebhookDelivery(webhooks, self.config.webhooks)
        apply_access_settings(bus.access, self.config)
        bus.plug(commands=self.casil.commands(), inspector=self.casil)
        bus.plug(commands=self.omega.commands())
        bus.plug(commands=self.cron.commands(), on_event=self.cron.on_event)
        self.cursors = Cursors(bus, self.timers, self.config.streams.max_cursors)
        bus.plug(commands=self.cursors.commands(), on_event=self.cursors.on_event)
        bus.plug(commands=webhooks.commands(), on_event=webhooks.on_event,
                 on_message=self.webhook_delivery.on_message)
        self.adapters += [CasilReloader(self.casil, self.config), self.webhook_delivery,
                          self.timers]

    def _log_bus_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "internal_error":
            component = fields["component"]  # a transport name, for a bus client's frame
            self.internal_errors[component] = self.internal_errors.get(component, 0) + 1
            # Emitted from the except block that caught the failure: exc_info is its traceback.
            log.error("internal error in %s while handling %s%s; that one record was dropped, "
                      "the connection kept", component, fields["where"],
                      f" of client {fields['client_id']}" if fields["client_id"] else "",
                      exc_info=True)
            return
        level = EVENT_LEVELS.get(event, logging.DEBUG)
        fields = dict(fields)
        text = fields.pop("text", None) or event.replace("_", " ")
        if event == "limit_reached":
            due, count = self.limit_lines(fields["limit"])
            if not due:
                return
            text = f"{fields['limit']} ({fields['value']}) reached ({count} time(s) so far)"
        if event in MESSAGE_IDS:
            log_event(log, level, event, text, **fields)
        elif log.isEnabledFor(level):
            log.log(level, "%s %s", event.replace("_", " "),
                    " ".join(f"{k}={v}" for k, v in fields.items()))

    async def run(self) -> int:
        try:
            await self._start()
        except (DirError, ListenerError, TailerError) as exc:
            log.error("%s", exc)
            self.readiness.failed(str(exc))
            await self._stop()
            return 1
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        tasks = [asyncio.create_task(self._log_stats()), asyncio.create_task(self._heartbeat()),
                 asyncio.create_task(self._trim_output())]
        self._announce_ready()
        await self.stopping.wait()
        self.state = "stopping"
        self.notifier.stopping()
        log_event(log, NOTICE, "stopping", "arqond stopping")
        for task in tasks:
            task.cancel()
        await self._stop()
        return 0

    def listener(self, name: str, bind_fallback: Callable[[], socket.socket]) -> socket.socket:
        """The listening socket for ``name``: systemd's when socket-activated, else our own."""
        sock = self.activation.listeners.pop(name, None)
        origin = "from systemd"
        if sock is None:
            sock = bind_fallback()
            origin = "bound"
            if sock.family == socket.AF_UNIX:
                self.bound_paths.append(sock.getsockname())
        self.addresses[name] = address = describe(sock)
        log_event(log, logging.INFO, "listener_up", f"listening {name} on {address} ({origin})",
                  listener=name, address=address)
        return sock

    async def _start(self) -> None:
        server, config = self.config.server, self.config
        # Before any file is made: nobody else may be able to replace them (moo.dir_check).
        check_dirs(config)
        # Every listener is systemd's under socket activation, else bound here.
        ws_sock = self.listener("ws", lambda: bind_tcp(server.host, server.port))
        telemetry_sock = self.listener(
            "telemetry", lambda: bind_tcp(server.host, server.telemetry_port))
        http_sock = self.listener("http", lambda: bind_tcp(server.host, server.http_port))
        control_sock = self.listener("control", lambda: control_listener(config))
        ws_socks = [ws_sock]
        if server.bus_socket or "bus" in self.activation.listeners:
            # Anyone local may connect (0666): the kernel tells the bus who it is.
            ws_socks.append(self.listener("bus", lambda: bind_unix(server.bus_socket, 0o666)))
        bus = self.bus
        principals = self.principals
        # First to start, last to stop: the channels it kept exist before anyone connects,
        # and what is queued is stored when everything else has stopped.
        streams: StreamsAdapter | Any = None
        cluster = None
        if config.cluster.nats_url:
            # The cluster's store in place of the node's own; only now is NATS loaded.
            try:
                from arqond.cluster.adapter import ClusterAdapter
            except ImportError as exc:
                raise ListenerError(f"cluster.nats_url is set, but the NATS client cannot be "
                                    f"loaded ({exc}): install nats-py (pip install "
                                    "'arqond[cluster]')") from None
            local = StreamsAdapter(bus, config, self.cursors, ClusterAdapter.mirror_file)
            streams = cluster = ClusterAdapter(bus, config, self.cursors, local)
        elif config.streams.durability != "memory":
            streams = StreamsAdapter(bus, config, self.cursors)
        if streams is not None:
            self.adapters.append(streams)
        self.moo = MooLayer(bus, config, self.fdstore, self.timers, principals)
        bus.plug(commands=self.moo.commands(), intercepts=self.moo.intercepts())
        self.http = HttpAdapter(bus, config, http_sock, principals=principals,
                                state=lambda: self.state, listeners=self.addresses)
        websocket = WebSocketAdapter(bus, config, ws_socks, principals)
        telemetry = TelemetryAdapter(bus, config, telemetry_sock)
        bus.plug(on_event=telemetry.on_event, on_message=telemetry.on_message)
        control = ControlAdapter(bus, config, control_sock, principals)
        self.adapters += [websocket, self.moo]
        if cluster is not None:     # after the MOO layer, whose files it makes
            self.adapters.append(cluster.share_zgents(self.moo))
        self.adapters += [telemetry, self.http, control]
        # What reports through HTTP: counters on /metrics, sections of /status.
        self.http.metric_sources += [websocket.samples, self.moo.samples, telemetry.samples,
                                     self.http.samples, control.samples,
                                     self._operator_lane_samples, self._internal_error_samples]
        self.http.status_providers += [self.moo.status, telemetry.status, control.status]
        # ArqonBus's views and admin acts on the HTTP port (arqond(8) HTTP).
        # A cluster's figures are those of the node's copy of its stream.
        store = cluster.mirror if cluster is not None else \
            streams.store if streams is not None else None
        backend = "jetstream" if cluster is not None else "sqlite" if store is not None else \
            "memory"
        self.http.status_providers.append(
            lambda: {"storage": storage_health(bus, backend)})
        self.http.reports.update(
            storage=lambda: storage_report(bus, self.config, store, backend, self.store),
            telemetry_events=telemetry.performance, telemetry_stats=telemetry.health)
        self.http.admin_acts.update(shutdown=self.stopping.set, restart=self.reload)
        self.http.fault_sources += [self.moo.faults, self._store_faults]
        if streams is not None:
            self.http.metric_sources.append(streams.samples)
        if cluster is not None:
            bus.plug(on_message=cluster.presence.on_message)
            self.http.status_providers.append(cluster.status)
            self.http.fault_sources.append(cluster.faults)
        if config.narrative.enabled:
            # The tailer publishes broadcast.jsonl through its LOG_DIR link, so the MOO layer
            # only appends to it; otherwise every broadcast would go out twice. It starts
            # after the MOO layer, which makes that link.
            self.moo.publish_broadcasts = False
            self.tailer = NarrativeTailer(bus, config, on_zgent_seen=self._zgent_seen,
                                          on_query=self.moo.inbox_line,
                                          on_reply=self.moo.inbox_line)
            self.adapters.append(self.tailer)
            self.http.metric_sources.append(self.tailer.samples)
            self.http.fault_sources.append(self.tailer.faults)
        for adapter in self.adapters:
            await adapter.start()

    def _store_faults(self) -> list[str]:
        lost = self.bus.store_lost
        return [f"streams store: {lost}; going on in memory until arqond restarts"] \
            if lost else []

    def _operator_lane_samples(self) -> list[Sample]:
        return [*counters_of(self.casil, "arqonbus_casil", {
                    "inspected_total": "Frames inspected by CASIL.",
                    "blocked_total": "Frames CASIL blocked.",
                    "redacted_total": "Frames CASIL redacted."}),
                *counters_of(self.webhook_delivery, "arqonbus_webhook", {
                    "delivered_total": "Webhook POSTs answered 2xx.",
                    "failed_total": "Webhook POSTs that failed, each logged.",
                    "dropped_total": "Webhook deliveries dropped at the queue bound.",
                    "refused_total": "Webhook POSTs not made: the host resolved to an address "
                                     "webhooks.allowed_destinations does not allow.",
                    "loops_total": "Messages not sent to webhooks again at webhooks.max_hops."
                    }),
                *counters_of(self.cron, "arqonbus_cron", {
                    "fired_total": "op.cron messages published."}),
                gauge("arqonbus_cursors", "Named cursors kept (streams.max_cursors).",
                      len(self.cursors.positions)),
                *counters_of(self.cursors, "arqonbus_cursors", {
                    "refused_total": "New cursors refused at streams.max_cursors."}),
                *counters_of(self.omega, "arqonbus_omega", {
                    "events_dropped_total": "Omega events dropped at omega.max_events."}),
                *counters_of(self.store, "arqonbus_store", {
                    "refused_total": "op.store writes refused at a store bound or quota."}),
                gauge("arqonbus_store_keys", "Keys op.store holds.", self.store.keys),
                gauge("arqonbus_store_bytes", "Bytes of values op.store holds.",
                      self.store.bytes),
                *(counter("arqonbus_quota_refusals_total",
                          "Requests refused at a principal's quota ([quotas]).", count,
                          quota=quota.value)
                  for quota, count in sorted(self.bus.charges.refused.items()))]

    def _internal_error_samples(self) -> list[Sample]:
        counts = dict(self.internal_errors)
        counts["moo"] += self.moo.zgents.internal_errors_total  # inbox and socket lines
        counts["casil"] += self.casil.internal_errors_total  # decided by default_decision
        if self.tailer is not None:
            counts["narrative"] += self.tailer.internal_errors
        return [counter("arqonbus_internal_errors_total",
                        "Failures inside arqond (bugs) caught while handling one frame, line or "
                        "request, each logged with where it happened; the connection was kept.",
                        count, component=component) for component, count in counts.items()]

    def _zgent_seen(self, name: str, new_file: bool) -> None:
        """A narrative file registers its Zgent; each new line refreshes its lastSeen."""
        if new_file:
            self.moo.ensure_zgent(name)
        else:
            self.moo.touch(name)

    def _announce_ready(self) -> None:
        """The last step of startup: everything is serving, so tell systemd and the log."""
        for name, sock in self.activation.listeners.items():
            # systemd keeps its own copy, so closing ours refuses nothing that was queued
            # for a later arqond that serves it.
            log_event(log, logging.WARNING, "listener_unserved",
                      f"socket activation passed a {name!r} listener that nothing here serves",
                      listener=name, address=describe(sock))
            sock.close()
        self.activation.listeners.clear()
        for name in self.activation.duplicates:
            log.warning("fd store held more than one fd named %r; kept the first", name)
        for name in self.fdstore.close_unclaimed():
            log.warning("fd store entry %r was not claimed by any part; dropped it", name)
        self.state = "ready"
        self.notifier.ready(self.status_line())
        self.readiness.ready()
        log_event(log, NOTICE, "ready", f"arqond {__version__} ready")

    def status_line(self) -> str:
        snapshot = self.bus.snapshot()
        serving = ", ".join(f"{name} {address}" for name, address in self.addresses.items())
        return (f"{snapshot['connections']['active']} client(s), "
                f"{snapshot['messages']['total']} message(s); serving {serving}")

    async def _heartbeat(self) -> None:
        """WATCHDOG=1 from the event loop itself, so a stuck loop stops the pings and systemd
        restarts us; STATUS= rides along when it changed."""
        interval = min(self.notifier.watchdog_interval or STATUS_INTERVAL, STATUS_INTERVAL)
        while True:
            if self.notifier.watchdog_interval:
                self.notifier.watchdog()
            self.notifier.status(self.status_line())
            await asyncio.sleep(interval)

    async def _stop(self) -> None:
        deadline = asyncio.get_running_loop().time() + STOP_BUDGET
        steps = [*self.stop_callbacks, *(adapter.stop for adapter in reversed(self.adapters))]
        for step in steps:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(step(), max(remaining, 0.1))
            except asyncio.TimeoutError:
                log.warning("shutdown step %s overran the %.0f s stop budget; cut short",
                            getattr(step, "__qualname__", step), STOP_BUDGET)
            except Exception:
                log.exception("shutdown step %s failed", getattr(step, "__qualname__", step))
        for path in self.bound_paths:
            remove_socket_file(path)

    def reload(self) -> None:
        self.notifier.reloading()
        try:
            self._reload()
        finally:
            self.notifier.ready(self.status_line())

    def _reload(self) -> None:
        try:
            fresh = configuration.load(self.config.path, overrides=self.overrides)
        except ConfigError as exc:
            log_event(log, logging.ERROR, "reload_failed",
                      f"reload refused, keeping the running configuration: {exc}")
            return
        fixed = [key for key in fresh.changed_keys(self.config)
                 if not configuration.OPTIONS[key].reload]
        journal.set_level(fresh.server.log_level)
        settings = bus_settings(fresh)
        self.bus.settings.default_room = settings.default_room
        self.bus.settings.default_channel = settings.default_channel
        self.bus.settings.max_json_depth = settings.max_json_depth
        self.bus.settings.max_channels = settings.max_channels
        self.bus.settings.client_buffer_bytes = settings.client_buffer_bytes
        self.bus.settings.output_budget_bytes = settings.output_budget_bytes
        self.bus.settings.max_pending_bytes = settings.max_pending_bytes
        self.bus.settings.on_full = settings.on_full
        self.bus.router.retention = retention_of(fresh)
        self.cursors.max_cursors = fresh.streams.max_cursors
        for key in ("history_size", "history_bytes", "history_total_bytes"):
            setattr(self.bus.settings, key, getattr(settings, key))
        self.bus.router.histories.resize(self.bus.settings.history_limits())
        self.bus.charges.limits = limits_of(fresh.quotas)
        self.store.settings = fresh.store
        self.cron.settings = fresh.cron
        self.webhooks.settings = fresh.webhooks
        apply_access_settings(self.bus.access, fresh)
        self.principals.reload(fresh)
        for adapter in self.adapters:
            adapter.reload(fresh)
        self.config = fresh
        note = f"; restart to apply {', '.join(fixed)}" if fixed else ""
        log_event(log, NOTICE, "reloaded", f"configuration reloaded{note}")

    async def _trim_output(self) -> None:
        while True:
            await asyncio.sleep(OUTPUT_CHECK_INTERVAL)
            self.bus.trim_output()

    async def _log_stats(self) -> None:
        while True:
            await asyncio.sleep(self.config.server.stats_interval)
            snapshot = self.bus.snapshot()
            log_event(log, logging.INFO, "stats",
                      f"stats: {snapshot['connections']['active']} client(s), "
                      f"{snapshot['rooms']} room(s), {snapshot['channels']} channel(s), "
                      f"{snapshot['messages']['total']} message(s)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="arqond", description="Local message bus: ArqonBus WebSockets and tmuxMOO Zgents.")
    parser.add_argument("--config", metavar="FILE",
                        help=f"configuration file (default {configuration.DEFAULT_CONFIG_PATH})")
    for option in configuration.SCHEMA:
        if option.flag:
            parser.add_argument(option.flag, dest=option.key, metavar=option.name.upper(),
                                help=f"{option.doc} [{option.key}]")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration and exit 0, or 1 naming the bad key")
    parser.add_argument("--daemon", action="store_true",
                        help="detach from the terminal (double fork) for inits without systemd; "
                             "logs go to syslog")
    parser.add_argument("--pidfile", metavar="PATH",
                        help="write the process id to PATH, removed on exit; refuse to start "
                             "while PATH names a live process")
    parser.add_argument("--version", action="version", version=f"arqond {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.config:
        # SIGHUP re-reads this path, and a detached daemon runs in /.
        args.config = os.path.abspath(args.config)
    overrides = {option.key: getattr(args, option.key) for option in configuration.SCHEMA
                 if option.flag and getattr(args, option.key) is not None}
    try:
        config = configuration.load(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"arqond: {exc}", file=sys.stderr)
        return 1
    if args.check_config:
        print(f"arqond: configuration OK ({config.path or 'built-in defaults'})")
        return 0
    try:
        scope, readiness = daemonize.context(args.pidfile, args.daemon)
    except daemonize.PidfileError as exc:
        print(f"arqond: {exc}", file=sys.stderr)
        return 1
    with scope:
        journal.setup(config.server.log_level, syslog=args.daemon)
        logging.getLogger("arqond.ws.library").setLevel(logging.WARNING)
        try:
            activated = activation.take()
        except ActivationError as exc:
            log_event(log, logging.ERROR, "activation_refused", str(exc))
            readiness.failed(str(exc))
            return 1
        try:
            return run_loop(Daemon(config, overrides, activated, Notifier(), readiness).run(),
                            config.server.event_loop, readiness)
        except Exception as exc:
            readiness.failed(f"{type(exc).__name__}: {exc}")  # the traceback goes to the log
            raise


def run_loop(main_coroutine: Any, event_loop: str, readiness: daemonize.Readiness) -> int:
    """Run on the configured event loop; uvloop is optional, so its absence is a clear error."""
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            main_coroutine.close()
            reason = ("server.event_loop = \"uvloop\" but the uvloop package is not installed "
                      "(pip install 'arqond[uvloop]')")
            print(f"arqond: {reason}", file=sys.stderr)
            readiness.failed(reason)
            return 1
        return uvloop.run(main_coroutine)
    return asyncio.run(main_coroutine)
