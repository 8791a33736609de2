"""Zgent names, specs, statuses and registry.json, mailboxes and broadcasts: the registry
side of the MOO core (arqond/core/moo), decided with a fake clock and manual timers."""

from __future__ import annotations

import hashlib
import logging

import orjson
import pytest

from arqond import config as configuration
from arqond.core.moo import registry
from arqond.core.moo.broadcast import broadcast_message
from arqond.core.moo.mailbox import Mailbox
from arqond.core.moo.names import ZgentError, check_name
from arqond.core.moo.registry import Registry, Spec, Status, Zgent
from arqond.core.moo.zgents import SWEEP
from tests.unit.moo_harness import Moo

NOON = 1770897600.0   # 2026-02-12T12:00:00Z


@pytest.mark.parametrize("name", ["dreader", "a", "gamma-watch", "x.y_z-1", "0" * 63])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "DReader", "-x", ".x", "_x", "a/b", "../etc", "..",
                                  "a..b", "a b", "é", "0" * 64, "x\n", 5, None])
def test_invalid_names_are_refused(name):
    with pytest.raises(ZgentError) as caught:
        check_name(name)
    assert "Zgent name" in str(caught.value)


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
    with pytest.raises(ZgentError) as caught:
        Spec.from_table("dreader", body, "config")
    assert needle in str(caught.value) and "zgents.dreader" in str(caught.value)


def test_a_table_that_is_not_a_table_is_refused():
    with pytest.raises(ZgentError, match="zgents.dreader must be a table"):
        Spec.from_table("dreader", [], "config")
    with pytest.raises(ZgentError, match=r"\[zgents\] must hold one"):
        registry.check_table([])


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
    assert list(entry) == list(registry.ENTRY_KEYS)
    assert entry["lastSeen"] == "2026-02-12T10:00:00Z" and entry["status"] == "active"
    document = registry.registry_document({"dreader": entry})
    assert registry.check_registry(document) == {"dreader": entry}


def test_status_moves_active_stale_and_back():
    zgent = Zgent(Spec("z"), "i", "s", "l", last_seen=100.0)
    assert not zgent.check_stale(160.0, 60)   # at the bound: still active
    assert zgent.check_stale(160.5, 60) and zgent.status is Status.STALE
    assert not zgent.check_stale(200.0, 60)
    assert zgent.touch(201.0) and zgent.status is Status.ACTIVE
    assert not zgent.touch(201.5)  # same second, same status: no registry write needed


@pytest.mark.parametrize("document, needle", [
    ([], "top level"),
    ({"schemaVersion": 2, "zgents": {}}, "schemaVersion"),
    ({"schemaVersion": 1, "zgents": []}, '"zgents" must be an object'),
    ({"schemaVersion": 1, "zgents": {"../x": {}}}, "invalid Zgent name"),
    ({"schemaVersion": 1, "zgents": {"a": []}}, "zgents.a must be an object"),
    ({"schemaVersion": 1, "zgents": {"a": {"status": "asleep", "lastSeen": "x"}}},
     "status must be one of active, stale, offline"),
    ({"schemaVersion": 1, "zgents": {"a": {"status": "active", "lastSeen": "soon"}}},
     "lastSeen"),
    ({"schemaVersion": 1, "zgents": {"a": {"status": "active"}}}, "lastSeen"),
    ({"schemaVersion": 1, "zgents": {"a": {"status": "active", "capabilities": [1],
                                           "lastSeen": "2026-01-01T00:00:00Z"}}},
     "each capability"),
    ({"schemaVersion": 1, "zgents": {"a": {"status": "active", "lastSeen": "2026-01-01T00:00:00Z",
                                           "extra": 1}}}, "unknown key"),
    ({"schemaVersion": 1, "zgents": {}, "more": 1}, "top level"),
])
def test_hand_edited_registries_are_refused(document, needle):
    with pytest.raises(ZgentError) as caught:
        registry.check_registry(document)
    assert needle in str(caught.value)


def test_a_registry_file_is_taken_back_only_as_arqond_wrote_it():
    raw = orjson.dumps(registry.registry_document({}))
    registry.check_written_registry(raw, hashlib.sha256(raw).hexdigest())
    registry.check_written_registry(raw, None)   # no digest kept: nothing to compare
    with pytest.raises(ZgentError, match="changed since arqond wrote it"):
        registry.check_written_registry(raw + b" ", hashlib.sha256(raw).hexdigest())
    with pytest.raises(ValueError):
        registry.check_written_registry(b"{", None)


