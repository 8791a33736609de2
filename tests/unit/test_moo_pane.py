"""A Zgent's tmux pane in process: who may look at it or type into it, what arqond forwards
to the handler and holds its answer to (arqond/core/moo/pane.py, session.py), and the tmux
command line a relaying handler runs (arqond/cli/pane.py)."""

from __future__ import annotations

import pytest

from arqond.cli.pane import literal, tmux_arguments
from arqond.core.errors import RpcCode
from arqond.core.moo import pane
from arqond.core.moo.inbox import Route, route
from tests.unit.moo_harness import Moo

DREADERS_OWNERS = "the owners of dreader: who registered it, its uids and groups; and admins"
SEND = {"text": "/query volume SPX", "enter": True}


def served(moo: Moo):
    handler = moo.connect()
    handler.call("arqon.serve")
    return handler


# -- who may --------------------------------------------------------------------------------

@pytest.mark.parametrize("uid, gid, groups, allowed", [
    (0, 0, (), True),                 # root
    (4242, 9, (), True),              # arqond's own user (an admin)
    (1500, 9, (), True),              # registered it
    (1234, 9, (), True),              # named in its uids
    (2000, 9, (77,), True),           # in one of its groups
    (65534, 65534, (9,), False),      # a member of the MOO group, nothing more
])
@pytest.mark.parametrize("method, params", [(pane.CAPTURE, {"lines": 5}), (pane.SEND, SEND)])
def test_who_may_look_at_or_type_into_a_pane(uid, gid, groups, allowed, method, params):
    moo = Moo()
    moo.add("dreader", owner="uid:1500", uids=[1234], groups=[77], pane="dreader:main.0")
    handler = served(moo)
    moo.groups[uid] = frozenset({gid, *groups})
    client = moo.connect(uid=uid, gid=gid)
    client.send({"id": "p", "method": method, "params": params})
    if allowed:
        forwarded = handler.next()
        assert forwarded["method"] == method and forwarded["params"]["pane"] == "dreader:main.0"
        handler.send({"id": forwarded["id"], "result": {"pane": "dreader:main.0", "text": ""}})
        assert client.next()["id"] == "p"
        return
    client.assert_error(RpcCode.FORBIDDEN, "p", f"not allowed to manage Zgent dreader "
                        f"(allowed: {DREADERS_OWNERS})")
    assert client.received() == []
    handler.assert_silent()
    assert moo.events_named("access_refused")[-1]["text"] == \
        f"not allowed to manage Zgent dreader (allowed: {DREADERS_OWNERS})"
    assert moo.events_named("audit")[-1]["text"].startswith("Zgent dreader: handler attached")


def test_a_refusal_comes_before_any_check_of_the_params():
    moo = Moo()
    moo.add("dreader", owner="uid:1500")
    outsider = moo.connect(uid=65534, gid=65534)
    outsider.send({"id": 1, "method": pane.SEND, "params": {"rm": "-rf"}})
    outsider.assert_error(RpcCode.FORBIDDEN, 1, "not allowed to manage Zgent dreader")


# -- what goes to the handler ---------------------------------------------------------------

def test_the_handler_gets_the_registry_pane_never_one_the_caller_names():
    moo = Moo()
    moo.add("dreader", pane="dreader:main.0")
    handler = served(moo)
    moo.connect().send({"id": 1, "method": pane.CAPTURE, "params": {"lines": 30}})
    assert handler.next()["params"] == {"pane": "dreader:main.0", "lines": 30,
                                        "max_bytes": 16384}
    moo.connect().send({"id": 2, "method": pane.SEND, "params": {"pane": "root:0.0",
                                                                 "text": "x"}})
    handler.assert_silent()


