"""A Zgent socket session in process (arqond/core/moo/session.py): lines in, replies out."""

from __future__ import annotations

import logging

import pytest

from arqond.core.errors import RpcCode
from arqond.core.moo.registry import Status
from arqond.core.moo.rpc import MAX_PENDING_PER_ORIGIN
from arqond.core.moo.session import TRANSITIONS, Event, Mode
from tests.unit.moo_harness import OWN_UID, Moo


@pytest.fixture
def moo() -> Moo:
    return Moo("dreader", "parseclipmate")


def test_ping_and_info_answer_at_once(moo):
    client = moo.connect()
    pong = client.call("arqon.ping", request_id="p")
    assert pong["id"] == "p" and pong["result"]["pong"] is True
    assert pong["result"]["zgent"] == "dreader"
    info = client.call("arqon.info", request_id=2)
    assert info["result"] == moo.entry("dreader")
    assert info["result"]["lastSeen"] == "2026-02-12T10:00:00Z"


def test_a_notification_gets_no_answer(moo):
    client = moo.connect()
    client.send({"method": "arqon.ping"})
    client.assert_silent()


@pytest.mark.parametrize("line, code, needle", [
    (b"this is not json\n", RpcCode.PARSE_ERROR, "parse error"),
    (b'["id"]\n', RpcCode.INVALID_REQUEST, "JSON object"),
    (b'{"id":"x"}\n', RpcCode.INVALID_REQUEST, 'no "method"'),
    (b'{"id":"x","method":7}\n', RpcCode.INVALID_REQUEST, '"method" must be'),
    (b'{"id":"x","method":"arqon.teleport"}\n', RpcCode.METHOD_NOT_FOUND, "method not found"),
    (b'{"id":"x","method":"arqon.teleport","params":[1]}\n', RpcCode.INVALID_PARAMS, "params"),
    (b'{"id":"x","method":"arqon.recv","params":{"wait":-1}}\n', RpcCode.INVALID_PARAMS,
     "wait must be 0 to 3600 seconds"),
    (b'{"id":"x","method":"arqon.recv","params":{"wait":true}}\n', RpcCode.INVALID_PARAMS,
     "wait must be"),
    (b'{"id":"x","method":"arqon.recv","params":{"wait":3600.5}}\n', RpcCode.INVALID_PARAMS,
     "wait must be"),
    (b'{"id":"x","method":"arqon.history","params":{"channel":5}}\n', RpcCode.INVALID_PARAMS,
     "channel must be a string"),
    (b'{"id":"x","method":"arqon.history","params":{"limit":0}}\n', RpcCode.INVALID_PARAMS,
     "limit must be an integer from 1 to 500"),
    (b'{"id":"x","method":"arqon.history","params":{"limit":501}}\n', RpcCode.INVALID_PARAMS,
     "limit must be"),
    (b'{"id":"x","method":"arqon.subscribe","params":{"channels":"moo:x"}}\n',
     RpcCode.INVALID_PARAMS, 'channels must be a list of "room:channel"'),
    (b'{"id":"x","method":"arqon.subscribe","params":{"channels":["nochannel"]}}\n',
     RpcCode.INVALID_PARAMS, "'nochannel' is not \"room:channel\""),
    (b'{"id":"x","method":"arqon.subscribe","params":{"channels":["Bad\\u0007Room:x"]}}\n',
     RpcCode.INVALID_PARAMS, "room"),
])
def test_bad_lines_get_the_exact_error_and_the_connection_stays_usable(moo, line, code,
                                                                      needle):
    client = moo.connect()
    client.send(line)
    client.assert_error(code, message=needle)
    assert moo.zgents.socket_errors_total == 1
    assert client.call("arqon.ping", request_id=9)["id"] == 9
    client.assert_open()


def test_a_request_without_a_handler_is_answered_not_serving_at_once(moo):
    client = moo.connect()
    client.send({"id": "q-1", "method": "query"})
    client.assert_error(RpcCode.NOT_SERVING, "q-1",
                        "dreader is not serving: no handler attached (arqon serve dreader)")
    client.send({"method": "query"})   # a notification: nothing comes back
    client.assert_silent()


