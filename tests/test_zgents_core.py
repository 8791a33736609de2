"""The I/O-free MOO core: Zgent names, registry schema, mailboxes, line framing, JSON-RPC."""

from __future__ import annotations

import pytest

from arqond import config as configuration
from arqond.core import jsonrpc, zgents
from arqond.core.errors import RpcCode
from arqond.core.jsonrpc import Pending, PendingTable, RpcError
from arqond.core.zgents import Mailbox, Spec, Zgent, ZgentError


@pytest.mark.parametrize("name", ["dreader", "a", "gamma-watch", "x.y_z-1", "0" * 63])
def test_valid_names(name):
    assert zgents.check_name(name) == name


@pytest.mark.parametrize("name", ["", "DReader", "-x", ".x", "_x", "a/b", "../etc", "..",
                                  "a..b", "a b", "é", "0" * 64, "x\n", 5, None])
def test_invalid_names_are_refused(name):
    with pytest.raises(ZgentError):
        zgents.check_name(name)


def test_spec_defaults_follow_the_naming_convention():
    spec = Spec.from_table("dreader", {}, "command")
    assert (spec.name, spec.session, spec.pane, spec.capabilities) == (
        "dreader", "dreader", "dreader:main.0", [])


@pytest.mark.parametrize("body, needle", [
    ({"capabilities": "query:volume"}, "capabilities must be a list"),
    ({"capabilities": [""]}, "each capability"),
    ({"uids": [-1]}, "uids must be"),
    ({"groups": [True]}, "groups must be"),
    ({"colour": "red"}, "unknown key(s) colour"),
    ({"pane": ""}, "pane must be"),
])
def test_bad_tables_name_the_problem(body, needle):
    with pytest.raises(ZgentError, match=None) as caught:
        Spec.from_table("dreader", body, "config")
    assert needle in str(caught.value) and "zgents.dreader" in str(caught.value)