@pytest.mark.parametrize("method, params, forwarded", [
    (pane.CAPTURE, {}, {"lines": 0}),
    (pane.CAPTURE, {"lines": 100_000}, {"lines": 100_000}),
    (pane.SEND, {"text": "ls"}, {"text": "ls", "keys": [], "enter": False}),
    (pane.SEND, {"keys": ["C-c"]}, {"text": "", "keys": ["C-c"], "enter": False}),
    (pane.SEND, {"enter": True}, {"text": "", "keys": [], "enter": True}),
    (pane.SEND, {"text": "a;", "keys": ["C-u", "Escape"], "enter": True},
     {"text": "a;", "keys": ["C-u", "Escape"], "enter": True}),
])
def test_what_a_caller_may_ask_of_a_pane(method, params, forwarded):
    got = pane.forwarded(method, params, "z:main.0", 100)
    expected = {"pane": "z:main.0", **forwarded}
    if method == pane.CAPTURE:
        expected["max_bytes"] = 100
    assert got == expected


LINES = "lines must be an integer from 0 to 100000 (scrollback lines above the visible pane)"
KEYS = ("keys must be a list of at most 64 tmux key names such as C-c, Escape or Up "
        "(printable, no blanks, at most 32 characters)")


@pytest.mark.parametrize("method, params, message", [
    (pane.CAPTURE, {"lines": -1}, LINES),
    (pane.CAPTURE, {"lines": 100_001}, LINES),
    (pane.CAPTURE, {"lines": True}, LINES),
    (pane.CAPTURE, {"lines": 2.5}, LINES),
    (pane.CAPTURE, {"pane": "root:0"}, "unknown param(s) pane (known: lines)"),
    (pane.SEND, {}, "nothing to send: give text, keys or enter"),
    (pane.SEND, {"text": ""}, "nothing to send: give text, keys or enter"),
    (pane.SEND, {"text": 5}, "text must be a string (typed as it is)"),
    (pane.SEND, {"keys": "C-c"}, KEYS),
    (pane.SEND, {"keys": ["C c"]}, KEYS),
    (pane.SEND, {"keys": [""]}, KEYS),
    (pane.SEND, {"keys": ["x" * 33]}, KEYS),
    (pane.SEND, {"keys": ["é"]}, KEYS),
    (pane.SEND, {"keys": ["a"] * 65}, KEYS),
    (pane.SEND, {"enter": "yes"}, "enter must be true or false"),
    (pane.SEND, {"text": "x", "target": "root:0"},
     "unknown param(s) target (known: text, keys, enter)"),
])
def test_bad_params_get_the_exact_error_and_nothing_reaches_the_handler(method, params,
                                                                        message):
    moo = Moo("dreader")
    handler = served(moo)
    client = moo.connect()
    client.send({"id": "b", "method": method, "params": params})
    client.assert_error(RpcCode.INVALID_PARAMS, "b", message)
    handler.assert_silent()
    assert moo.events_named("audit")[-1]["text"].startswith("Zgent dreader: handler attached")
    assert client.call("arqon.ping", request_id=2)["id"] == 2   # still usable


def test_params_that_are_not_an_object_are_refused():
    moo = Moo("dreader")
    client = moo.connect()
    client.send({"id": 1, "method": pane.CAPTURE, "params": [5]})
    client.assert_error(RpcCode.INVALID_PARAMS, 1, '"params" must be an object')


def test_every_send_is_an_audit_line_with_the_principal_and_what_it_types():
    moo = Moo()
    moo.add("dreader", owner="uid:1500")
    handler = served(moo)
    client = moo.connect(uid=1500, gid=1500)
    client.send({"id": 1, "method": pane.SEND,
                 "params": {"keys": ["C-c"], "text": "x" * 130, "enter": True}})
    handler.next()
    assert moo.events_named("audit")[-1] == {
        "text": "Zgent dreader: typing into pane dreader:main.0: keys C-c, then text "
                f"'{'x' * 120}...' (130 characters), then Enter (pid=101 uid=1500 gid=1500)",
        "zgent": "dreader", "principal": "uid:1500", "uid": 1500}


def test_without_a_handler_a_pane_request_is_not_serving_and_nothing_is_audited():
    moo = Moo("dreader")
    client = moo.connect()
    client.send({"id": 1, "method": pane.SEND, "params": SEND})
    client.assert_error(RpcCode.NOT_SERVING, 1,
                        "dreader is not serving: no handler attached (arqon serve dreader)")
    assert moo.events_named("audit") == []
    client.send({"id": 2, "method": pane.CAPTURE})
    client.assert_error(RpcCode.NOT_SERVING, 2, "dreader is not serving")