def test_an_over_long_line_is_refused_whole_and_the_next_is_answered(caplog):
    moo = Moo("dreader", moo={"max_line_bytes": 100})
    client = moo.connect()
    client.send(b'{"id":1,"method":"arqon.ping","pad":"' + b"x" * 200 + b'"}\n'
                b'{"id":2,"method":"arqon.ping"}\n')
    [refused, pong] = client.received()
    assert refused == {"jsonrpc": "2.0", "id": None, "error": {
        "code": RpcCode.INVALID_REQUEST, "message": "refused: line longer than 100 bytes"}}
    assert pong["id"] == 2
    assert "dreader.sock: line refused: line longer than 100 bytes" in caplog.text


def test_history_returns_the_rooms_stored_messages(moo):
    moo.zgents.inbox_line("dreader", {"n": 1})
    moo.zgents.inbox_line("dreader", {"n": 2})
    client = moo.connect()
    history = client.call("arqon.history", {"channel": "inbox", "limit": 1})["result"]
    assert history["room"] == "dreader" and history["channel"] == "inbox"
    assert [m["payload"] for m in history["messages"]] == [{"n": 2}]
    other = moo.connect("parseclipmate")
    assert other.call("arqon.history")["result"] == {"room": "parseclipmate",
                                                     "channel": None, "messages": []}


def test_a_session_of_an_unregistered_zgent_is_told_so(moo):
    client = moo.connect("parseclipmate")
    moo.zgents.sessions.discard(client.session)   # still connected when the Zgent went
    moo.zgents.remove("parseclipmate")
    client.send({"id": 3, "method": "arqon.ping"})
    client.assert_error(RpcCode.NOT_SERVING, 3, "parseclipmate is unregistered")
    client.hang_up()
    assert client.session.mode is Mode.CLOSED


# -- the end of the input, and closing --------------------------------------------------------

def test_a_last_request_without_newline_is_answered_then_the_connection_closes(moo):
    client = moo.connect()
    client.session.receive_data(b'{"id":7,"method":"arqon.ping"}')
    client.assert_silent()
    client.session.receive_eof()
    assert client.next()["id"] == 7
    client.assert_closed("close")
    assert client.session.mode is Mode.CLOSED


def test_blanks_at_the_end_of_input_are_no_request(moo):
    client = moo.connect()
    client.session.receive_data(b"  \t")
    client.session.receive_eof()
    client.assert_silent()
    client.assert_closed("close")


def test_nothing_is_written_once_arqond_closed_the_connection(moo):
    client = moo.connect()
    client.session.end()
    assert client.session.send_line(b'{"late":true}\n')
    client.session.receive_eof()   # the peer's end of file after arqond's close
    assert client.link.written == [] and client.session.mode is Mode.CLOSED


def test_the_bus_cutting_a_socket_client_off_drops_its_connection(moo):
    client = moo.connect()
    client.send({"type": "command", "command": "ping"})
    client.received()
    moo.bus.cut_off(client.session.client)
    client.assert_closed("abort")


def test_a_last_line_over_the_bound_is_refused_at_the_end_of_input():
    moo = Moo("dreader", moo={"max_line_bytes": 10})
    client = moo.connect()
    client.session.receive_data(b"x" * 30)
    client.session.receive_eof()
    client.assert_error(RpcCode.INVALID_REQUEST, None, "longer than 10 bytes")
    client.assert_closed("close")


def test_a_client_that_half_closes_waiting_for_a_handler_gets_its_answer_first(moo):
    handler = moo.connect()
    handler.call("arqon.serve")
    client = moo.connect()
    client.send({"id": "q", "method": "query"})
    client.session.receive_eof()
    assert client.session.mode is Mode.DRAINING
    client.assert_open()
    forwarded = handler.next()
    handler.send({"id": forwarded["id"], "result": 42})
    client.assert_reply("q", 42)
    client.assert_closed("close")


