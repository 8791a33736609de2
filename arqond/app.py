"""The arqond daemon: the one place that knows every part and wires them together."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any, Protocol

from arqond import __version__
from arqond import config as configuration
from arqond.config import Config, ConfigError
from arqond.core.bus import Bus, BusSettings
from arqond.system import journal
from arqond.system.journal import NOTICE, log_event
from arqond.system.listeners import ListenerError, bind_tcp, describe
from arqond.transports.websocket import WebSocketAdapter

log = logging.getLogger("arqond")

# Bus events worth a log line, with their level; the rest stay at debug.
EVENT_LEVELS = {"client_slow": logging.WARNING, "channel_created": logging.INFO,
                "channel_deleted": logging.INFO}


class Adapter(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def reload(self, config: Config) -> None: ...


def bus_settings(config: Config) -> BusSettings:
    room, _, channel = config.server.default_channel.partition(":")
    return BusSettings(default_room=room or None, default_channel=channel or None,
                       history_size=config.server.history_size)


class Daemon:
    def __init__(self, config: Config, overrides: dict[str, Any]) -> None:
        self.config = config
        self.overrides = overrides
        self.bus = Bus(bus_settings(config))
        self.bus.listeners.append(self._log_bus_event)
        self.adapters: list[Adapter] = []
        self.stopping = asyncio.Event()

    def _log_bus_event(self, event: str, fields: dict[str, Any]) -> None:
        level = EVENT_LEVELS.get(event, logging.DEBUG)
        if event in journal.MESSAGE_IDS:
            log_event(log, level, event, event.replace("_", " "), **fields)
        elif log.isEnabledFor(level):
            log.log(level, "%s %s", event.replace("_", " "),
                    " ".join(f"{k}={v}" for k, v in fields.items()))

    async def run(self) -> int:
        try:
            await self._start()
        except ListenerError as exc:
            log.error("%s", exc)
            await self._stop()
            return 1
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        stats = asyncio.create_task(self._log_stats())
        log_event(log, NOTICE, "ready", f"arqond {__version__} ready")
        await self.stopping.wait()
        log_event(log, NOTICE, "stopping", "arqond stopping")
        stats.cancel()
        await self._stop()
        return 0

    async def _start(self) -> None:
        server = self.config.server
        ws_sock = bind_tcp(server.host, server.port)
        self.adapters.append(WebSocketAdapter(self.bus, self.config, ws_sock))
        for adapter in self.adapters:
            await adapter.start()
        log_event(log, logging.INFO, "listener_up", f"listening ws on {describe(ws_sock)}",
                  listener="ws", address=describe(ws_sock))

    async def _stop(self) -> None:
        for adapter in reversed(self.adapters):
            await adapter.stop()

    def reload(self) -> None:
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
        for adapter in self.adapters:
            adapter.reload(fresh)
        self.config = fresh
        note = f"; restart to apply {', '.join(fixed)}" if fixed else ""
        log_event(log, NOTICE, "reloaded", f"configuration reloaded{note}")

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
    parser.add_argument("--version", action="version", version=f"arqond {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    journal.setup(config.server.log_level)
    logging.getLogger("arqond.ws.library").setLevel(logging.WARNING)
    return run_loop(Daemon(config, overrides).run(), config.server.event_loop)


def run_loop(main_coroutine: Any, event_loop: str) -> int:
    """Run on the configured event loop; uvloop is optional, so its absence is a clear error."""
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            main_coroutine.close()
            print("arqond: server.event_loop = \"uvloop\" but the uvloop package is not "
                  "installed (pip install 'arqond[uvloop]')", file=sys.stderr)
            return 1
        return uvloop.run(main_coroutine)
    return asyncio.run(main_coroutine)
