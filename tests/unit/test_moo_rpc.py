"""Requests waiting on handlers (arqond/core/moo/rpc.py), and the JSON-RPC shapes Zgents
speak (arqond/core/jsonrpc.py), in process with manual timers."""

from __future__ import annotations

import pytest

from arqond.core import jsonrpc
from arqond.core.errors import RpcCode
from arqond.core.jsonrpc import RpcError
from arqond.core.moo.rpc import DEADLINES, MAX_PENDING_PER_ORIGIN, Calls
from tests.unit.moo_harness import ManualTimers


class Handler:
    def __init__(self, zgent: str = "dreader") -> None:
        self.zgent = zgent
        self.got: list[dict] = []

    def write(self, obj: dict) -> None:
        self.got.append(obj)


class Asker:
    def __init__(self) -> None:
        self.answers: list[dict] = []

    def reply(self, answer: dict) -> None:
        self.answers.append(answer)


@pytest.fixture
def timers() -> ManualTimers:
    return ManualTimers()


@pytest.fixture
def calls(timers) -> Calls:
    return Calls(timers, lambda: timers.now)


def test_ids_are_renamed_so_two_askers_never_get_each_others_answer(calls):
    handler, a, b = Handler(), Asker(), Asker()
    calls.forward("dreader", handler, {"id": "q-1", "method": "m"}, a.reply, a, 30)
    calls.forward("dreader", handler, {"id": "q-1", "method": "m", "params": [2]}, b.reply, b, 30)
    first, second = handler.got
    assert first == {"jsonrpc": "2.0", "method": "m", "id": first["id"]}
    assert second["params"] == [2] and first["id"] != second["id"]
    assert calls.answer(handler, {"id": second["id"], "result": "B"})
    assert calls.answer(handler, {"id": first["id"], "error": {"code": 1, "message": "no"}})
    assert a.answers == [{"jsonrpc": "2.0", "id": "q-1", "error": {"code": 1, "message": "no"}}]
    assert b.answers == [{"jsonrpc": "2.0", "id": "q-1", "result": "B"}]
    assert calls.waiting == {} and calls.by_origin == {} and calls.by_handler == {}


def test_a_notification_goes_out_without_an_id_and_waits_for_nothing(calls):
    handler = Handler()
    calls.forward("dreader", handler, {"method": "tick"}, None, None, 30)
    assert handler.got == [{"jsonrpc": "2.0", "method": "tick"}] and calls.waiting == {}
    calls.forward("dreader", None, {"method": "tick"}, None, None, 30)   # no handler: dropped
    assert calls.handler_requests_total == 1


def test_without_a_handler_the_asker_hears_at_once(calls):
    asker = Asker()
    calls.forward("dreader", None, {"id": 3, "method": "m"}, asker.reply, asker, 30)
    assert asker.answers == [jsonrpc.error(3, RpcCode.NOT_SERVING, "dreader is not serving: "
                                           "no handler attached (arqon serve dreader)")]


def test_each_origin_has_at_most_so_many_calls_waiting(calls):
    handler, flood, other = Handler(), Asker(), Asker()
    for n in range(MAX_PENDING_PER_ORIGIN):
        calls.forward("dreader", handler, {"id": n, "method": "m"}, flood.reply, flood, 30)
    assert flood.answers == [] and calls.count_for(flood) == MAX_PENDING_PER_ORIGIN
    calls.forward("dreader", handler, {"id": "x", "method": "m"}, flood.reply, flood, 30)
    assert flood.answers == [jsonrpc.error("x", RpcCode.BUSY, "more than 256 requests waiting "
                                           "from this client; wait for some replies")]
    calls.forward("dreader", handler, {"id": "y", "method": "m"}, other.reply, other, 30)
    assert other.answers == [] and calls.count_for(other) == 1


def test_a_call_times_out_at_the_handler_timeout_and_a_late_answer_is_dropped(calls, timers,
                                                                            caplog):
    handler, asker = Handler(), Asker()
    calls.forward("dreader", handler, {"id": "q", "method": "m"}, asker.reply, asker, 2.5)
    timers.advance(2.4)
    assert asker.answers == []
    timers.advance(0.1)
    assert asker.answers == [jsonrpc.error("q", RpcCode.TIMEOUT,
                                           "dreader's handler did not answer within 2.5s")]
    assert "Zgent dreader: handler did not answer within 2.5s" in caplog.text
    assert not calls.answer(handler, {"id": handler.got[0]["id"], "result": 1})
    assert (calls.handler_timeouts_total, calls.late_replies_total) == (1, 1)
    assert timers.armed == {}