def test_a_client_that_half_closes_in_a_recv_wait_gets_null_then_the_close(moo):
    client = moo.connect()
    client.send({"id": "w", "method": "arqon.recv", "params": {"wait": 5}})
    client.session.receive_eof()
    client.assert_open()
    moo.timers.advance(4.9)
    client.assert_silent()
    moo.timers.advance(0.1)
    client.assert_reply("w", None)
    client.assert_closed("close")


def test_a_subscriber_that_half_closes_keeps_its_notifications(moo):
    client = moo.connect()
    client.call("arqon.subscribe")
    client.session.receive_eof()
    assert client.session.mode is Mode.SUBSCRIBED
    moo.zgents.inbox_line("dreader", {"n": 1})
    assert client.next()["method"] == "arqon.message"
    client.assert_open()


def test_a_handler_that_half_closes_is_closed_at_once(moo):
    handler = moo.connect()
    handler.call("arqon.serve")
    handler.session.receive_eof()
    handler.assert_closed("close")


def test_every_mode_change_is_in_the_table_and_logged(moo, caplog):
    caplog.set_level(logging.DEBUG, logger="arqond.moo")
    client = moo.connect()
    client.call("arqon.subscribe")
    assert "dreader socket (pid=100 uid=4242 gid=4242): client -> subscribed on subscribe" \
        in caplog.text
    assert set(TRANSITIONS.values()) <= set(Mode)
    # Serving and subscribing exclude each other; nothing comes back from CLOSED.
    assert (Mode.SERVING, Event.SUBSCRIBE) not in TRANSITIONS
    assert (Mode.SUBSCRIBED, Event.SERVE) not in TRANSITIONS
    assert not [pair for pair in TRANSITIONS if pair[0] is Mode.CLOSED]


def test_a_connection_serves_or_subscribes_not_both(moo):
    subscriber = moo.connect()
    subscriber.call("arqon.subscribe")
    subscriber.send({"id": "s", "method": "arqon.serve"})
    subscriber.assert_error(RpcCode.INVALID_REQUEST, "s", "this connection is subscribed "
                            "(arqon.subscribe); a connection serves or subscribes, not both")
    assert moo.zgents.served["dreader"].handler is None
    handler = moo.connect()
    handler.call("arqon.serve")
    handler.send({"id": "t", "method": "arqon.subscribe"})
    handler.assert_error(RpcCode.INVALID_REQUEST, "t", "this connection is serving")
    assert handler.session.client is None   # joined nothing


# -- limits ---------------------------------------------------------------------------------

def test_clients_past_max_clients_are_refused_and_closed(caplog):
    moo = Moo("dreader", moo={"max_clients": 2})
    first, second = moo.connect(), moo.connect()
    third = moo.connect()
    third.assert_error(RpcCode.BUSY, None, "arqond serves 2 Zgent socket clients already")
    third.assert_closed("close")
    third.send({"id": 1, "method": "arqon.ping"})   # nothing more is read
    third.assert_silent()
    assert "dreader.sock: client (pid=102 uid=4242 gid=4242) refused: moo.max_clients (2) " \
        "reached" in caplog.text
    assert (moo.zgents.socket_connections_total, moo.zgents.socket_clients_refused_total) \
        == (3, 1)
    third.hang_up()
    first.hang_up()
    assert moo.connect().call("arqon.ping")["result"]["pong"]   # its slot is free again
    second.assert_open()


def test_a_client_past_its_buffer_bound_is_cut_off_alone(caplog):
    moo = Moo("dreader", moo={"client_buffer_bytes": 1000})
    flood, calm = moo.connect(), moo.connect()
    flood.link.stalled = True
    for n in range(20):
        flood.send({"id": n, "method": "arqon.info"})
    flood.assert_closed("abort")
    assert moo.zgents.socket_clients_cut_total == 1
    assert "dreader.sock: client (pid=100 uid=4242 gid=4242) fell more than 1000 bytes " \
        "behind; disconnected" in caplog.text
    written = len(flood.link.written)
    flood.send({"id": 99, "method": "arqon.ping"})
    assert len(flood.link.written) == written   # nothing more goes out
    assert calm.call("arqon.ping")["result"]["pong"]


