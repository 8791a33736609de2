"""CASIL, the Content-Aware Safety & Inspection Layer: a policy engine without I/O.

The Bus asks ``Casil.inspect`` about every client ``message``/``command`` whose target is in
scope, once the target is resolved and before anything is routed. The answer (a Verdict) says
whether to refuse the frame, which payload to route, what to add to ``metadata.casil`` and which
bus events to emit (``casil_decision`` for telemetry, ``policy_refusal`` for the log).

Where ArqonBus's own CASIL misbehaves, this one does not (the differences are deliberate):
pattern redaction rewrites string values, never the serialized JSON, so the payload stays valid;
``never_log_payload_for`` keeps payloads out of logs and events and never replaces the routed
payload; ALLOW_WITH_REDACTION means something was (or must be) redacted, not merely that
redaction rules exist; a scope pattern without ":" also matches the room alone; a probable
secret is reported by detector and location, and the payload that held it never reaches a log
or an event, redacted or not (a detector may match text that no redaction rule covers).

``flags`` (in ``metadata.casil`` and the decision event) has ArqonBus's shape: an object with
``contains_probable_secret`` and ``oversize_payload``, each present only when true.
``oversize_payload`` is the test that gives CASIL_POLICY_OVERSIZE (ArqonBus's classifier
compares the payload's length in keys or characters with max_inspect_bytes instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Mapping

import orjson

from arqond.config import OPTIONS
from arqond.core.commands import Command, CommandContext, CommandError
from arqond.core.errors import ErrorCode

if TYPE_CHECKING:
    from arqond.core.bus import Bus

MODES = ("monitor", "enforce")
DEFAULT_DECISIONS = ("allow", "block")
ALLOW, ALLOW_WITH_REDACTION, BLOCK = "ALLOW", "ALLOW_WITH_REDACTION", "BLOCK"
REASON_ALLOWED = "CASIL_POLICY_ALLOWED"
REASON_REDACTED = "CASIL_POLICY_REDACTED"
REASON_SECRET = "CASIL_POLICY_BLOCKED_SECRET"
REASON_OVERSIZE = "CASIL_POLICY_OVERSIZE"
REASON_INTERNAL = "CASIL_INTERNAL_ERROR"
REDACTED = "***REDACTED***"
# Deeper than this, a payload branch is redacted whole rather than walked.
MAX_DEPTH = 64
# Redacted payload text carried by decision events and refusal logs.
EXCERPT_CHARS = 256
TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
# Probable-secret detectors used when no redaction_patterns are configured, by the name that
# reports them. They run over the serialized payload, so they also flag key names such as
# "password".
DEFAULT_DETECTORS = {
    "api_key": r"(?i)api[_-]?key", "secret": r"(?i)secret", "token": r"(?i)token",
    "password": r"(?i)password", "bearer_token": r"(?i)bearer\s+[a-z0-9._~+/=-]{8,}",
    "stripe_key": r"\b[sp]k_(?:live|test)_[0-9a-zA-Z]{8,}",
}
# Findings (detector, location) reported for one frame, at most.
MAX_FINDINGS = 8
# The keys of ``flags``, as ArqonBus names them.
FLAG_SECRET = "contains_probable_secret"
FLAG_OVERSIZE = "oversize_payload"


class PolicyError(ValueError):
    """An unusable policy value; the text starts with the key."""


def _default(key: str) -> Any:
    return OPTIONS[f"casil.{key}"].default


@dataclass(frozen=True)
class Policy:
    """One immutable policy snapshot; constructing it validates and compiles everything."""

    # Defaults are the [casil] section's, from the one configuration schema.
    enabled: bool = _default("enabled")
    mode: str = _default("mode")
    default_decision: str = _default("default_decision")
    scope_include: tuple[str, ...] = _default("scope_include")
    scope_exclude: tuple[str, ...] = _default("scope_exclude")
    max_payload_bytes: int = _default("max_payload_bytes")
    max_inspect_bytes: int = _default("max_inspect_bytes")
    max_patterns: int = _default("max_patterns")
    block_on_probable_secret: bool = _default("block_on_probable_secret")
    redaction_paths: tuple[str, ...] = _default("redaction_paths")
    redaction_patterns: tuple[str, ...] = _default("redaction_patterns")
    transport_redaction: bool = _default("transport_redaction")
    never_log_payload_for: tuple[str, ...] = _default("never_log_payload_for")
    metadata_to_logs: bool = _default("metadata_to_logs")
    metadata_to_telemetry: bool = _default("metadata_to_telemetry")
    metadata_to_envelope: bool = _default("metadata_to_envelope")
    # Derived from the above in __post_init__.
    patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    detectors: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    # How findings name each detector: its built-in name, or a configured pattern's text.
    detector_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    key_names: frozenset[str] = field(init=False, repr=False, compare=False)
    key_paths: frozenset[tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PolicyError(f"mode: must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.default_decision not in DEFAULT_DECISIONS:
            raise PolicyError("default_decision: must be one of "
                              f"{', '.join(DEFAULT_DECISIONS)}, not {self.default_decision!r}")
        if self.max_payload_bytes < 0:
            raise PolicyError("max_payload_bytes: must be 0 (no limit) or more")
        for key in ("max_inspect_bytes", "max_patterns"):
            if getattr(self, key) <= 0:
                raise PolicyError(f"{key}: must be greater than 0")
        if len(self.redaction_patterns) > self.max_patterns:
            raise PolicyError(f"redaction_patterns: {len(self.redaction_patterns)} patterns, "
                              f"more than max_patterns ({self.max_patterns})")
        for key in LIST_KEYS:
            if any(not item for item in getattr(self, key)):
                raise PolicyError(f"{key}: entries must not be empty")
        patterns = []
        for text in self.redaction_patterns:
            try:
                patterns.append(re.compile(text))
            except re.error as exc:
                raise PolicyError(f"redaction_patterns: {text!r} is not a valid regular "
                                  f"expression ({exc})") from None
        set_ = object.__setattr__  # the dataclass is frozen; derived fields are set once here
        set_(self, "patterns", tuple(patterns))
        set_(self, "detectors", tuple(patterns) or
             tuple(re.compile(p) for p in DEFAULT_DETECTORS.values()))
        set_(self, "detector_names", tuple(self.redaction_patterns) or tuple(DEFAULT_DETECTORS))
        names = [p.lower() for p in self.redaction_paths if "." not in p]
        paths = [tuple(p.lower().split(".")) for p in self.redaction_paths if "." in p]
        set_(self, "key_names", frozenset(names))
        set_(self, "key_paths", frozenset(paths))

    def snapshot(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in ((k, getattr(self, k)) for k in KEYS)}

    def with_changes(self, changes: Mapping[str, Any]) -> "Policy":
        """A new policy with loosely typed changes (op.casil.reload arguments) applied."""
        unknown = sorted(set(changes) - set(KEYS))
        if unknown:
            raise PolicyError(f"{', '.join(unknown)}: unknown CASIL key(s); known: "
                              f"{', '.join(KEYS)}")
        return replace(self, **{key: _loose(key, value) for key, value in changes.items()})

    def in_scope(self, target: str, room: str | None) -> bool:
        if any(_matches(p, target, room) for p in self.scope_exclude):
            return False
        return not self.scope_include or any(_matches(p, target, room)
                                             for p in self.scope_include)


KEYS = tuple(f.name for f in fields(Policy) if f.init)
LIST_KEYS = tuple(k for k in KEYS if isinstance(getattr(Policy, k), tuple))
BOOL_KEYS = tuple(k for k in KEYS if isinstance(getattr(Policy, k), bool))
INT_KEYS = tuple(k for k in KEYS if type(getattr(Policy, k)) is int)


def _loose(key: str, value: Any) -> Any:
    """Booleans may be words, lists a single string, numbers digit strings (as ArqonBus)."""
    if key in BOOL_KEYS:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise PolicyError(f"{key}: must be a boolean (true/false, yes/no, on/off, 1/0), "
                          f"not {value!r}")
    if key in INT_KEYS:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise PolicyError(f"{key}: must be an integer, not {value!r}")
        return value
    if key in LIST_KEYS:
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) and
                                           not isinstance(v, bool) for v in value):
            return tuple(str(v) for v in value)
        raise PolicyError(f"{key}: must be a string or a list of strings, not {value!r}")
    if not isinstance(value, str):
        raise PolicyError(f"{key}: must be a string, not {value!r}")
    return value.strip().lower()


def _matches(pattern: str, target: str, room: str | None) -> bool:
    """Glob on "room:channel"; a pattern naming no channel also matches the room alone."""
    if fnmatchcase(target, pattern):
        return True
    return room is not None and ":" not in pattern and fnmatchcase(room, pattern)


def scope_target(room: str | None, channel: str | None) -> str | None:
    if room and channel:
        return f"{room}:{channel}"
    return room or channel or None


@dataclass
class Verdict:
    decision: str
    reason: str
    flags: dict[str, bool]          # FLAG_SECRET, FLAG_OVERSIZE: present only when true
    risk_level: str
    kind: str
    payload: Any = None              # the payload to route, when replace_payload
    replace_payload: bool = False
    metadata: dict[str, Any] | None = None   # metadata.casil of the routed copy
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return self.decision == BLOCK


def redact(value: Any, policy: Policy, path: tuple[str, ...] = (), depth: int = 0
           ) -> tuple[Any, bool]:
    """Copy of ``value`` with redacted keys and pattern hits; shares untouched branches."""
    if depth > MAX_DEPTH:
        return REDACTED, True
    if isinstance(value, dict):
        out, changed = {}, False
        for key, item in value.items():
            sub = path + (key.lower(),)
            if key.lower() in policy.key_names or sub in policy.key_paths:
                new, hit = REDACTED, item != REDACTED
            else:
                new, hit = redact(item, policy, sub, depth + 1)
            out[key] = new
            changed = changed or hit
        return (out, True) if changed else (value, False)
    if isinstance(value, list):
        results = [redact(item, policy, path, depth + 1) for item in value]
        if any(hit for _, hit in results):
            return [new for new, _ in results], True
        return value, False
    if isinstance(value, str) and policy.patterns:
        text = value
        for pattern in policy.patterns:
            text = pattern.sub(REDACTED, text)
        return text, text != value
    return value, False


class Casil:
    """The live policy, the Bus's inspector hook and the op.casil.* commands."""

    def __init__(self, bus: "Bus", policy: Policy) -> None:
        self.bus = bus
        self.policy = policy
        self.inspected_total = 0
        self.blocked_total = 0
        self.redacted_total = 0
        self.internal_errors_total = 0
        self.enabled = False
        self.set_policy(policy)

    def commands(self) -> dict[str, Command]:
        return {"op.casil.get": Command(self._get, False, "the live CASIL policy"),
                "op.casil.reload": Command(self._reload, True,
                                           "change CASIL policy keys live (validated)")}

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        # A plain attribute: disabled CASIL costs the Bus one check per frame.
        self.enabled = policy.enabled

    def _get(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        return "CASIL policy snapshot", self.policy.snapshot()

    def _reload(self, ctx: CommandContext) -> tuple[str, dict[str, Any]]:
        try:
            policy = self.policy.with_changes(ctx.args)
        except PolicyError as exc:
            raise CommandError(ErrorCode.VALIDATION_ERROR, f"Validation error: {exc}") from None
        self.set_policy(policy)
        self.bus.emit("casil_reloaded", client_id=ctx.client.id, keys=",".join(sorted(ctx.args)))
        return "CASIL policy reloaded", policy.snapshot()

    def inspect(self, env: dict[str, Any], client_id: str) -> Verdict | None:
        """The decision for one frame; None when it is out of scope."""
        policy = self.policy
        room, channel = env.get("room"), env.get("channel")
        target = scope_target(room, channel)
        if target is None or not policy.in_scope(target, room):
            return None
        self.inspected_total += 1
        command = env["type"] == "command"
        content = {"args": env.get("args") or {}, "payload": env.get("payload")} if command \
            else env.get("payload")
        findings = None
        try:
            verdict, redacted = _decide(policy, content, "control" if command else "data")
            if FLAG_SECRET in verdict.flags:
                findings = ", ".join(f"{name} at {where}"
                                     for name, where in locate(content, policy))
        except Exception as exc:  # noqa: BLE001 - a fault in inspection must not stop the bus
            self.internal_errors_total += 1
            decision = BLOCK if policy.default_decision == "block" else ALLOW
            # No flags: nothing was found (the reason says inspection failed), as ArqonBus.
            verdict, redacted = Verdict(decision, REASON_INTERNAL, {}, "unknown",
                                        "control" if command else "data"), None
            # The type only: an exception's text may quote the payload.
            verdict.events.append(("casil_internal_error", {"client_id": client_id,
                                                            "error": type(exc).__name__}))
        if verdict.blocked:
            self.blocked_total += 1
        elif verdict.decision == ALLOW_WITH_REDACTION:
            self.redacted_total += 1
            if policy.transport_redaction and not command and redacted is not content:
                verdict.payload, verdict.replace_payload = redacted, True
        if policy.metadata_to_envelope and not verdict.blocked:
            verdict.metadata = {"kind": verdict.kind, "risk_level": verdict.risk_level,
                                "flags": verdict.flags, "reason_code": verdict.reason,
                                "decision": verdict.decision}
        excerpt = None
        if redacted is not None and findings is None and not any(
                _matches(p, target, room) for p in policy.never_log_payload_for):
            excerpt = orjson.dumps(redacted).decode()[:EXCERPT_CHARS]
        where = {"client_id": client_id, "room": room, "channel": channel}
        if policy.metadata_to_telemetry:
            verdict.events.append(("casil_decision", {
                **where, "message_id": env["id"], "decision": verdict.decision,
                "reason_code": verdict.reason, "flags": verdict.flags, "kind": verdict.kind,
                "risk_level": verdict.risk_level, "mode": policy.mode,
                "severity": "warning" if verdict.blocked else "info", "findings": findings,
                "payload": excerpt}))
        if verdict.blocked and policy.metadata_to_logs:
            # envelope_id, not message_id: MESSAGE_ID is the journal's catalog field.
            verdict.events.append(("policy_refusal", {
                **where, "envelope_id": env["id"], "reason": verdict.reason,
                "findings": findings, "payload": excerpt}))
        return verdict


def locate(content: Any, policy: Policy) -> list[tuple[str, str]]:
    """Where the detectors match in ``content``: (detector name, location) pairs, never the
    matched text. A location is a path from ``$`` (the inspected content: the payload, or a
    command's {"args", "payload"}): ``$.auth.note``, ``$.items[2]``; a key that is itself a
    match is named by its position (``$.auth.<key 1>``), so a secret used as a key is not
    repeated either. A detector that matched only across the JSON text (a configured pattern
    spanning a key and its value) is reported at ``$``. At most MAX_FINDINGS, over the first
    max_inspect_bytes of keys and strings, as the detection itself."""
    pairs = tuple(zip(policy.detector_names, policy.detectors))
    found: list[tuple[str, str]] = []
    budget = policy.max_inspect_bytes
    # (value, its path, the detectors its key matched, its depth), visited in document order
    stack: list[tuple[Any, str, list[str], int]] = [(content, "$", [], 0)]
    while stack and budget > 0 and len(found) < MAX_FINDINGS:
        value, path, key_hits, depth = stack.pop()
        found.extend((name, path) for name in key_hits)
        children = []
        if isinstance(value, dict) and depth <= MAX_DEPTH:
            for position, (key, item) in enumerate(value.items(), 1):
                budget -= len(key)
                hits = [name for name, detector in pairs if detector.search(key)]
                where = f"{path}.<key {position}>" if hits else f"{path}.{key}"
                children.append((item, where, hits, depth + 1))
        elif isinstance(value, list) and depth <= MAX_DEPTH:
            children = [(item, f"{path}[{index}]", [], depth + 1)
                        for index, item in enumerate(value)]
        elif isinstance(value, str):
            budget -= len(value)
            found.extend((name, path) for name, detector in pairs
                         if detector.search(value) and (name, path) not in found)
        stack.extend(reversed(children))
    if not found:
        text = orjson.dumps(content)[:policy.max_inspect_bytes].decode("utf-8", "ignore")
        found = [(name, "$") for name, detector in pairs if detector.search(text)]
    return found[:MAX_FINDINGS]


def _decide(policy: Policy, content: Any, kind: str) -> tuple[Verdict, Any]:
    raw = orjson.dumps(content)
    sample = raw[:policy.max_inspect_bytes].decode("utf-8", "ignore")
    secret = any(detector.search(sample) for detector in policy.detectors)
    oversize = 0 < policy.max_payload_bytes < len(raw)
    flags = {}
    if secret:
        flags[FLAG_SECRET] = True
    if oversize:
        flags[FLAG_OVERSIZE] = True
    redacted, changed = redact(content, policy)
    must_redact = secret and (policy.block_on_probable_secret or policy.mode == "enforce")
    reason = REASON_SECRET if secret and policy.block_on_probable_secret else \
        REASON_OVERSIZE if oversize else None
    if reason and policy.mode == "enforce":
        decision = BLOCK
    elif must_redact or changed:
        decision, reason = ALLOW_WITH_REDACTION, reason or REASON_REDACTED
    else:
        decision, reason = ALLOW, reason or REASON_ALLOWED
    risk = "high" if secret else "medium" if oversize else "low"
    return Verdict(decision, reason, flags, risk, kind), redacted
