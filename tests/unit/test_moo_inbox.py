"""Messages to a Zgent in process: what an inbox line is (arqond/core/moo/inbox.py), where it
goes (arqond/core/moo/zgents.py), and who owns a Zgent (arqond/core/moo/owners.py)."""

from __future__ import annotations

import logging

import pytest

from arqond.core.errors import RpcCode
from arqond.core.moo.inbox import Route, decode, route
from arqond.core.moo.registry import Spec
from arqond.core.access import Owners
from arqond.core.moo.owners import owners_of
from tests.unit.harness import beside_stream
from tests.unit.moo_harness import Moo

DEEP = b'{"a":' * 70 + b"1" + b"}" * 70


@pytest.mark.parametrize("raw, message, malformed", [
    (b'{"from":"orchestrator","content":"hi"}', {"from": "orchestrator", "content": "hi"},
     None),
    (b"plain words, not JSON", {"raw": "plain words, not JSON"},
     "not valid JSON: unexpected character, expected a JSON value: line 1 column 1 (char 0)"),
    (b"\xff\xfe bytes", {"raw": "\ufffd\ufffd bytes"},
     "not valid JSON: str is not valid UTF-8: surrogates not allowed: line 1 column 1 (char 0)"),
    (b"[1, 2]", {"raw": "[1, 2]"}, "not a JSON object"),
    (b"", {"raw": ""}, "empty line"),
])
def test_what_an_inbox_line_becomes(raw, message, malformed):
    assert decode(raw, 64) == (message, malformed, False)


def test_json_arqond_refuses_is_still_a_message_with_the_reason():
    assert decode(DEEP, 64) == ({"raw": DEEP.decode()}, "JSON nests deeper than 64 levels "
                                "(server.max_json_depth)", True)


SERVED = {"dreader", "parseclipmate"}
REQUEST = {"id": "q-1", "method": "query", "replyTo": "parseclipmate"}


@pytest.mark.parametrize("name, message, serving_now, way, why", [
    ("ghost", {"n": 1}, False, Route.REFUSED, "message to 'ghost' refused: no such Zgent"),
    ("dreader", {"n": 1}, True, Route.MESSAGE, None),
    ("dreader", {"id": 1, "method": "query"}, True, Route.MESSAGE, None),   # no replyTo
    ("dreader", REQUEST, False, Route.MESSAGE, None),                      # no handler
    ("dreader", REQUEST, True, Route.REQUEST, None),
    ("dreader", {k: v for k, v in REQUEST.items() if k != "id"}, True, Route.NOTIFICATION,
     None),
    ("dreader", {**REQUEST, "method": 5}, True, Route.MESSAGE,
     'dreader-inbox: request kept as a plain message: invalid request: "method" must be'),
    ("dreader", {**REQUEST, "replyTo": "../../etc/passwd"}, True, Route.MESSAGE,
     "dreader-inbox: request kept as a plain message: invalid Zgent name '../../etc/passwd'"),
    ("dreader", {**REQUEST, "replyTo": "ghost"}, True, Route.MESSAGE,
     "dreader-inbox: replyTo 'ghost' is not a registered Zgent; request kept as a plain "
     "message"),
])
def test_where_a_message_goes(name, message, serving_now, way, why):
    got_way, got_why = route(name, message, SERVED, serving_now)
    assert got_way is way
    assert (got_why is None) if why is None else got_why.startswith(why)


def test_a_message_is_published_on_the_inbox_channel_and_kept_until_read():
    moo = Moo("dreader")
    channel = moo.watch("dreader", "inbox")
    moo.zgents.inbox_line("dreader", {"from": "orchestrator", "n": 1})
    moo.zgents.inbox_line("dreader", {"from": 7, "n": 2})
    assert [(e["sender"], e["payload"], beside_stream(e["metadata"])) for e in channel] == [
        ("orchestrator", {"from": "orchestrator", "n": 1}, {"zgent": "dreader"}),
        ("arqonbus", {"from": 7, "n": 2}, {"zgent": "dreader"})]
    assert moo.mailbox("dreader") == [{"from": "orchestrator", "n": 1}, {"from": 7, "n": 2}]
    assert moo.zgents.inbox_lines_total == 2


def test_a_message_to_no_such_zgent_is_refused_counted_and_logged(caplog):
    moo = Moo("dreader")
    moo.zgents.inbox_line("ghost", {"n": 1})
    assert moo.zgents.inbox_refused_total == 1 and moo.zgents.inbox_lines_total == 0
    assert "message to 'ghost' refused: no such Zgent" in caplog.text
    assert moo.bus.router.channel("ghost", "inbox") is None


def test_a_request_with_reply_to_goes_to_the_handler_and_its_answer_to_the_requester():
    moo = Moo("dreader", "parseclipmate")
    handler = moo.connect()
    handler.call("arqon.serve")
    answers = moo.watch("parseclipmate", "inbox")
    moo.zgents.fifo_line("dreader", b'{"id":"q-456","method":"query","params":{"symbol":"SPX"},'
                                    b'"replyTo":"parseclipmate"}')
    forwarded = handler.next()
    assert forwarded["method"] == "query" and forwarded["id"].startswith("arqond-")
    handler.send({"id": forwarded["id"], "result": {"volume": 125000}})
    reply = {"jsonrpc": "2.0", "id": "q-456", "result": {"volume": 125000}}
    assert moo.mailbox("parseclipmate") == [reply] and answers[-1]["payload"] == reply
    assert moo.mailbox("dreader") == []   # handled, not kept


