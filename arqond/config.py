"""Configuration: built-in defaults < TOML file < ARQONBUS_* environment < command-line flags.

SCHEMA is the single list of every option; the man page test reads it too, so an option added
here and missing from arqond.conf(5) fails the suite.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, make_dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping


if TYPE_CHECKING:
    from arqond.core.casil import Policy

DEFAULT_CONFIG_PATH = "/etc/arqond/arqond.toml"
# orjson writes at most 254 levels of nesting; the deepest wrapper arqond puts around a
# client's JSON (a JSON-RPC reply holding history envelopes holding the payload) adds fewer
# than 8. Precedents for the default: .NET's System.Text.Json 64, serde_json 128.
MAX_JSON_DEPTH_CEILING = 200
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
    secret: bool = False          # never shown (GET /system/config names it as redacted)

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


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _absolute(value: str) -> str | None:
    return None if value.startswith("/") else "must be an absolute path"


def _absolute_or_empty(value: str) -> str | None:
    return None if value == "" else _absolute(value)


def _destinations(value: tuple[str, ...]) -> str | None:
    from arqond.core.destinations import check_entries  # stdlib only: see casil_policy
    return check_entries(value)


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"
    return check


def _between(low: int, high: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if low <= value <= high else f"must be from {low} to {high}"
    return check


def _name(value: str) -> str | None:
    return None if value and ":" not in value and "*" not in value else \
        "must be a non-empty room or channel name without ':' or '*'"


def _nats_urls(value: tuple[str, ...]) -> str | None:
    bad = [url for url in value if not re.fullmatch(r"(nats|tls)://[^\s/]+(:[0-9]+)?/?", url)]
    return f"{', '.join(map(repr, bad))}: must be nats://HOST:PORT or tls://HOST:PORT" \
        if bad else None


def _node_name(value: str) -> str | None:
    return None if value == "" or re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value) else \
        'must be 1 to 64 letters, digits, ".", "_" or "-" (or "" for the host name)'


def _cluster_name(value: str) -> str | None:
    return None if re.fullmatch(r"[a-z0-9_-]{1,32}", value) else \
        'must be 1 to 32 lower-case letters, digits, "_" or "-"'


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
    Option("server.telemetry_port", int, 9101, "Telemetry WebSocket port; 0 picks a free port.",
           flag="--telemetry-port", env=("ARQONBUS_TELEMETRY_PORT",), check=_port),
    Option("server.http_port", int, 8080, "HTTP port (health, version, status, metrics, "
           "/v1 history, stream and publish); 0 picks a free port.", flag="--http-port",
           env=("ARQONBUS_HTTP_PORT",), check=_port),
    Option("server.activity_interval", float, 1.0, "Seconds over which agent_activity "
           "telemetry is coalesced: at most one event per agent client per interval.",
           reload=True, check=_positive),
    Option("server.state_dir", str, "/var/lib/arqond", "Durable state: checkpoints and the "
           "like.", flag="--state-dir", check=_absolute),
    Option("server.log_level", str, "info", "Least severe log level written.", reload=True,
           flag="--log-level", env=("ARQONBUS_LOG_LEVEL",), check=_one_of(*LOG_LEVELS)),
    Option("server.max_message_size", int, 1048576, "Largest inbound WebSocket frame or "
           "control-socket line in bytes; a larger one closes the connection (WebSocket: 1009).", env=("ARQONBUS_MAX_MESSAGE_SIZE",),
           check=_positive),
    Option("server.max_json_depth", int, 64, "Deepest nesting of arrays and "
           "objects accepted in any JSON arqond reads (frames, lines, bodies, narrative "
           "lines); deeper JSON is refused with an error naming this key, or published as "
           '{"raw": ...} where lines are never refused. At most 200, so that whatever is '
           "accepted can always be sent on.", reload=True,
           check=_between(1, MAX_JSON_DEPTH_CEILING)),
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
    Option("server.default_channel", str, "", 'Channel every new client joins and uses as its '
           'current channel. Off ("") by default, as ArqonBus\'s clients expect: a client '
           'gets only what it joins. "science:general" restores the legacy initial room.',
           reload=True, check=_target_or_empty),
    Option("server.event_loop", str, "asyncio", 'Event loop implementation: "asyncio", or '
           '"uvloop" (a C event loop; needs the uvloop package, the "uvloop" extra). The '
           'benchmarks measure both within a few per cent of each other.',
           env=("ARQONBUS_EVENT_LOOP",), check=_one_of("asyncio", "uvloop")),
    Option("server.output_budget_bytes", int, 268435456, "Bytes that may wait unsent for all "
           "clients together (each one also has server.client_buffer_bytes); checked four "
           "times a second, and past it the clients with the most waiting are cut off first "
           "(close 4008) until it holds.", reload=True, check=_positive),
    Option("server.max_channels", int, 10000, "Channels that may exist at once; past it a "
           "client's join or create_channel is refused with LIMIT_EXCEEDED. arqond's own "
           "channels (narrative files, Zgent inboxes) are bounded by narrative.max_files and "
           "moo.max_zgents instead, and are never refused.", reload=True, check=_positive),
    Option("server.history_size", int, 500, "Messages kept per channel (and per room, for "
           "messages to a whole room) for history; the oldest leaves the window.",
           reload=True, env=("ARQONBUS_HISTORY_SIZE",), check=_positive),
    Option("server.history_bytes", int, 8388608, "Bytes of serialized frames kept per channel "
           "for history; past it the oldest leave the window (the newest message is always "
           "kept).", reload=True, check=_positive),
    Option("server.history_total_bytes", int, 268435456, "Bytes kept for history by all "
           "channels together; past it the channel being written to gives up its oldest "
           "first, then the largest channels theirs.", reload=True, check=_positive),
    Option("server.stats_interval", float, 60.0, "Seconds between statistics log lines.",
           reload=True, check=_positive),
    Option("server.control_socket", str, "/run/arqond/control.sock", "Unix socket of the "
           "local admin door (mode 0660, group server.admin_group); the arqon CLI uses it.",
           flag="--control-socket", env=("ARQONBUS_CONTROL_SOCKET",), check=_absolute),
    Option("server.bus_socket", str, "/run/arqond/bus.sock", "Unix socket speaking the "
           "WebSocket bus protocol (ws+unix), mode 0666: anyone local may connect, and the "
           "kernel says who (SO_PEERCRED); root and server.admin_group are admins. The arqon "
           'CLI and SDK use it locally. "" turns it off.', flag="--bus-socket",
           env=("ARQONBUS_BUS_SOCKET",), check=_absolute_or_empty),
    Option("server.admin_group", str, "arqond", "Members of this group (and root) are admins "
           "on the control socket; other peers are ordinary clients.", reload=True),
    Option("auth.enabled", bool, False, "Require an HS256 JWT at the WebSocket handshake.",
           reload=True, env=("ARQONBUS_ENABLE_AUTH",)),
    Option("auth.loopback_identity", bool, True, "Identify TCP peers on this host (WebSocket "
           "and HTTP) by the uid the kernel records for their socket, as `ss -e` shows it, "
           "so the same rules as on the Unix sockets apply to them (owners read their "
           "Zgents' inboxes, moo.group members register Zgents). Over TCP nobody is an "
           "admin but by a token with role admin. Off: such peers are anonymous without a "
           "token.", reload=True),
    Option("auth.jwt_secret", str, "", "Shared secret for HS256 tokens; required when "
           "auth.enabled is true.", reload=True, secret=True),
    Option("http.admin_api_key", str, "", "Key that ArqonBus's admin endpoints (POST "
           "/admin/shutdown, /admin/restart) take in the X-API-Key header; a token with role "
           'admin (auth.enabled) is taken too. "" (the default): no key opens them, where '
           "ArqonBus would leave them open to anyone.", reload=True, secret=True),
    Option("moo.dir", str, "/var/moo", "MOO runtime dir: inbox FIFOs, Zgent sockets, registry, "
           "broadcast log.", flag="--moo-dir", check=_absolute),
    Option("moo.log_dir", str, "/var/log/moo", "Watched narrative log dir.",
           flag="--log-dir", env=("ARQONBUS_LOG_DIR",), check=_absolute),
    Option("moo.dir_check", str, "refuse", "What arqond does at start when others than its "
           "user and root could replace its files in moo.dir, moo.log_dir or "
           "server.state_dir: a directory owned by another user, or writable by others "
           "(moo.log_dir: without the sticky bit). A directory arqond owns gets its mode fixed "
           "and a log line (not one the whole system shares, like /tmp); otherwise \"refuse\" stops the start naming the path, its mode and "
           "owner and the chmod or chown that fixes it, and \"warn\" logs the same and "
           "starts.", check=_one_of("refuse", "warn")),
    # CASIL, the content inspection of message and command frames: see arqond/core/casil.py.
    Option("casil.enabled", bool, False, "Inspect message and command frames.", reload=True),
    Option("casil.mode", str, "monitor", "monitor (decide and report, deliver anyway) or "
           "enforce (refuse what the policy blocks).", reload=True),
    Option("casil.default_decision", str, "allow", "Decision when inspection itself fails: "
           "allow or block.", reload=True),
    Option("casil.scope_include", list, (), 'Targets ("room:channel") inspected; empty means '
           'all. A pattern ending in * is a prefix, others are globs; a pattern without ":" '
           "also matches the room alone.", reload=True),
    Option("casil.scope_exclude", list, (), "Targets never inspected; checked before "
           "scope_include.", reload=True),
    Option("casil.max_payload_bytes", int, 262144, "Serialized payloads larger than this are "
           "blocked (reason CASIL_POLICY_OVERSIZE); 0 means no limit.", reload=True),
    Option("casil.max_inspect_bytes", int, 65536, "Bytes of the serialized payload the secret "
           "detectors scan.", reload=True),
    Option("casil.max_patterns", int, 32, "Most redaction_patterns allowed.", reload=True),
    Option("casil.block_on_probable_secret", bool, False, "Block (in enforce mode) frames in "
           "which a secret detector matches.", reload=True),
    Option("casil.redaction_paths", list, ("password", "token", "secret"), "Payload keys "
           "whose values are redacted: a name matches at any depth, a dotted path from the "
           "top.", reload=True),
    Option("casil.redaction_patterns", list, (), "Regular expressions redacted inside string "
           "values; when set they replace the built-in secret detectors.", reload=True),
    Option("casil.transport_redaction", bool, False, "Deliver, store and acknowledge the "
           "redacted payload instead of the original.", reload=True),
    Option("casil.never_log_payload_for", list, (), "Targets whose payload never appears in "
           "logs or decision events, not even redacted.", reload=True),
    Option("casil.metadata_to_logs", bool, True, "Log blocked frames (policy_refusal).",
           reload=True),
    Option("casil.metadata_to_telemetry", bool, True, "Emit casil_decision events for "
           "telemetry.", reload=True),
    Option("casil.metadata_to_envelope", bool, False, "Add metadata.casil to routed "
           "messages.", reload=True),
    # Tier-Omega lab lane (op.omega.*): off unless enabled; in-memory runtime only.
    # op.store: bounded in keys and bytes, in all and (see [quotas]) per principal.
    Option("store.max_keys", int, 10000, "Keys op.store holds, all principals together; one "
           "more is refused with LIMIT_EXCEEDED.", reload=True, check=_positive),
    Option("store.max_value_bytes", int, 65536, "Largest op.store value, as serialized JSON; a "
           "larger one is refused with LIMIT_EXCEEDED.", reload=True, check=_positive),
    Option("store.max_bytes", int, 67108864, "Bytes of values op.store holds, all principals "
           "together; a set past it is refused with LIMIT_EXCEEDED.", reload=True,
           check=_positive),
    # Durable streams: every channel's messages numbered (seq, epoch) and kept on disk.
    Option("streams.durability", str, "write", 'When a message counts as stored, so it is '
           'delivered and acknowledged: "write" once written to the operating system (it '
           'survives arqond being killed, not a power cut), "fsync" once on the disk (it '
           'survives a power cut; slower), "memory" never (no store: history is lost at '
           'restart). The store is STATE_DIR/streams.sqlite3.', check=_one_of(
               "write", "fsync", "memory")),
    Option("streams.max_messages", int, 10000, "Messages a channel's stream keeps by default "
           "(create_channel may give its own retention); the oldest go first.", reload=True,
           check=_positive),
    Option("streams.max_bytes", int, 67108864, "Bytes of messages a channel's stream keeps by "
           "default; the oldest go first.", reload=True, check=_positive),
    Option("streams.max_age", float, 0.0, "Seconds a stream keeps a message by default; 0 "
           "keeps it until the count or bytes say otherwise.", reload=True,
           check=_non_negative),
    Option("streams.total_bytes", int, 2147483648, "Bytes of messages all streams keep "
           "together; past it the largest streams give up their oldest first.", reload=True,
           check=_positive),
    Option("streams.max_pending_bytes", int, 67108864, "Bytes of messages waiting to be "
           "stored (the disk is behind); a client's publish past it is refused with "
           "LIMIT_EXCEEDED.", reload=True, check=_positive),
    Option("streams.max_cursors", int, 10000, "Named cursors (cursor.ack, arqon read "
           "--cursor) kept, all principals together; a new one past it is refused with "
           "LIMIT_EXCEEDED.", reload=True, check=_positive),
    Option("streams.on_full", str, "refuse", 'What a full disk (or another write error) '
           'does: "refuse" answers each message STORE_FAILED and delivers none of them until '
           'writes work again; "memory" goes on without the store until arqond restarts, '
           'every stream with a new epoch (what is published then is lost at restart).',
           check=_one_of("refuse", "memory")),
    # op.cron and op.webhook: bounded in all here, per principal in [quotas].
    Option("cron.max_jobs", int, 1024, "op.cron jobs scheduled at once, all principals "
           "together; one more is refused with LIMIT_EXCEEDED.", reload=True, check=_positive),
    Option("webhooks.allow_non_admin", bool, False, "Let identified principals that are not "
           "admins register webhook rules (anonymous clients never may).", reload=True),
    Option("webhooks.allowed_destinations", list, (), "Where webhooks may POST: origin "
           "patterns scheme://host:port with * wildcards (no port: the scheme's default), or "
           "networks such as 10.0.0.0/8. Empty: nowhere. Loopback, private and link-local "
           "destinations pass only when listed exactly or by network; checked again with the "
           "resolved addresses at every delivery.", reload=True, check=_destinations),
    Option("webhooks.max_rules", int, 1024, "Webhook rules at once, all principals "
           "together.", reload=True, check=_positive),
    Option("webhooks.queue_size", int, 1024, "Deliveries waiting for a worker; past it a "
           "delivery is dropped, logged and counted.", check=_positive),
    Option("webhooks.max_hops", int, 1, "Webhook POSTs a message may have come through "
           "(X-Arqond-Webhook-Hops on /v1/publish) and still be sent to webhooks: 1 means a "
           "message published by a webhook is not sent to webhooks again, so no rule can "
           "loop.", reload=True, check=_positive),
    # What one principal (a local user, a token subject, an anonymous address) may hold at
    # once; admins are not charged. A refusal names the quota.
    Option("quotas.connections", int, 256, "Connections open at once, all transports.",
           reload=True, check=_positive),
    Option("quotas.channels", int, 256, "Channels it created (by join, publish or "
           "create_channel) that still exist.", reload=True, check=_positive),
    Option("quotas.store_keys", int, 1000, "op.store keys.", reload=True, check=_positive),
    Option("quotas.store_bytes", int, 4194304, "Bytes of op.store values.", reload=True,
           check=_positive),
    Option("quotas.cron_jobs", int, 64, "op.cron jobs scheduled at once.", reload=True,
           check=_positive),
    Option("quotas.cron_rate", float, 10.0, "op.cron messages per second, its jobs together "
           "(a job every 0.5 s counts 2).", reload=True, check=_positive),
    Option("quotas.webhooks", int, 32, "op.webhook rules.", reload=True, check=_positive),
    Option("quotas.zgents", int, 64, "Zgents it registered.", reload=True, check=_positive),
    Option("omega.enabled", bool, False, "Serve the op.omega.* commands."),
    Option("omega.lab_room", str, "omega-lab", "Room of the lab channel omega events go to.",
           check=_name),
    Option("omega.lab_channel", str, "signals", "Channel omega events go to.", check=_name),
    Option("omega.max_events", int, 1000, "Omega events kept; the oldest is dropped.",
           check=_positive),
    Option("omega.max_substrates", int, 128, "Substrates that may be registered at once.",
           check=_positive),
    Option("moo.group", str, "zgents", "Group owning the inbox FIFOs, Zgent sockets, "
           "registry and broadcast log; if it does not exist the files keep arqond's group."),
    Option("moo.mailbox_size", int, 1000, "Messages kept per Zgent until read; past that the "
           "oldest is dropped and counted.", reload=True, check=_positive),
    Option("moo.handler_timeout", float, 30.0, "Seconds a Zgent handler has to answer a "
           "request before the caller gets error -32002.", reload=True, check=_positive),
    Option("moo.stale_after", float, 300.0, "Seconds without a sign of life before a Zgent's "
           "registry status becomes stale.", reload=True, check=_positive),
    Option("moo.offline_without_handler", bool, False, "Mark a Zgent offline in the registry "
           "when its handler disconnects (until its next sign of life).", reload=True),
    Option("moo.purge_offline_after", float, 604800.0, "Seconds an unregistered Zgent stays "
           "listed in registry.json, offline, before it is dropped (7 days); 0 keeps it as "
           "long as arqond runs.", reload=True, check=_non_negative),
    Option("moo.max_line_bytes", int, 65536, "Longest line accepted on an inbox FIFO or Zgent "
           "socket; a longer one is refused whole and logged.", check=_positive),
    Option("moo.pane_max_bytes", int, 16384, "Bytes of text one arqon.pane.capture returns "
           "(UTF-8): a longer capture keeps its last whole lines, says truncated, and is "
           "counted and logged. Never more than fits, escaped, in one line of "
           "moo.max_line_bytes (the handler's answer): (moo.max_line_bytes - 4096) / 2.",
           reload=True, check=_positive),
    Option("moo.max_zgents", int, 1024, "Zgents served at once, all together, besides those "
           "the configuration declares; registering one more (by command or a new narrative "
           "file) is refused and logged.", reload=True, check=_positive),
    Option("moo.max_clients", int, 1024, "Zgent socket clients served at once, all sockets "
           "together; one more gets error -32004 and is disconnected.", reload=True,
           check=_positive),
    Option("moo.client_buffer_bytes", int, 1048576, "Bytes that may wait unsent for one Zgent "
           "socket client; one that falls further behind is disconnected and counted.",
           reload=True, check=_positive),
    Option("narrative.enabled", bool, True, "Watch moo.log_dir and publish every appended "
           "line on the bus."),
    Option("narrative.read_from", str, "end", 'Where files found at the very first start (no '
           'checkpoint file yet) are read from: "end" or "beginning". Files that appear later '
           'are always read from their beginning; checkpointed files resume.',
           check=_one_of("end", "beginning")),
    Option("narrative.max_line_bytes", int, 65536, "Longest line kept, newline excluded; a "
           "longer line is published cut to this length as {\"raw\": ...} with "
           "metadata.malformed, and the lines after it flow on.", reload=True, check=_positive),
    Option("narrative.sweep_interval", float, 5.0, "Seconds between stat sweeps of the log "
           "dir, the safety net for missed inotify events and queue overflows.", reload=True,
           check=_positive),
    Option("narrative.rotate_wait", float, 5.0, "Seconds a file renamed or deleted away stays "
           "open for late writes once it was read to its end.", reload=True,
           check=_non_negative),
    Option("narrative.max_files", int, 1024, "Files followed at once (rotated files still "
           "being read count); more are refused with a log line.", reload=True,
           check=_positive),
    # Several arqond nodes as one bus through NATS (arqond(8) CLUSTER); unset: one node, and
    # no NATS client is loaded.
    Option("cluster.nats_url", list, (), "NATS servers to join (nats:// or tls:// URLs; "
           "several for a NATS cluster, comma-separated in the environment and the flag). "
           "Empty: arqond is a single node, exactly as without this section.",
           flag="--nats-url", check=_nats_urls),
    Option("cluster.node", str, "", "This node's name in the cluster (presence, the Zgent "
           'registry, logs): letters, digits, ".", "_" and "-". "" takes the host name.',
           check=_node_name),
    Option("cluster.name", str, "arqond", "The cluster's name on NATS: the prefix of its "
           "subjects and the name of its JetStream stream and key-value buckets, so that "
           "two clusters can share one NATS.", check=_cluster_name),
    Option("cluster.user", str, "", "User name for NATS (with cluster.password)."),
    Option("cluster.password", str, "", "Password for NATS (with cluster.user)."),
    Option("cluster.token", str, "", "Token for NATS (instead of a user and password)."),
    Option("cluster.creds_file", str, "", "NATS credentials file (a user JWT and NKey seed, "
           'as nsc writes it); "" for none.', check=_absolute_or_empty),
    Option("cluster.tls_ca", str, "", "CA certificates (PEM) that verify the NATS servers; "
           '"" trusts the system\'s. Setting it, or a tls:// URL, makes the connection TLS.',
           check=_absolute_or_empty),
    Option("cluster.tls_cert", str, "", "Client certificate (PEM) for NATS servers that ask "
           "for one (with cluster.tls_key).", check=_absolute_or_empty),
    Option("cluster.tls_key", str, "", "Private key (PEM) of cluster.tls_cert.",
           check=_absolute_or_empty),
    Option("cluster.replicas", int, 1, "Copies JetStream keeps of the cluster's stream and "
           "buckets (1, 3 or 5 on a NATS cluster of as many servers); used when they are "
           "created.", check=_between(1, 5)),
    Option("cluster.outage_buffer", int, 10000, "Messages published on this node while NATS "
           "is unreachable that are kept to be shared when it returns (they are delivered "
           "here at once, unnumbered). Past it a message is delivered here only, counted "
           "(arqonbus_cluster_unshared_total) and logged as not shared.", reload=True,
           check=_positive),
)

OPTIONS: dict[str, Option] = {option.key: option for option in SCHEMA}
SECTIONS = tuple(dict.fromkeys(option.section for option in SCHEMA))


def _section_types() -> dict[str, type]:
    """One frozen dataclass per [section], its fields the section's keys: built once, so a
    read on a per-frame path is a plain attribute lookup."""
    return {section: make_dataclass(
        f"{section.capitalize()}Section",
        [(option.name, Any) for option in SCHEMA if option.section == section],
        frozen=True, slots=True) for section in SECTIONS}


SECTION_TYPES = _section_types()


class Config:
    """The effective configuration of one load: read-only sections (``config.server.port``),
    the raw values by key, and the free-form tables ([zgents.NAME])."""

    def __init__(self, values: dict[str, Any], path: str | None = None,
                 tables: dict[str, Any] | None = None) -> None:
        self.values = MappingProxyType(dict(values))
        self.path = path
        self.tables = tables or {}
        for section, kind in SECTION_TYPES.items():
            prefix = section + "."
            setattr(self, section, kind(**{key[len(prefix):]: value
                                           for key, value in values.items()
                                           if key.startswith(prefix)}))

    def get(self, key: str) -> Any:
        return self.values[key]

    def changed_keys(self, other: "Config") -> list[str]:
        return sorted(k for k in self.values if self.values[k] != other.values.get(k))


def defaults() -> Config:
    """The built-in defaults alone: what parts of arqond start from when no file says more."""
    return Config({option.key: option.default for option in SCHEMA})


def _zgents_table(body: Any) -> None:
    # Imported here, not at the top: see casil_policy.
    from arqond.core.moo.names import ZgentError
    from arqond.core.moo.registry import check_table
    try:
        check_table(body)
    except ZgentError as exc:
        raise ConfigError(str(exc)) from None


# Tables the schema does not list but another part of arqond validates (name -> validator).
TABLE_VALIDATORS: dict[str, Callable[[Any], None]] = {"zgents": _zgents_table}


def _coerce(option: Option, value: Any, source: str, *, text: bool = False) -> Any:
    """Check a value against its option; ``text`` values (environment, flags) are parsed."""
    kind = option.kind
    if kind is list:
        return _coerce_list(option, value, source, text=text)
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


def _coerce_list(option: Option, value: Any, source: str, *, text: bool) -> tuple[str, ...]:
    """Lists are TOML arrays of strings, or comma-separated text in the environment."""
    if text and isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: {option.key}: must be {_kind_name(list)}, not {value!r}")
    value = tuple(value)
    if option.check is not None:
        complaint = option.check(value)
        if complaint:
            raise ConfigError(f"{source}: {option.key}: {complaint}")
    return value


def _kind_name(kind: type) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list of strings"}[kind]


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
    if bool(values["cluster.user"]) != bool(values["cluster.password"]):
        raise ConfigError(f"{source}: cluster.user and cluster.password: set both or neither")
    if values["cluster.token"] and (values["cluster.user"] or values["cluster.creds_file"]):
        raise ConfigError(f"{source}: cluster.token: use a token, a user and password, or a "
                          "creds file, not several")
    if values["cluster.nats_url"] and values["streams.durability"] == "memory":
        raise ConfigError(f"{source}: cluster.nats_url: a node of a cluster keeps its copy of "
                          'the cluster\'s streams in server.state_dir: streams.durability must '
                          'be "write" or "fsync", not "memory"')
    if bool(values["cluster.tls_cert"]) != bool(values["cluster.tls_key"]):
        raise ConfigError(f"{source}: cluster.tls_cert and cluster.tls_key: set both or "
                          "neither")
    from arqond.core.casil import PolicyError
    try:
        casil_policy(values)
    except PolicyError as exc:
        raise ConfigError(f"{source}: casil.{exc}") from None


def casil_policy(values: Mapping[str, Any]) -> "Policy":
    """The CASIL policy the [casil] section describes (validated by Policy itself)."""
    # Imported here, not at the top: the schema must load with the standard library alone,
    # because the package build renders arqond.conf(5) from it before any dependency exists.
    from arqond.core.casil import KEYS, Policy
    return Policy(**{key: values[f"casil.{key}"] for key in KEYS})
