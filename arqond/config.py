"""Configuration: built-in defaults < TOML file < ARQONBUS_* environment < command-line flags.

SCHEMA is the single list of every option; the man page test reads it too, so an option added
here and missing from arqond.conf(5) fails the suite.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Mapping

DEFAULT_CONFIG_PATH = "/etc/arqond/arqond.toml"
LOG_LEVELS = ("debug", "info", "notice", "warning", "error")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class ConfigError(Exception):
    """A configuration value that cannot be used; the text names the key, the source, why."""


@dataclass(frozen=True)
class Option:
    key: str                      # "section.name"
    kind: type
    default: Any
    doc: str
    reload: bool = False          # whether SIGHUP applies a new value
    flag: str | None = None       # command-line flag, if any
    env: tuple[str, ...] = ()     # extra environment names besides ARQONBUS_SECTION_NAME
    check: Callable[[Any], str | None] | None = None  # returns a complaint or None

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]

    @property
    def env_names(self) -> tuple[str, ...]:
        return ("ARQONBUS_" + self.key.replace(".", "_").upper(),) + self.env


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a port number from 0 to 65535"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _absolute(value: str) -> str | None:
    return None if value.startswith("/") else "must be an absolute path"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"
    return check


def _target_or_empty(value: str) -> str | None:
    if value == "":
        return None
    room, sep, channel = value.partition(":")
    return None if sep and room and channel else 'must be "room:channel" or "" (off)'


SCHEMA: tuple[Option, ...] = (
    Option("server.host", str, "127.0.0.1", "Address the WebSocket, telemetry and HTTP "
           "listeners bind when not socket-activated.", flag="--host",
           env=("ARQONBUS_HOST",)),
    Option("server.port", int, 9100, "WebSocket bus port; 0 picks a free port.",
           flag="--port", env=("ARQONBUS_PORT",), check=_port),
    Option("server.state_dir", str, "/var/lib/arqond", "Durable state: checkpoints and the "
           "like.", flag="--state-dir", check=_absolute),
    Option("server.log_level", str, "info", "Least severe log level written.", reload=True,
           flag="--log-level", env=("ARQONBUS_LOG_LEVEL",), check=_one_of(*LOG_LEVELS)),
    Option("server.max_message_size", int, 1048576, "Largest inbound WebSocket frame in bytes; "
           "a larger one closes the connection with 1009.", env=("ARQONBUS_MAX_MESSAGE_SIZE",),
           check=_positive),
    Option("server.max_connections", int, 20000, "WebSocket clients served at once; one more "
           "is refused with HTTP 503.", reload=True, env=("ARQONBUS_MAX_CONNECTIONS",),
           check=_positive),
    Option("server.client_buffer_bytes", int, 4194304, "Bytes that may wait unsent for one "
           "client; a client that falls further behind is cut off with close code 4008.",
           reload=True, check=_positive),
    Option("server.ping_interval", float, 20.0, "Seconds between WebSocket keepalive pings.",
           check=_positive),
    Option("server.ping_timeout", float, 20.0, "Seconds to wait for a pong before closing.",
           check=_positive),
    Option("server.default_channel", str, "science:general", 'Channel every new client joins '
           'and uses as its current channel; "" turns auto-join off.', reload=True,
           check=_target_or_empty),
    Option("server.event_loop", str, "asyncio", 'Event loop implementation: "asyncio", or '
           '"uvloop" (faster fan-out; needs the uvloop package, the "uvloop" extra).',
           env=("ARQONBUS_EVENT_LOOP",), check=_one_of("asyncio", "uvloop")),
    Option("server.history_size", int, 500, "Messages kept per channel for history.",
           env=("ARQONBUS_HISTORY_SIZE",), check=_positive),
    Option("server.stats_interval", float, 60.0, "Seconds between statistics log lines.",
           reload=True, check=_positive),
    Option("auth.enabled", bool, False, "Require an HS256 JWT at the WebSocket handshake.",
           reload=True, env=("ARQONBUS_ENABLE_AUTH",)),
    Option("auth.jwt_secret", str, "", "Shared secret for HS256 tokens; required when "
           "auth.enabled is true.", reload=True),
    Option("moo.dir", str, "/var/moo", "MOO runtime dir: inbox FIFOs, Zgent sockets, registry, "
           "broadcast log.", flag="--moo-dir", env=("ARQONBUS_MOO_DIR",), check=_absolute),
    Option("moo.log_dir", str, "/var/log/moo", "Watched narrative log dir.",
           flag="--log-dir", env=("ARQONBUS_LOG_DIR",), check=_absolute),
)

OPTIONS: dict[str, Option] = {option.key: option for option in SCHEMA}
SECTIONS = tuple(dict.fromkeys(option.section for option in SCHEMA))


@dataclass
class Config:
    values: dict[str, Any]
    path: str | None = None
    tables: dict[str, Any] = field(default_factory=dict)  # free-form tables, e.g. [zgents.*]

    def __getattr__(self, section: str) -> SimpleNamespace:
        if section not in SECTIONS:
            raise AttributeError(section)
        prefix = section + "."
        return SimpleNamespace(**{k[len(prefix):]: v for k, v in self.values.items()
                                  if k.startswith(prefix)})

    def get(self, key: str) -> Any:
        return self.values[key]

    def changed_keys(self, other: "Config") -> list[str]:
        return sorted(k for k in self.values if self.values[k] != other.values.get(k))


# Tables the schema does not list but another part of arqond validates (name -> validator).
TABLE_VALIDATORS: dict[str, Callable[[Any], None]] = {}


def _coerce(option: Option, value: Any, source: str, *, text: bool = False) -> Any:
    """Check a value against its option; ``text`` values (environment, flags) are parsed."""
    kind = option.kind
    if text and isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        try:
            if kind is bool:
                if text in TRUE_WORDS:
                    value = True
                elif text in FALSE_WORDS:
                    value = False
                else:
                    raise ValueError
            else:
                value = kind(text)
        except ValueError:
            raise ConfigError(f"{source}: {option.key}: {value!r} is not {_kind_name(kind)}") \
                from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {option.key}: must be {_kind_name(kind)}, "
                          f"not {type(value).__name__} {value!r}")
    if option.check is not None:
        complaint = option.check(value)
        if complaint:
            raise ConfigError(f"{source}: {option.key}: {complaint} (got {value!r})")
    return value


def _kind_name(kind: type) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}[kind]


def read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def load(path: str | None = None, *, environ: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> Config:
    """Build the effective configuration.

    ``path`` None means the default file, which may be absent; an explicit path must exist.
    ``overrides`` are command-line values keyed "section.name".
    """
    environ = os.environ if environ is None else environ
    values = {option.key: option.default for option in SCHEMA}
    tables: dict[str, Any] = {}
    explicit = path is not None
    path = path or environ.get("ARQONBUS_CONFIG") or DEFAULT_CONFIG_PATH
    if explicit or os.path.exists(path):
        document = read_file(path)
        _apply_document(document, values, tables, path)
    else:
        path = None
    for option in SCHEMA:
        for name in option.env_names:
            if name in environ:
                values[option.key] = _coerce(option, environ[name], f"environment {name}",
                                             text=True)
                break
    for key, value in (overrides or {}).items():
        option = OPTIONS[key]
        values[key] = _coerce(option, value, f"flag {option.flag}", text=True)
    _check_whole(values, path or "configuration")
    return Config(values, path, tables)


def _apply_document(document: dict[str, Any], values: dict[str, Any], tables: dict[str, Any],
                    path: str) -> None:
    for section, body in document.items():
        if section in TABLE_VALIDATORS:
            try:
                TABLE_VALIDATORS[section](body)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
            tables[section] = body
            continue
        if section not in SECTIONS:
            known = ", ".join(f"[{s}]" for s in SECTIONS + tuple(TABLE_VALIDATORS))
            raise ConfigError(f"{path}: unknown section or key {section!r} (known sections: "
                              f"{known})")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: {section} must be a table ([{section}])")
        for name, value in body.items():
            key = f"{section}.{name}"
            option = OPTIONS.get(key)
            if option is None:
                known = ", ".join(o.name for o in SCHEMA if o.section == section)
                raise ConfigError(f"{path}: unknown key {key!r} (keys of [{section}]: {known})")
            values[key] = _coerce(option, value, path)


def _check_whole(values: dict[str, Any], source: str) -> None:
    if values["auth.enabled"] and not values["auth.jwt_secret"]:
        raise ConfigError(f"{source}: auth.jwt_secret: must be set when auth.enabled is true")