def test_a_call_answered_in_time_is_never_timed_out(calls, timers):
    handler, asker = Handler(), Asker()
    calls.forward("dreader", handler, {"id": "q", "method": "m"}, asker.reply, asker, 1)
    calls.answer(handler, {"id": handler.got[0]["id"], "result": 1})
    timers.advance(5)
    assert len(asker.answers) == 1 and calls.handler_timeouts_total == 0
    assert timers.armed == {}   # it fired, found nothing due, and stays off


def test_one_timer_serves_every_call_each_at_its_own_deadline(calls, timers):
    handler, asker = Handler(), Asker()
    for n in range(3):
        calls.forward("dreader", handler, {"id": n, "method": "m"}, asker.reply, asker, 10)
        timers.advance(1)
    assert list(timers.armed) == [DEADLINES] and timers.due(DEADLINES) == 7
    timers.advance(7)
    assert [a["id"] for a in asker.answers] == [0]
    timers.advance(1)
    assert [a["id"] for a in asker.answers] == [0, 1]
    calls.answer(handler, {"id": handler.got[2]["id"], "result": "in time"})
    timers.advance(10)
    assert [a["id"] for a in asker.answers] == [0, 1, 2] and asker.answers[2]["result"]
    assert timers.armed == {}


def test_a_shorter_timeout_after_a_reload_is_kept_for_the_calls_made_since(calls, timers):
    handler, asker = Handler(), Asker()
    calls.forward("dreader", handler, {"id": "old", "method": "m"}, asker.reply, asker, 30)
    timers.advance(1)
    calls.forward("dreader", handler, {"id": "new", "method": "m"}, asker.reply, asker, 2)
    timers.advance(2)
    assert [a["id"] for a in asker.answers] == ["new"]
    assert asker.answers[0]["error"]["message"] == "dreader's handler did not answer within 2s"
    timers.advance(27)
    assert [a["id"] for a in asker.answers] == ["new", "old"]


@pytest.mark.parametrize("answer, problem", [
    ({"result": 1, "error": {"code": 1, "message": "m"}}, "exactly one"),
    ({}, "exactly one"),
    ({"error": "bad"}, '"error" must be {"code": integer, "message": string}'),
    ({"result": 1, "extra": 2}, "unknown member(s) 'extra'"),
])
def test_an_invalid_answer_becomes_an_internal_error_for_the_asker(calls, answer, problem):
    handler, asker = Handler(), Asker()
    calls.forward("dreader", handler, {"id": "q", "method": "m"}, asker.reply, asker, 30)
    assert calls.answer(handler, {"id": handler.got[0]["id"], **answer})
    [error] = asker.answers
    assert error["error"]["code"] == RpcCode.INTERNAL_ERROR and problem in \
        error["error"]["message"]


def test_only_the_handler_a_call_went_to_may_answer_it(calls):
    mine, other, asker = Handler(), Handler("other"), Asker()
    calls.forward("dreader", mine, {"id": "q", "method": "m"}, asker.reply, asker, 30)
    key = mine.got[0]["id"]
    assert not calls.answer(other, {"id": key, "result": "stolen"})
    assert not calls.answer(other, {"id": 5, "result": "not ours"})   # not even a string
    assert asker.answers == [] and key in calls.waiting   # still answerable by its handler
    assert calls.answer(mine, {"id": key, "result": "mine"})
    assert asker.answers[0]["result"] == "mine"


def test_a_handler_gone_answers_everything_it_owed_and_only_that(calls):
    gone, staying, asker = Handler(), Handler("other"), Asker()
    calls.forward("dreader", gone, {"id": 1, "method": "m"}, asker.reply, asker, 30)
    calls.forward("dreader", gone, {"id": 2, "method": "m"}, asker.reply, asker, 30)
    calls.forward("other", staying, {"id": 3, "method": "m"}, asker.reply, asker, 30)
    calls.handler_gone(gone, "dreader's handler went away before answering")
    assert [(a["id"], a["error"]["code"]) for a in asker.answers] == [
        (1, RpcCode.NOT_SERVING), (2, RpcCode.NOT_SERVING)]
    assert calls.count_for(asker) == 1