def test_a_handlers_error_reaches_the_caller_as_it_is():
    moo = Moo("dreader")
    handler = served(moo)
    client = moo.connect()
    client.send({"id": "c", "method": pane.CAPTURE})
    error = {"code": -32000, "message": "tmux capture-pane -t dreader:main.0: can't find "
             "session: dreader"}
    handler.send({"id": handler.next()["id"], "error": error})
    assert client.next() == {"jsonrpc": "2.0", "id": "c", "error": error}


# -- what comes back ------------------------------------------------------------------------

def test_a_capture_over_the_bound_is_cut_to_its_last_lines_counted_and_logged():
    moo = Moo("dreader", moo={"pane_max_bytes": 10})
    handler = served(moo)
    client = moo.connect()
    client.send({"id": "c", "method": pane.CAPTURE})
    handler.send({"id": handler.next()["id"],
                  "result": {"pane": "dreader:main.0", "text": "one\ntwo\nthree\n\n\n"}})
    client.assert_reply("c", {"pane": "dreader:main.0", "text": "two\nthree",
                              "truncated": True})
    assert moo.zgents.pane_captures_cut_total == 1
    assert moo.events_named("limit_reached") == [
        {"limit": "moo.pane_max_bytes", "value": 10, "zgent": "dreader"}]


def test_a_capture_at_the_bound_is_whole_and_a_handlers_own_cut_is_counted():
    moo = Moo("dreader", moo={"pane_max_bytes": 9})
    handler = served(moo)
    client = moo.connect()
    client.send({"id": 1, "method": pane.CAPTURE})
    handler.send({"id": handler.next()["id"], "result": {"text": "two\nthree"}})
    client.assert_reply(1, {"pane": "dreader:main.0", "text": "two\nthree",
                            "truncated": False})
    assert moo.zgents.pane_captures_cut_total == 0
    client.send({"id": 2, "method": pane.CAPTURE})
    handler.send({"id": handler.next()["id"], "result": {"text": "three", "truncated": True}})
    client.assert_reply(2, {"pane": "dreader:main.0", "text": "three", "truncated": True})
    assert moo.zgents.pane_captures_cut_total == 1


def test_a_capture_without_text_is_an_internal_error_for_the_caller(caplog):
    moo = Moo("dreader")
    handler = served(moo)
    client = moo.connect()
    client.send({"id": 1, "method": pane.CAPTURE})
    handler.send({"id": handler.next()["id"], "result": "the pane"})
    client.assert_error(RpcCode.INTERNAL_ERROR, 1, "dreader's handler answered "
                        'arqon.pane.capture wrongly: its result is not {"text": string, ...}')
    assert "Zgent dreader: handler answered arqon.pane.capture wrongly" in caplog.text


@pytest.mark.parametrize("pane_max_bytes, max_line_bytes, bound", [
    (16384, 65536, 16384),
    (65536, 65536, 30720),     # what fits, escaped, in the handler's one answer line
    (100, 1024, 0),
])
def test_a_capture_never_holds_more_than_the_handlers_answer_line_can(pane_max_bytes,
                                                                      max_line_bytes, bound):
    assert pane.bound(pane_max_bytes, max_line_bytes) == bound
    moo = Moo("dreader", moo={"pane_max_bytes": pane_max_bytes,
                              "max_line_bytes": max_line_bytes})
    handler = served(moo)
    moo.connect().send({"id": 1, "method": pane.CAPTURE})
    assert handler.next()["params"]["max_bytes"] == bound


@pytest.mark.parametrize("text, max_bytes, kept, cut", [
    ("", 10, "", False),
    ("\n\n\n", 10, "", False),
    ("a\nb\n\n\n", 3, "a\nb", False),                  # blank lines below do not count
    ("two\nthree", 9, "two\nthree", False),              # at the bound: whole
    ("one\ntwo\nthree", 8, "three", True),             # a part of a line is dropped whole
    ("one\ntwo\nthree", 9, "two\nthree", True),        # a cut right after a newline keeps it
    ("abcdefghij", 4, "ghij", True),                   # one long line: its end
    ("xx\n\u00e9\u00e9\u00e9", 5, "\u00e9\u00e9", True),   # never half a character
])
def test_a_capture_keeps_the_bottom_of_the_pane_within_the_bound(text, max_bytes, kept, cut):
    assert pane.tail(text, max_bytes) == (kept, cut)