def test_the_saved_zgents_document_round_trips_and_bad_ones_are_refused():
    data = b'{"schemaVersion": 1}'
    saved = {"gamma": Spec.from_table("gamma", {"capabilities": ["q:g"]}, "command").table()}
    document = registry.check_saved(registry.saved_document(data, saved))
    assert document == {"zgents": saved, "registry_sha256": hashlib.sha256(data).hexdigest()}
    for bad in (b"[]", b'{"zgents": {}}', b'{"zgents": [], "registry_sha256": "x"}'):
        with pytest.raises(ZgentError, match="expected"):
            registry.check_saved(bad)
    with pytest.raises(ZgentError, match="invalid Zgent name"):
        registry.check_saved(b'{"zgents": {"../x": {}}, "registry_sha256": "x"}')


# -- the Registry's decisions, on a clock of their own -----------------------------------------

def zgent(name: str, last_seen: float, source: str = "command") -> Zgent:
    return Zgent(Spec.from_table(name, {}, source), f"/m/{name}-inbox", f"/m/{name}.sock",
                 f"/l/{name}-narrative.jsonl", last_seen)


def test_silence_makes_stale_and_an_attached_handler_counts_as_life():
    book = Registry()
    book.add(zgent("quiet", NOON))
    book.add(zgent("served", NOON))
    assert book.sweep(NOON + 300, 300, 0, attended={"served"}) == (True, [])  # served: seen
    assert book.entries()["quiet"]["status"] == "active"   # at the bound
    assert book.sweep(NOON + 300.5, 300, 0, attended={"served"}) == (True, [])
    entries = book.entries()
    assert entries["quiet"]["status"] == "stale" and entries["served"]["status"] == "active"
    assert entries["served"]["lastSeen"] == "2026-02-12T12:05:00Z"
    assert book.touch("quiet", NOON + 301) and book.entries()["quiet"]["status"] == "active"
    assert not book.touch("nobody", NOON)


@pytest.mark.parametrize("offline_for, purged", [(99.9, False), (100.0, False),
                                                 (100.1, True)])
def test_an_unregistered_zgent_is_purged_once_offline_longer_than_the_bound(offline_for,
                                                                            purged):
    book = Registry()
    book.add(zgent("gone", NOON - 1000))
    entry = book.retire("gone", NOON)
    assert entry["status"] == "offline" and entry["lastSeen"] == "2026-02-12T11:43:20Z"
    assert book.sweep(NOON + offline_for, 300, 100, attended=()) == \
        (purged, ["gone"] if purged else [])
    assert ("gone" in book.entries()) is not purged


def test_purge_after_zero_keeps_unregistered_zgents():
    book = Registry()
    book.add(zgent("gone", NOON))
    book.retire("gone", NOON)
    assert book.sweep(NOON + 10 ** 9, 300, 0, attended=()) == (False, [])
    assert book.entries()["gone"]["status"] == "offline"


def test_registering_again_takes_the_name_back_from_the_retired():
    book = Registry()
    book.add(zgent("back", NOON))
    book.retire("back", NOON)
    book.add(zgent("back", NOON + 5))
    assert book.entries()["back"]["status"] == "active" and book.retired == {}


def test_offline_is_set_once_and_saved_specs_leave_config_zgents_out():
    book = Registry()
    book.add(zgent("configured", NOON, "config"))
    book.add(zgent("narrated", NOON, "narrative"))
    assert book.set_offline("configured") and not book.set_offline("configured")
    assert not book.set_offline("nobody")
    assert list(book.saved()) == ["narrated"]
    assert list(book.document()["zgents"]) == ["configured", "narrated"]


def test_the_sweep_runs_on_its_timer_purges_counts_and_logs(caplog):
    caplog.set_level(logging.INFO, logger="arqond.moo")
    moo = Moo("dreader", "gone", moo={"stale_after": 300.0, "purge_offline_after": 20.0})
    moo.zgents.schedule_sweep()
    assert moo.timers.due(SWEEP) == 5.0   # a quarter of the shorter window
    moo.zgents.remove("gone")
    changes = moo.changes
    moo.timers.advance(20)
    assert "gone" in moo.zgents.registry.entries()
    moo.timers.advance(5)
    assert "gone" not in moo.zgents.registry.entries()
    assert moo.zgents.registry_purged_total == 1 and moo.changes == changes + 1
    assert "Zgent gone purged from the registry: offline for more than 20s " \
        "(moo.purge_offline_after)" in caplog.text