def test_an_origin_gone_is_forgotten_unanswered(calls, timers):
    handler, gone = Handler(), Asker()
    calls.forward("dreader", handler, {"id": 1, "method": "m"}, gone.reply, gone, 30)
    calls.origin_gone(gone)
    assert calls.waiting == {} and gone.answers == []
    calls.origin_gone(gone)   # nothing left: nothing happens
    timers.advance(30)
    assert gone.answers == [] and calls.handler_timeouts_total == 0


def test_stopping_answers_every_call_and_leaves_no_timer(calls, timers):
    handler, a, b = Handler(), Asker(), Asker()
    calls.forward("dreader", handler, {"id": 1, "method": "m"}, a.reply, a, 30)
    calls.forward("dreader", handler, {"id": 2, "method": "m"}, b.reply, b, 30)
    calls.stop("arqond is stopping")
    assert timers.armed == {}
    assert a.answers == [jsonrpc.error(1, RpcCode.NOT_SERVING, "arqond is stopping")]
    assert b.answers == [jsonrpc.error(2, RpcCode.NOT_SERVING, "arqond is stopping")]


# -- JSON-RPC shapes ------------------------------------------------------------------------

def test_json_rpc_decoding():
    with pytest.raises(RpcError) as caught:
        jsonrpc.decode(b"{nope", 64)
    assert caught.value.code == RpcCode.PARSE_ERROR
    with pytest.raises(RpcError) as caught:
        jsonrpc.decode(b"[1]", 64)
    assert caught.value.code == RpcCode.INVALID_REQUEST and caught.value.message == \
        "a line must be a JSON object, not an array"
    with pytest.raises(RpcError) as caught:
        jsonrpc.decode(b"[" * 70 + b"]" * 70, 64)
    assert caught.value.code == RpcCode.INVALID_REQUEST
    assert caught.value.message == "invalid request: JSON nests deeper than 64 levels " \
        "(server.max_json_depth)"
    assert jsonrpc.decode(b'{"id":1}', 64) == {"id": 1}


def test_json_rpc_request_checks():
    jsonrpc.check_request({"id": "q-1", "method": "query", "params": {}, "replyTo": "pc"})
    for bad, needle in [({"id": "q", "method": 3}, '"method"'),
                        ({"id": "q", "method": ""}, '"method"'),
                        ({"id": [1], "method": "m"}, '"id"'),
                        ({"id": True, "method": "m"}, '"id"'),
                        ({"id": 1, "method": "m", "params": 5}, '"params"'),
                        ({"id": 1, "method": "m", "jsonrpc": "1.0"}, '"jsonrpc"'),
                        ({"id": 1, "method": "m", "replyTo": 5}, '"replyTo"'),
                        ({"id": 1, "method": "m", "extra": 1}, "'extra'")]:
        with pytest.raises(RpcError) as caught:
            jsonrpc.check_request(bad)
        assert caught.value.code == RpcCode.INVALID_REQUEST and needle in caught.value.message
        # The id is echoed only when it is one a reply may carry.
        assert caught.value.request_id == (bad["id"] if jsonrpc.valid_id(bad["id"]) else None)


def test_json_rpc_response_checks_and_shapes():
    assert jsonrpc.check_response({"id": 1, "result": None}) is None
    assert "exactly one" in jsonrpc.check_response({"id": 1})
    assert "exactly one" in jsonrpc.check_response({"id": 1, "result": 1, "error": {}})
    assert '"error"' in jsonrpc.check_response({"id": 1, "error": "bad"})
    assert jsonrpc.line(jsonrpc.result(1, [])) == b'{"jsonrpc":"2.0","id":1,"result":[]}\n'
    assert jsonrpc.params_dict({"id": 1}) == {}
    with pytest.raises(RpcError) as caught:
        jsonrpc.params_dict({"id": 4, "params": [1]})
    assert caught.value.code == RpcCode.INVALID_PARAMS and caught.value.request_id == 4
