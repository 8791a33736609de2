"""Properties that no table can exhaust, checked with hypothesis: any frame either gets an
error or is routed, and what is routed can be sent; the line framer hands out the lines it was
given whatever the chunking, in bounded memory; any narrative line becomes a publishable
envelope."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arqond.core import envelope
from arqond.core.envelope import EnvelopeError
from arqond.core.framing import Line, LineFramer
from arqond.core.narrative.names import target_of
from arqond.core.narrative.schema import envelope as narrative_envelope
from tests.unit.harness import BusHarness

MAX_DEPTH = 16
PROFILE = settings(max_examples=300, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# JSON values as orjson writes them (64-bit integers, finite floats), nested a little past the
# depth bound the tests use, with the envelope's own keys common among the object keys.
KEYS = st.sampled_from(["id", "type", "room", "channel", "payload", "metadata", "args",
                        "command", "to_client", "from", "version", "timestamp", "request_id",
                        "sender", "status", "x", ""]) | st.text(max_size=8)
SCALARS = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=16) | \
    st.sampled_from(["message", "event", "command", "private", "system", "telemetry",
                     "response", "error", "corpus", "corpus:sentinel", "1.0", "ping",
                     "2026-01-01T00:00:00", "history", "join_channel", "list_channels"])
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(KEYS, inner, max_size=5), max_leaves=40)
FRAMES = st.dictionaries(KEYS, JSON, max_size=8).map(orjson.dumps) | st.binary(max_size=64) | \
    st.builds(lambda depth: b"[" * depth + b"]" * depth, st.integers(0, 3 * MAX_DEPTH))


@PROFILE
@given(FRAMES)
def test_any_frame_is_refused_with_an_envelope_error_or_accepted_and_serializable(raw):
    try:
        env = envelope.parse(raw, MAX_DEPTH)
    except EnvelopeError as exc:
        assert exc.code in ("INVALID_JSON", "VALIDATION_ERROR") and exc.message
        return
    frame = envelope.serialize({"id": "arq_1_1_abcdef", "timestamp": "2026-01-01T00:00:00",
                                **env})
    assert orjson.loads(frame)["type"] == env["type"]


@PROFILE
@given(st.lists(FRAMES, min_size=1, max_size=6))
def test_nothing_a_client_sends_raises_past_the_bus_and_every_answer_is_a_frame(frames):
    """Through the whole Bus (routing, commands, history): nothing raises, every answer is a
    frame that decodes (ListSink decodes them), no frame goes unanswered but those ArqonBus
    leaves unanswered, and a subscriber gets what is routed as it was acknowledged."""
    harness = BusHarness(max_json_depth=MAX_DEPTH)
    sender, watcher = harness.connect(), harness.connect()
    watcher.ok("join_channel", {"room": "*", "channel": "*"})
    watcher.take()
    for raw in frames:
        answers = sender.send(raw)
        assert answers or _unanswered(raw), raw
        routed = {frame["id"]: frame for frame in watcher.take() if frame["type"] != "response"}
        for answer in answers:
            if answer["type"] == "message_response" and answer["id"] in routed:
                assert routed[answer["id"]]["payload"] == answer["payload"]


LINE_BYTES = st.binary(max_size=40).map(lambda data: data.replace(b"\n", b""))


@PROFILE
@given(st.lists(LINE_BYTES, max_size=12), st.integers(1, 30), st.data())
def test_the_framer_hands_out_the_lines_it_was_given_whatever_the_chunking(lines, bound, data):
    stream = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    framer = LineFramer(bound)
    out: list[Line] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        out += framer.feed(stream[start:cut])
        start = cut
        assert len(framer.pending) <= bound  # memory stays at the bound, however long
    offset = 0
    expected = []
    for line in lines:
        expected.append(Line(offset, line[:bound], len(line)))
        offset += len(line) + 1
    assert out == expected
    assert framer.offset == len(stream) and framer.finish() is None


@PROFILE
@given(LINE_BYTES, st.binary(max_size=10).map(lambda tail: tail.replace(b"\n", b"")))
def test_a_stream_that_ends_mid_line_keeps_the_unfinished_line_for_the_reader(line, tail):
    framer = LineFramer(16)
    whole = framer.feed(line + b"\n" + tail)
    assert whole == [Line(0, line[:16], len(line))]
    last = framer.finish()
    assert (last is None) == (not tail)
    if tail:
        assert (last.offset, last.data, last.length) == (len(line) + 1, tail[:16], len(tail))


NARRATIVE_LINES = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(KEYS | st.sampled_from(["ts", "from", "type", "content", "tags", "ttl",
                                            "queryId", "correlationId", "method", "params"]),
                    JSON, max_size=6).map(orjson.dumps),
    st.fixed_dictionaries({"ts": st.sampled_from(["2026-01-01T00:00:00Z", "x", ""]),
                           "from": JSON, "type": JSON, "content": JSON}).map(orjson.dumps),
).map(lambda data: data.replace(b"\n", b""))


@PROFILE
@given(NARRATIVE_LINES, st.sampled_from(["corpus-narrative.jsonl", "corpus-queries.jsonl",
                                         "presence.jsonl"]), st.integers(1, 300))
def test_any_narrative_line_becomes_a_publishable_envelope(raw, name, max_bytes):
    target = target_of(name)
    line = Line(1234, raw[:max_bytes], len(raw))
    env = narrative_envelope(target, f"/var/log/moo/{name}", name, line, MAX_DEPTH,
                             requests=target.takes_requests)
    assert isinstance(env["payload"], dict)
    metadata: dict[str, Any] = env["metadata"]
    assert metadata["source"] == {"path": f"/var/log/moo/{name}", "offset": 1234}
    if "malformed" in metadata:  # the line as it came (cut at the bound), and why
        assert env["payload"] == {"raw": line.data.decode("utf-8", "replace")}
        assert metadata["malformed"]
    else:  # the line's own object, whole
        assert not line.cut and env["payload"] == orjson.loads(raw)
    harness = BusHarness(max_json_depth=MAX_DEPTH)
    watcher = harness.connect()
    watcher.ok("join_channel", {"room": target.room, "channel": target.channel})
    watcher.take()
    harness.bus.publish(env)
    got = watcher.take()
    assert [(frame["id"], frame["payload"]) for frame in got] == [(env["id"], env["payload"])]


def _unanswered(raw: bytes) -> bool:
    """A client's response, error or telemetry frame gets no answer (as in ArqonBus)."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(frame, dict) and frame.get("type") in ("response", "error", "telemetry")