# -- where pane requests come from ----------------------------------------------------------

@pytest.mark.parametrize("method", [pane.CAPTURE, pane.SEND, "arqon.ping"])
def test_arqonds_methods_through_an_inbox_never_reach_the_handler(method):
    request = {"id": "p", "method": method, "params": SEND, "replyTo": "parseclipmate"}
    way, why = route("dreader", request, {"dreader", "parseclipmate"}, True)
    assert way is Route.MESSAGE
    assert why == (f"dreader-inbox: request kept as a plain message: {method} is asked on "
                   "dreader.sock, where arqond knows who asks")


def test_a_pane_request_written_to_an_inbox_stays_a_message_in_the_mailbox(caplog):
    moo = Moo("dreader", "parseclipmate")
    handler = served(moo)
    request = {"id": "p", "method": pane.SEND, "params": SEND, "replyTo": "parseclipmate"}
    moo.zgents.inbox_line("dreader", request)
    handler.assert_silent()
    assert moo.mailbox("dreader") == [request] and moo.mailbox("parseclipmate") == []
    assert "arqon.pane.send is asked on dreader.sock" in caplog.text


# -- what callers ask, and what a relaying handler runs --------------------------------------

@pytest.mark.parametrize("lines, text, keys, enter, asked", [
    (0, None, [], False, (pane.CAPTURE, {"lines": 0})),
    (7, None, [], False, (pane.CAPTURE, {"lines": 7})),
    (0, "ls", [], True, (pane.SEND, {"text": "ls", "keys": [], "enter": True})),
    (0, "", [], False, (pane.SEND, {"text": "", "keys": [], "enter": False})),  # refused later
    (0, None, ["C-c"], False, (pane.SEND, {"text": "", "keys": ["C-c"], "enter": False})),
])
def test_a_caller_looks_unless_it_gives_something_to_type(lines, text, keys, enter, asked):
    assert pane.asked(lines, text, keys, enter) == asked


def test_lines_and_typing_together_are_refused():
    with pytest.raises(pane.BadParams, match="^lines is for looking at the pane, not with "
                       "text, keys or enter$"):
        pane.asked(3, "ls", [], False)


@pytest.mark.parametrize("argument, given", [
    ("ls", "ls"), ("ls;", "ls\\;"), (";", "\\;"), ("a\\;", "a\\\\;"), ("a;b", "a;b"),
])
def test_an_argument_ending_in_a_semicolon_stays_literal_for_tmux(argument, given):
    assert literal(argument) == given


@pytest.mark.parametrize("method, params, arguments", [
    (pane.CAPTURE, {"pane": "d:main.0", "lines": 0, "max_bytes": 9},
     ["capture-pane", "-p", "-t", "d:main.0"]),
    (pane.CAPTURE, {"pane": "d:main.0", "lines": 50, "max_bytes": 9},
     ["capture-pane", "-p", "-t", "d:main.0", "-S", "-50"]),
    (pane.SEND, {"pane": "d:0", "keys": [], "text": "-rf;", "enter": False},
     ["send-keys", "-t", "d:0", "-l", "--", "-rf\\;"]),
    (pane.SEND, {"pane": "d:0", "keys": ["C-c", "C-;"], "text": "ls", "enter": True},
     ["send-keys", "-t", "d:0", "--", "C-c", "C-\\;", ";",
      "send-keys", "-t", "d:0", "-l", "--", "ls", ";", "send-keys", "-t", "d:0", "Enter"]),
    (pane.SEND, {"pane": "x;", "keys": [], "text": "", "enter": True},
     ["send-keys", "-t", "x\\;", "Enter"]),
])
def test_the_tmux_command_line_of_a_relayed_request(method, params, arguments):
    assert tmux_arguments(method, params) == arguments