@pytest.mark.parametrize("stale_after, purge_after, interval", [
    (300.0, 604800.0, 60.0), (1.0, 0.0, 0.5), (40.0, 0.0, 10.0), (40.0, 8.0, 2.0)])
def test_the_sweep_interval(stale_after, purge_after, interval):
    moo = Moo(moo={"stale_after": stale_after, "purge_offline_after": purge_after})
    moo.zgents.schedule_sweep()
    assert moo.timers.due(SWEEP) == interval


def test_a_stale_zgent_is_written_down_and_a_served_one_stays_active():
    moo = Moo("dreader", "idle", moo={"stale_after": 1.0})
    moo.connect().call("arqon.serve")
    moo.zgents.schedule_sweep()
    moo.timers.advance(1.5)
    assert moo.entry("idle")["status"] == "stale"
    assert moo.entry("dreader") == {**moo.entry("dreader"), "status": "active",
                                    "lastSeen": "2026-02-12T10:00:01Z"}


def test_a_reload_applies_the_mailbox_bound_and_the_sweep_interval():
    moo = Moo("dreader")
    for n in range(5):
        moo.zgents.inbox_line("dreader", {"n": n})
    values = dict(moo.config.values)
    values.update({"moo.mailbox_size": 2, "moo.stale_after": 8.0})
    moo.zgents.reload(configuration.Config(values))
    assert moo.mailbox("dreader") == [{"n": 3}, {"n": 4}]
    assert moo.zgents.mailbox_dropped_total == 3 and moo.timers.due(SWEEP) == 2.0


# -- mailboxes and broadcasts -----------------------------------------------------------------

class Journal:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def put(self, message):
        self.calls.append(("put", message))

    def put_over_oldest(self, message, unread):
        self.calls.append(("put_over_oldest", message, list(unread)))

    def took(self, unread, count):
        self.calls.append(("took", list(unread), count))


def test_mailbox_drops_the_oldest_at_its_bound_and_counts():
    box = Mailbox(3)
    assert all(box.put({"n": n}) for n in range(3))
    assert not box.put({"n": 3})
    assert box.dropped == 1
    assert [box.take()["n"] for _ in range(3)] == [1, 2, 3]
    assert box.take() is None and box.peek() is None
    for n in range(3):
        box.put({"n": n})
    assert box.resize(1) == 2 and box.take() == {"n": 2} and box.dropped == 3


def test_every_mailbox_change_is_journaled_as_it_happens():
    journal = Journal()
    box = Mailbox(2, journal)
    box.put({"n": 1})
    box.put({"n": 2})
    box.put({"n": 3})
    assert box.peek() == {"n": 2} and len(box) == 2
    box.take()
    box.resize(0)
    box.resize(5)   # drops nothing: nothing journaled
    assert journal.calls == [("put", {"n": 1}), ("put", {"n": 2}),
                             ("put_over_oldest", {"n": 3}, [{"n": 2}, {"n": 3}]),
                             ("took", [{"n": 3}], 1), ("took", [], 1)]


def test_broadcast_message_schema():
    line = broadcast_message({"content": "Market closed.", "priority": "urgent",
                              "meta": {"k": 1}}, "arq_client_x", "2026-02-12T16:00:00Z")
    assert line == {"ts": "2026-02-12T16:00:00Z", "from": "arq_client_x", "type": "broadcast",
                    "content": "Market closed.", "priority": "urgent", "meta": {"k": 1}}
    assert broadcast_message("hi", "me", "t")["priority"] == "normal"
    for bad, needle in [({"content": 5}, "payload.content"),
                        ({"content": "x", "priority": "loud"}, "priority must be"),
                        ({"content": "x", "z": 1}, "no field(s) z"),
                        ({"content": "x", "meta": []}, "meta must be an object"),
                        ([], "payload.content"),
                        ({"content": "x", "type": "narrative"}, 'always "broadcast"'),
                        ({"content": "x", "from": ""}, "from must be a non-empty string")]:
        with pytest.raises(ZgentError, match=None) as caught:
            broadcast_message(bad, "me", "t")
        assert needle in str(caught.value)