def test_a_notification_through_the_inbox_reaches_the_handler_and_nothing_comes_back():
    moo = Moo("dreader", "parseclipmate")
    handler = moo.connect()
    handler.call("arqon.serve")
    moo.zgents.fifo_line("dreader", b'{"method":"tick","replyTo":"parseclipmate"}')
    assert handler.next() == {"jsonrpc": "2.0", "method": "tick"}
    assert moo.mailbox("parseclipmate") == [] and moo.mailbox("dreader") == []


def test_a_bad_reply_to_keeps_the_request_as_a_plain_message(caplog):
    moo = Moo("dreader")
    handler = moo.connect()
    handler.call("arqon.serve")
    moo.zgents.fifo_line("dreader", b'{"id":"q-2","method":"query","replyTo":"ghost"}')
    handler.assert_silent()
    assert moo.mailbox("dreader") == [{"id": "q-2", "method": "query", "replyTo": "ghost"}]
    assert "replyTo 'ghost' is not a registered Zgent" in caplog.text


def test_the_requests_of_one_reply_to_zgent_are_bounded_like_a_clients():
    moo = Moo("dreader", "parseclipmate")
    moo.connect().call("arqon.serve")
    for n in range(257):
        moo.zgents.inbox_line("dreader", {"id": n, "method": "q", "replyTo": "parseclipmate"})
    [busy] = moo.mailbox("parseclipmate")
    assert busy["id"] == 256 and busy["error"]["code"] == RpcCode.BUSY


def test_an_inbox_line_nested_too_deep_is_delivered_raw_and_said_so(caplog):
    moo = Moo("dreader")
    moo.zgents.fifo_line("dreader", DEEP)
    assert moo.mailbox("dreader") == [{"raw": DEEP.decode()}]
    assert "dreader-inbox: JSON nests deeper than 64 levels (server.max_json_depth); " \
        "delivered as raw" in caplog.text


def test_a_line_that_fails_inside_arqond_is_counted_logged_and_delivered_raw(caplog):
    moo = Moo("dreader")
    real_publish, failures = moo.bus.publish, []

    def publish_failing_once(env, **kwargs):
        if not failures:
            failures.append(env)
            raise RuntimeError("bus on fire")
        return real_publish(env, **kwargs)
    moo.bus.publish = publish_failing_once
    moo.zgents.fifo_line("dreader", b'{"n":1}')
    assert moo.mailbox("dreader") == [{"raw": '{"n":1}'}]
    assert moo.zgents.internal_errors_total == 1
    assert "dreader-inbox: a line failed inside arqond; delivered as raw" in caplog.text
    assert "RuntimeError: bus on fire" in caplog.text


def test_a_raw_line_that_fails_is_logged_with_its_bytes(caplog):
    moo = Moo("dreader")

    def publish_failing(env, **kwargs):
        raise RuntimeError("bus on fire")
    moo.bus.publish = publish_failing
    moo.zgents.fifo_line("dreader", b'{"n":1}')   # as JSON, then as raw: both fail
    moo.zgents.fifo_line("dreader", b"words")     # raw already: tried once
    assert moo.zgents.internal_errors_total == 2
    assert "dreader-inbox: delivering it as raw failed too; the line was b'{\"n\":1}'" in \
        caplog.text
    assert caplog.text.count("delivering it as raw failed too") == 1


def test_a_refused_fifo_line_is_counted_and_logged(caplog):
    moo = Moo("dreader")
    moo.zgents.fifo_refused("dreader", "line longer than 10 bytes", 30)
    assert moo.zgents.inbox_refused_total == 1
    assert "dreader-inbox: 30 byte(s) refused: line longer than 10 bytes" in caplog.text


def test_a_full_mailbox_drops_the_oldest_and_says_so_once_until_read(caplog):
    moo = Moo("dreader", moo={"mailbox_size": 3})
    for n in range(5):
        moo.zgents.inbox_line("dreader", {"n": n})
    assert moo.mailbox("dreader") == [{"n": 2}, {"n": 3}, {"n": 4}]
    assert moo.zgents.mailbox_dropped_total == 2
    assert caplog.text.count("mailbox of dreader full (3): dropping the oldest messages "
                             "until it reads some") == 1
    moo.connect().call("arqon.recv")
    moo.zgents.inbox_line("dreader", {"n": 5})
    moo.zgents.inbox_line("dreader", {"n": 6})
    assert caplog.text.count("mailbox of dreader full") == 2


# -- who owns a Zgent ----------------------------------------------------------------------

def test_names_in_uids_and_groups_resolve_and_unknown_ones_are_reported():
    spec = Spec.from_table("dreader", {"uids": [5, "alice", "ghost"],
                                       "groups": [7, "staff", "nogroup-here"]}, "config")
    owners, unknown = owners_of(spec, {"alice": 1001}.get, {"staff": 50}.get)
    assert owners == Owners(None, frozenset({5, 1001}), frozenset({7, 50}))
    assert unknown == ["Zgent dreader: no user 'ghost'; ignored in uids",
                       "Zgent dreader: no group 'nogroup-here'; ignored in groups"]


def test_logging_of_the_hub_goes_to_the_moo_logger(caplog):
    caplog.set_level(logging.INFO, logger="arqond.moo")
    moo = Moo("dreader")
    handler = moo.connect()
    handler.call("arqon.serve")
    handler.hang_up()
    assert [r.name for r in caplog.records] == ["arqond.moo", "arqond.moo"]
    assert "Zgent dreader: handler attached (pid=100 uid=4242 gid=4242)" in caplog.text
    assert "Zgent dreader: handler detached (pid=100 uid=4242 gid=4242)" in caplog.text