def test_a_write_that_fails_on_a_closing_link_is_not_a_cut_off(moo):
    client = moo.connect()
    client.link.fail_writes = True
    client.send({"id": 1, "method": "arqon.ping"})
    assert moo.zgents.socket_clients_cut_total == 0


# -- bus envelopes and subscriptions ----------------------------------------------------------

def test_bus_envelopes_on_a_socket_act_as_over_websocket(moo):
    watcher = moo.watch("science", "general")
    client = moo.connect()
    client.send({"type": "message", "room": "science", "channel": "general",
                 "payload": {"from": "socket"}})
    [ack] = client.received()
    assert ack["type"] == "message_response"
    assert watcher[-1]["payload"] == {"from": "socket"} and watcher[-1]["id"] == ack["id"]
    client.send({"type": "message", "room": "science", "bogus": 1, "payload": {}})
    error = client.next()
    assert error["type"] == "error" and "'bogus'" in error["error"]
    assert moo.bus.clients[client.session.client.id].peer == \
        "dreader.sock pid=100 uid=4242 gid=4242"
    client.hang_up()
    assert client.session.client.id not in moo.bus.clients


def test_subscribe_streams_the_zgents_room_and_more_and_announces_new_channels(moo):
    events = []
    moo.bus.listeners.append(lambda event, fields: events.append((event, fields)))
    watcher = moo.connect()
    answer = watcher.call("arqon.subscribe", {"channels": ["moo:broadcast"]})
    assert answer["result"] == {"subscribed": ["dreader:*", "moo:broadcast"],
                                "method": "arqon.message"}
    assert ("channel_created", {"room": "moo", "channel": "broadcast",
                                "created_by": watcher.session.client.id,
                                "principal": "uid:4242", "uid": 4242}) in events
    moo.zgents.inbox_line("dreader", {"n": 1})
    note = watcher.next()
    assert note["method"] == "arqon.message" and "id" not in note
    assert (note["params"]["room"], note["params"]["channel"], note["params"]["payload"]) == \
        ("dreader", "inbox", {"n": 1})
    # Subscribing does not consume: the message is still in the mailbox.
    assert moo.mailbox("dreader") == [{"n": 1}]
    # A second subscribe adds to the first.
    assert watcher.call("arqon.subscribe", {"channels": ["moo:x"]}, 2)["result"][
        "subscribed"] == ["dreader:*", "moo:x"]


def test_subscribe_is_a_sign_of_life(moo):
    moo.zgents.served["dreader"].zgent.status = Status.STALE
    moo.timers.advance(10)
    moo.connect().call("arqon.subscribe")
    assert moo.entry("dreader")["status"] == "active"
    assert moo.entry("dreader")["lastSeen"] == "2026-02-12T10:00:10Z"


# -- recv -----------------------------------------------------------------------------------

def test_recv_takes_the_oldest_message_once(moo):
    for n in (1, 2):
        moo.zgents.inbox_line("dreader", {"n": n})
    client = moo.connect()
    client.send({"id": 1, "method": "arqon.recv"})
    client.assert_reply(1, {"n": 1})
    client.send({"id": 2, "method": "arqon.recv", "params": {"wait": 5}})
    client.assert_reply(2, {"n": 2})
    assert client.call("arqon.recv", request_id=3)["result"] is None
    assert moo.mailbox("dreader") == []


def test_recv_waits_for_the_next_message_and_hands_it_over_once(moo):
    reader = moo.connect()
    reader.send({"id": "w", "method": "arqon.recv", "params": {"wait": 30}})
    reader.assert_silent()
    moo.timers.advance(29)
    moo.zgents.inbox_line("dreader", {"late": True})
    reader.assert_reply("w", {"late": True})
    assert moo.mailbox("dreader") == []
    assert moo.timers.armed == {}   # its wait timer is gone with it


def test_a_recv_wait_runs_out_with_null(moo):
    reader = moo.connect()
    reader.send({"id": "w", "method": "arqon.recv", "params": {"wait": 2}})
    moo.timers.advance(2)
    reader.assert_reply("w", None)
    reader.assert_open()