def test_config_file_zgents_tables_are_validated(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[zgents.dreader]\nname = "DReader"\ncapabilities = ["query:volume"]\n')
    assert configuration.load(str(good), environ={}).tables["zgents"]["dreader"]["name"] == \
        "DReader"
    bad = tmp_path / "bad.toml"
    bad.write_text('[zgents."../etc"]\n')
    with pytest.raises(configuration.ConfigError, match="invalid Zgent name"):
        configuration.load(str(bad), environ={})


def test_registry_entry_has_the_seed_keys_in_order():
    zgent = Zgent(Spec.from_table("dreader", {"name": "DReader"}, "config"), "/m/dreader-inbox",
                  "/m/dreader.sock", "/l/dreader-narrative.jsonl", 1770890400.7)
    entry = zgent.entry()
    assert list(entry) == list(zgents.ENTRY_KEYS)
    assert entry["lastSeen"] == "2026-02-12T10:00:00Z"
    document = zgents.registry_document({"dreader": entry})
    assert zgents.check_registry(document) == {"dreader": entry}


def test_status_moves_active_stale_and_back():
    zgent = Zgent(Spec("z"), "i", "s", "l", last_seen=100.0)
    assert not zgent.check_stale(150.0, 60)
    assert zgent.check_stale(161.0, 60) and zgent.status == "stale"
    assert not zgent.check_stale(200.0, 60)
    assert zgent.touch(201.0) and zgent.status == "active"
    assert not zgent.touch(201.5)  # same second, same status: no registry write needed


@pytest.mark.parametrize("document, needle", [
    ([], "top level"),
    ({"schemaVersion": 2, "zgents": {}}, "schemaVersion"),
    ({"schemaVersion": 1, "zgents": {"../x": {}}}, "invalid Zgent name"),
    ({"schemaVersion": 1, "zgents": {"a": {"status": "asleep", "lastSeen": "x"}}}, "status"),
    ({"schemaVersion": 1, "zgents": {"a": {"status": "active", "lastSeen": "soon"}}},
     "lastSeen"),
    ({"schemaVersion": 1, "zgents": {"a": {"status": "active", "lastSeen": "2026-01-01T00:00:00Z",
                                           "extra": 1}}}, "unknown key"),
    ({"schemaVersion": 1, "zgents": {}, "more": 1}, "top level"),
])
def test_hand_edited_registries_are_refused(document, needle):
    with pytest.raises(ZgentError) as caught:
        zgents.check_registry(document)
    assert needle in str(caught.value)


def test_mailbox_drops_the_oldest_at_its_bound_and_counts():
    box = Mailbox(3)
    assert all(box.put({"n": n}) for n in range(3))
    assert not box.put({"n": 3})
    assert box.dropped == 1
    assert [box.get()["n"] for _ in range(3)] == [1, 2, 3]
    assert box.get() is None
    for n in range(3):
        box.put({"n": n})
    assert box.resize(1) == 2 and box.get() == {"n": 2} and box.dropped == 3


def test_json_rpc_decoding_and_request_checks():
    with pytest.raises(RpcError) as caught:
        jsonrpc.decode(b"{nope", 64)
    assert caught.value.code == RpcCode.PARSE_ERROR
    with pytest.raises(RpcError) as caught:
        jsonrpc.decode(b"[1]", 64)
    assert caught.value.code == RpcCode.INVALID_REQUEST
    jsonrpc.check_request({"id": "q-1", "method": "query", "params": {}, "replyTo": "pc"})
    for bad, needle in [({"id": "q", "method": 3}, '"method"'),
                        ({"id": [1], "method": "m"}, '"id"'),
                        ({"id": 1, "method": "m", "params": 5}, '"params"'),
                        ({"id": 1, "method": "m", "jsonrpc": "1.0"}, '"jsonrpc"'),
                        ({"id": 1, "method": "m", "extra": 1}, "'extra'")]:
        with pytest.raises(RpcError) as caught:
            jsonrpc.check_request(bad)
        assert caught.value.code == RpcCode.INVALID_REQUEST and needle in caught.value.message
    assert jsonrpc.check_response({"id": 1, "result": None}) is None
    assert "exactly one" in jsonrpc.check_response({"id": 1})
    assert "exactly one" in jsonrpc.check_response({"id": 1, "result": 1, "error": {}})
    assert '"error"' in jsonrpc.check_response({"id": 1, "error": "bad"})


def test_pending_table_renames_ids_and_cancels_timers():
    class Timer:
        cancelled = False

        def cancel(self):
            self.cancelled = True

    table = PendingTable()
    a, b = object(), object()
    first = Pending("q-1", lambda _: None, a, "h", Timer())
    second = Pending("q-1", lambda _: None, b, "h", Timer())
    ids = table.add(first), table.add(second)
    assert ids[0] != ids[1]  # the same client id twice never collides
    assert table.count_for(a) == 1
    assert table.pop(ids[0]) is first and first.timer.cancelled
    assert table.pop(ids[0]) is None and table.pop(5) is None
    assert table.take(lambda p: p.origin is b) == [second] and not table.items


def test_broadcast_message_schema():
    line = zgents.broadcast_message({"content": "Market closed.", "priority": "urgent",
                                     "meta": {"k": 1}}, "arq_client_x", "2026-02-12T16:00:00Z")
    assert line == {"ts": "2026-02-12T16:00:00Z", "from": "arq_client_x", "type": "broadcast",
                    "content": "Market closed.", "priority": "urgent", "meta": {"k": 1}}
    assert zgents.broadcast_message("hi", "me", "t")["priority"] == "normal"
    for bad in ({"content": 5}, {"content": "x", "priority": "loud"}, {"content": "x", "z": 1},
                {"content": "x", "meta": []}, [], {"content": "x", "type": "narrative"}):
        with pytest.raises(ZgentError):
            zgents.broadcast_message(bad, "me", "t")