@pytest.mark.parametrize("how", ["hung up", "would pass its bound", "write fails"])
def test_a_reader_gone_from_its_wait_never_takes_the_next_message(how, caplog):
    caplog.set_level(logging.INFO, logger="arqond.moo")
    moo = Moo("dreader", moo={"client_buffer_bytes": 100})
    gone = moo.connect()
    gone.send({"id": "w", "method": "arqon.recv", "params": {"wait": 30}})
    if how == "hung up":
        gone.link.peer_gone = True
    elif how == "would pass its bound":
        gone.link.stalled, gone.link.unsent = True, 90
    else:
        gone.link.fail_writes = True
    moo.zgents.inbox_line("dreader", {"after": 1})
    gone.assert_silent()
    gone.assert_closed("abort")
    assert moo.mailbox("dreader") == [{"after": 1}]
    assert moo.zgents.abandoned_waits_total == 1
    assert "Zgent dreader: arqon.recv reader (pid=100 uid=4242 gid=4242) went away; the " \
        "message stays in the mailbox" in caplog.text
    reader = moo.connect()
    reader.send({"id": 1, "method": "arqon.recv"})
    reader.assert_reply(1, {"after": 1})


def test_a_reader_gone_without_a_wait_leaves_the_message(moo):
    moo.zgents.inbox_line("dreader", {"n": 1})
    reader = moo.connect()
    reader.link.peer_gone = True
    reader.send({"id": 1, "method": "arqon.recv"})
    assert moo.mailbox("dreader") == [{"n": 1}]
    assert moo.zgents.abandoned_waits_total == 1
    empty = moo.connect("parseclipmate")
    empty.link.peer_gone = True
    empty.send({"id": 1, "method": "arqon.recv"})   # nothing to lose: not counted
    assert moo.zgents.abandoned_waits_total == 1


def test_waiters_are_served_in_order_and_a_closed_ones_wait_is_dropped(moo):
    first, second = moo.connect(), moo.connect()
    first.send({"id": "a", "method": "arqon.recv", "params": {"wait": 30}})
    second.send({"id": "b", "method": "arqon.recv", "params": {"wait": 30}})
    first.hang_up()
    moo.zgents.inbox_line("dreader", {"n": 1})
    second.assert_reply("b", {"n": 1})
    assert first.link.written == []


# -- serve and the handler ------------------------------------------------------------------

DREADERS_OWNERS = "the owners of dreader: who registered it, its uids and groups; and admins"


@pytest.mark.parametrize("uid, gid, groups, allowed", [
    (0, 0, (), True),                 # root
    (OWN_UID, 9, (), True),           # arqond's own user
    (1234, 9, (), True),              # named in uids
    (1500, 9, (), True),              # registered it
    (2000, 77, (), True),             # primary group named in groups
    (2000, 9, (77,), True),           # supplementary group named in groups
    (65534, 65534, (9,), False),
])
def test_who_may_serve_and_read_the_inbox(uid, gid, groups, allowed, caplog):
    moo = Moo()
    moo.add("dreader", owner="uid:1500", uids=[1234], groups=[77])
    moo.zgents.inbox_line("dreader", {"secret": 1})
    moo.groups[uid] = frozenset({gid, *groups})
    reader = moo.connect(uid=uid, gid=gid)
    reader.send({"id": "r", "method": "arqon.recv"})
    reader.send({"id": "h", "method": "arqon.history", "params": {"channel": "inbox"}})
    client = moo.connect(uid=uid, gid=gid)
    client.send({"id": "s", "method": "arqon.serve"})
    if allowed:
        assert [line["id"] for line in reader.received()] == ["r", "h"]
        client.assert_reply("s", {"serving": "dreader"})
        assert moo.zgents.served["dreader"].handler is client.session
        assert moo.events_named("audit")[-1] == {
            "text": f"Zgent dreader: handler attached (pid=101 uid={uid} gid={gid})",
            "zgent": "dreader", "principal": f"uid:{uid}", "uid": uid}
        return
    refusal = {"code": RpcCode.FORBIDDEN,
               "message": f"not allowed to read dreader:inbox (allowed: {DREADERS_OWNERS})"}
    assert reader.received() == [{"jsonrpc": "2.0", "id": "r", "error": refusal},
                                 {"jsonrpc": "2.0", "id": "h", "error": refusal}]
    client.assert_error(RpcCode.FORBIDDEN, "s", "not allowed to serve Zgent dreader "
                        f"(allowed: {DREADERS_OWNERS})")
    assert moo.events_named("access_refused")[-1] == {
        "text": f"not allowed to serve Zgent dreader (allowed: {DREADERS_OWNERS})", "peer": "dreader.sock pid=101 uid=65534 gid=65534",
        "principal": "uid:65534", "uid": 65534}
    assert moo.zgents.served["dreader"].handler is None
    assert moo.mailbox("dreader") == [{"secret": 1}]    # still there for its owners


def test_a_second_handler_is_refused_and_the_first_may_serve_again(moo):
    handler = moo.connect()
    handler.call("arqon.serve")
    handler.send({"id": 2, "method": "arqon.serve"})
    handler.assert_reply(2, {"serving": "dreader"})
    other = moo.connect()
    other.send({"id": 3, "method": "arqon.serve"})
    other.assert_error(RpcCode.BUSY, 3, "dreader already has a handler (pid=100 uid=4242 "
                       "gid=4242)")


def test_requests_reach_the_handler_and_answers_keep_each_clients_id(moo):
    handler = moo.connect()
    handler.call("arqon.serve")
    a, b = moo.connect(), moo.connect()
    a.send({"id": "q-123", "method": "query", "params": {"symbol": "SPX"}})
    b.send({"id": "q-123", "method": "query", "params": {"symbol": "NDX"}})
    first, second = handler.received()
    assert first == {"jsonrpc": "2.0", "method": "query", "params": {"symbol": "SPX"},
                     "id": first["id"]}
    assert first["id"] != second["id"]
    handler.send({"id": second["id"], "result": "NDX"})
    handler.send({"id": first["id"], "result": "SPX"})
    a.assert_reply("q-123", "SPX")
    b.assert_reply("q-123", "NDX")
    assert moo.zgents.calls.handler_requests_total == 2


def test_a_notification_reaches_the_handler_without_an_id(moo):
    handler = moo.connect()
    handler.call("arqon.serve")
    moo.connect().send({"method": "tick", "params": [1]})
    assert handler.next() == {"jsonrpc": "2.0", "method": "tick", "params": [1]}


def test_a_handlers_answer_is_a_sign_of_life(moo):
    handler = moo.connect()
    handler.call("arqon.serve")
    moo.connect().send({"id": 1, "method": "query"})
    forwarded = handler.next()
    moo.zgents.served["dreader"].zgent.status = Status.STALE
    moo.timers.advance(3)
    handler.send({"id": forwarded["id"], "result": None})
    assert moo.entry("dreader")["status"] == "active"


def test_a_bad_answer_becomes_an_error_for_the_caller(moo, caplog):
    handler = moo.connect()
    handler.call("arqon.serve")
    client = moo.connect()
    client.send({"id": 5, "method": "query"})
    handler.send({"id": handler.next()["id"]})
    client.assert_error(RpcCode.INTERNAL_ERROR, 5, "dreader's handler sent an invalid reply: "
                        'a reply has exactly one of "result" and "error"')
    assert "Zgent dreader: handler sent an invalid reply" in caplog.text


def test_a_silent_handler_gives_a_timeout_at_the_bound_and_its_late_answer_is_dropped():
    moo = Moo("dreader", moo={"handler_timeout": 0.5})
    handler = moo.connect()
    handler.call("arqon.serve")
    client = moo.connect()
    client.send({"id": "q-1", "method": "query"})
    forwarded = handler.next()
    moo.timers.advance(0.499)
    client.assert_silent()
    moo.timers.advance(0.001)
    client.assert_error(RpcCode.TIMEOUT, "q-1", "dreader's handler did not answer within 0.5s")
    handler.send({"id": forwarded["id"], "result": "too late"})
    client.assert_silent()
    assert (moo.zgents.calls.handler_timeouts_total, moo.zgents.calls.late_replies_total) == \
        (1, 1)


def test_a_handler_leaving_mid_request_answers_its_askers(moo):
    handler = moo.connect()
    handler.call("arqon.serve")
    leaver, stayer = moo.connect(), moo.connect()
    leaver.send({"id": "gone", "method": "query"})
    stayer.send({"id": "here", "method": "query"})
    to_leaver, to_stayer = handler.received()
    leaver.hang_up()
    handler.send({"id": to_leaver["id"], "result": 1})   # its asker is gone
    assert moo.zgents.calls.late_replies_total == 1
    handler.send({"id": to_stayer["id"], "result": 2})
    stayer.assert_reply("here", 2)
    stayer.send({"id": "orphan", "method": "query"})
    handler.next()
    handler.hang_up()
    stayer.assert_error(RpcCode.NOT_SERVING, "orphan",
                        "dreader's handler went away before answering")
    stayer.send({"id": "next", "method": "query"})
    stayer.assert_error(RpcCode.NOT_SERVING, "next", "not serving")


def test_offline_when_the_handler_leaves_if_configured():
    moo = Moo("dreader", moo={"offline_without_handler": True})
    handler = moo.connect()
    handler.call("arqon.serve")
    changes = moo.changes
    handler.hang_up()
    assert moo.entry("dreader")["status"] == "offline" and moo.changes == changes + 1
    kept = Moo("dreader")
    handler = kept.connect()
    handler.call("arqon.serve")
    handler.hang_up()
    assert kept.entry("dreader")["status"] == "active"


def test_a_client_has_at_most_so_many_requests_waiting(moo):
    handler = moo.connect()
    handler.call("arqon.serve")
    client = moo.connect()
    for n in range(MAX_PENDING_PER_ORIGIN):
        client.send({"id": n, "method": "query"})
    client.assert_silent()
    client.send({"id": "one-more", "method": "query"})
    client.assert_error(RpcCode.BUSY, "one-more", f"more than {MAX_PENDING_PER_ORIGIN} "
                        "requests waiting from this client")
    other = moo.connect()
    other.send({"id": "other", "method": "query"})   # the bound is per client
    other.assert_silent()


def test_a_line_that_fails_inside_arqond_is_answered_internal_error_and_logged(
        moo, monkeypatch, caplog):
    client = moo.connect()
    monkeypatch.setattr(moo.zgents, "recv", lambda *args: 1 / 0)
    client.send({"id": "r", "method": "arqon.recv"})
    client.assert_error(RpcCode.INTERNAL_ERROR, "r", "internal error in arqond (it is logged); "
                        "this connection stays usable")
    assert moo.zgents.internal_errors_total == 1 and moo.zgents.socket_errors_total == 1
    assert "dreader.sock: a line failed inside arqond; answered -32603" in caplog.text
    assert "ZeroDivisionError" in caplog.text
    client.send({"id": [1], "method": "arqon.recv"})   # an id that cannot be echoed
    assert client.next()["id"] is None
    assert client.call("arqon.ping", request_id=2)["id"] == 2


def test_stopping_answers_open_requests_then_ends_every_connection(moo):
    handler = moo.connect()
    handler.call("arqon.serve")
    asker = moo.connect()
    asker.send({"id": "q", "method": "query"})
    moo.zgents.stop()
    asker.assert_error(RpcCode.NOT_SERVING, "q", "arqond is stopping")
    asker.assert_closed("close")
    handler.assert_closed("close")
    assert moo.entry("dreader")["status"] == "offline"


def test_unregistering_answers_open_requests_and_ends_the_zgents_connections(moo):
    handler = moo.connect()
    handler.call("arqon.serve")
    asker, elsewhere = moo.connect(), moo.connect("parseclipmate")
    asker.send({"id": "q", "method": "query"})
    moo.zgents.remove("dreader")
    asker.assert_error(RpcCode.NOT_SERVING, "q", "dreader was unregistered")
    asker.assert_closed("close")
    handler.assert_closed("close")
    elsewhere.assert_open()
    assert moo.entry("dreader")["status"] == "offline"
    assert moo.entry("dreader")["lastSeen"] == "2026-02-12T10:00:00Z"
