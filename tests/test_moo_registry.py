"""registry.json, Zgent registration commands, start/stop and the broadcast log."""

from __future__ import annotations

import grp
import os
import signal
import socket
import stat
import time
from typing import Any

import orjson
import pytest

from tests.conftest import eventually, metrics_of, scaled, sh, write_config

ZGENTS = {"dreader": {"name": "DReader", "capabilities": [
    "query:volume", "query:sentiment", "query:history", "subscribe:narrative"]}}


def registry(daemon) -> dict:
    return orjson.loads((daemon.moo_dir / "registry.json").read_bytes())


def wait_for(condition, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + scaled(timeout)
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def test_registry_has_the_seeds_schema_and_jq_reads_it(make_daemon):
    daemon = make_daemon({"zgents": ZGENTS})
    document = registry(daemon)
    assert list(document) == ["schemaVersion", "zgents"] and document["schemaVersion"] == 1
    entry = document["zgents"]["dreader"]
    moo, log = daemon.moo_dir, daemon.log_dir
    assert entry == {"name": "DReader", "session": "dreader", "pane": "dreader:main.0",
                     "log": f"{log}/dreader-narrative.jsonl", "inbox": f"{moo}/dreader-inbox",
                     "socket": f"{moo}/dreader.sock", "capabilities": ZGENTS["dreader"][
                         "capabilities"], "status": "active", "lastSeen": entry["lastSeen"]}
    assert time.strptime(entry["lastSeen"], "%Y-%m-%dT%H:%M:%SZ")
    found = sh(f"""jq -r '.zgents | to_entries[] | select(.value.capabilities | index("query:volume"))
                   | .key' {moo}/registry.json""")
    assert found.stdout == "dreader\n"
    assert stat.S_IMODE(os.stat(moo / "registry.json").st_mode) == 0o644
    # The rewrite that registering at start asked for may still be under way: once it is
    # done, nothing of it is left behind.
    wait_for(lambda: not [p for p in os.listdir(moo) if ".tmp" in p], "no temporary file")


async def test_register_and_unregister_commands(make_daemon, connect_peer):
    daemon = make_daemon({"zgents": ZGENTS})
    peer = await connect_peer(daemon.ws_url)
    response = await peer.command("zgent.register", {
        "id": "gamma-watch", "capabilities": ["query:gamma-exposure"]})
    assert response["status"] == "success"
    data = response["payload"]["data"]
    assert data["id"] == "gamma-watch" and data["status"] == "active"
    moo = daemon.moo_dir
    assert stat.S_ISFIFO(os.lstat(moo / "gamma-watch-inbox").st_mode)
    assert stat.S_ISSOCK(os.lstat(moo / "gamma-watch.sock").st_mode)
    assert registry(daemon)["zgents"]["gamma-watch"]["capabilities"] == ["query:gamma-exposure"]
    again = await peer.command("zgent.register", {"id": "gamma-watch"})
    assert again["error_code"] == "ZGENT_EXISTS"
    listed = await peer.command("zgent.list")
    assert sorted(listed["payload"]["data"]["zgents"]) == ["dreader", "gamma-watch"]
    gone = await peer.command("zgent.unregister", {"id": "gamma-watch"})
    assert gone["payload"]["data"]["status"] == "offline"
    assert not os.path.lexists(moo / "gamma-watch-inbox")
    assert not os.path.lexists(moo / "gamma-watch.sock")
    assert registry(daemon)["zgents"]["gamma-watch"]["status"] == "offline"
    configured = await peer.command("zgent.unregister", {"id": "dreader"})
    assert configured["error_code"] == "ZGENT_CONFIGURED"
    assert os.path.exists(moo / "dreader-inbox")


@pytest.mark.parametrize("name", ["../etc/passwd", "..", "a/b", "/tmp/x", "DReader",
                                  "-rf", "a..b", "x" * 64, "ok\n", ""])
async def test_invalid_names_are_refused_and_nothing_is_created(make_daemon, connect_peer,
                                                                name):
    daemon = make_daemon()
    before = sorted(os.listdir(daemon.moo_dir)), sorted(os.listdir(daemon.tmp))
    peer = await connect_peer(daemon.ws_url)
    response = await peer.command("zgent.register", {"id": name})
    assert response["error_code"] == "VALIDATION_ERROR"
    assert "invalid Zgent name" in response["error"]
    assert (sorted(os.listdir(daemon.moo_dir)), sorted(os.listdir(daemon.tmp))) == before
    assert not os.path.exists("/etc/passwd-inbox")
    ping = await peer.command("ping")
    assert ping["status"] == "success"


def test_a_corrupt_registry_is_set_aside_and_rebuilt(make_daemon):
    daemon = make_daemon({"zgents": ZGENTS}, start=False)
    (daemon.moo_dir / "registry.json").write_text('{"schemaVersion": 1, "zgents": {"x": ')
    daemon.start()
    line = daemon.wait_for_line("registry.json: unusable registry")
    assert "registry.json.bad" in line
    assert (daemon.moo_dir / "registry.json.bad").read_text().startswith('{"schemaVersion": 1,')
    assert list(registry(daemon)["zgents"]) == ["dreader"]


def test_a_hand_edited_registry_with_foreign_keys_is_set_aside(make_daemon):
    daemon = make_daemon({"zgents": ZGENTS}, start=False)
    (daemon.moo_dir / "registry.json").write_text(orjson.dumps(
        {"schemaVersion": 1, "zgents": {"dreader": {"status": "active", "colour": "blue",
                                                    "lastSeen": "2026-02-12T10:00:00Z"}}}).decode())
    daemon.start()
    assert "unknown key(s) colour" in daemon.wait_for_line("unusable registry")
    assert registry(daemon)["zgents"]["dreader"]["name"] == "DReader"


def test_status_becomes_stale_after_silence_and_active_on_activity(make_daemon):
    daemon = make_daemon({"zgents": ZGENTS, "moo": {"stale_after": 0.5}})
    wait_for(lambda: registry(daemon)["zgents"]["dreader"]["status"] == "stale", "stale")

    def reads_its_mailbox_then_is_active() -> bool:  # a sign of life, as arqon recv gives
        sh(f"echo '{{\"id\":1,\"method\":\"arqon.recv\"}}' | socat - "
           f"UNIX-CONNECT:{daemon.moo_dir}/dreader.sock")
        return registry(daemon)["zgents"]["dreader"]["status"] == "active"
    wait_for(reads_its_mailbox_then_is_active, "active again after arqon.recv")


async def test_offline_when_the_handler_leaves_if_configured(make_daemon, zgent_socket):
    daemon = make_daemon({"zgents": ZGENTS, "moo": {"offline_without_handler": True}})
    handler = await zgent_socket(daemon.moo_dir / "dreader.sock")
    assert (await handler.call("arqon.serve"))["result"] == {"serving": "dreader"}
    await handler.close()
    wait_for(lambda: registry(daemon)["zgents"]["dreader"]["status"] == "offline", "offline")


def test_clean_stop_removes_sockets_and_marks_offline(make_daemon):
    daemon = make_daemon({"zgents": ZGENTS})
    assert daemon.stop() == 0
    assert not os.path.lexists(daemon.moo_dir / "dreader.sock")
    assert stat.S_ISFIFO(os.lstat(daemon.moo_dir / "dreader-inbox").st_mode)
    assert registry(daemon)["zgents"]["dreader"]["status"] == "offline"


async def test_leftovers_of_a_crash_are_replaced_and_work(make_daemon, zgent_socket):
    daemon = make_daemon({"zgents": ZGENTS})
    daemon.signal(signal.SIGKILL)
    daemon.proc.wait()
    moo = daemon.moo_dir
    assert stat.S_ISSOCK(os.lstat(moo / "dreader.sock").st_mode)  # stale, nobody listening
    os.chmod(moo / "dreader-inbox", 0o600)
    daemon.start()
    assert stat.S_IMODE(os.lstat(moo / "dreader-inbox").st_mode) == 0o660
    assert sh(f"echo '{{\"after\":\"crash\"}}' > {moo}/dreader-inbox").returncode == 0
    client = await zgent_socket(moo / "dreader.sock")
    assert (await client.call("arqon.recv", {"wait": 5}))["result"] == {"after": "crash"}


def test_files_that_are_not_ours_are_refused_and_left_alone(make_daemon, tmp_path):
    zgents = {"dreader": {}, "parseclipmate": {}, "livesock": {}, "healthy": {}}
    daemon = make_daemon({"zgents": zgents}, start=False)
    moo = daemon.moo_dir
    (moo / "dreader-inbox").write_text("my notes\n")
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    os.symlink(target, moo / "parseclipmate.sock")
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(moo / "livesock.sock"))
    live.listen()
    try:
        daemon.start()
        assert "dreader-inbox is a regular file, not a FIFO; refusing" in \
            daemon.wait_for_line("Zgent dreader not served")
        assert "is a symlink, not a socket" in daemon.wait_for_line("Zgent parseclipmate not")
        assert "in use by another process" in daemon.wait_for_line("Zgent livesock not")
        assert (moo / "dreader-inbox").read_text() == "my notes\n"
        assert os.readlink(moo / "parseclipmate.sock") == str(target)
        assert target.read_text() == "keep"
        assert list(registry(daemon)["zgents"]) == ["healthy"]
    finally:
        live.close()


async def test_command_registered_zgents_come_back_after_a_restart(make_daemon, connect_peer):
    daemon = make_daemon()
    peer = await connect_peer(daemon.ws_url)
    await peer.command("zgent.register", {"id": "gamma-watch", "capabilities": ["q:g"]})
    await peer.close()
    daemon.stop()
    daemon.start()
    entry = registry(daemon)["zgents"]["gamma-watch"]
    assert entry["status"] == "active" and entry["capabilities"] == ["q:g"]
    assert stat.S_ISSOCK(os.lstat(daemon.moo_dir / "gamma-watch.sock").st_mode)


async def test_a_bus_broadcast_is_appended_first_then_published_once(make_daemon,
                                                                      connect_peer):
    daemon = make_daemon()
    sender = await connect_peer(daemon.ws_url)
    # Accepted before anyone made the channel: the log is the destination.
    await sender.send({"type": "message", "room": "moo:broadcast", "payload": "Hello"})
    await sender.recv_type("message_response")
    log = daemon.log_dir / "broadcast.jsonl"
    first = log.read_bytes()
    assert orjson.loads(first)["content"] == "Hello"

    async def published() -> list[Any]:   # by the narrative bridge, once it read the line
        answer = await sender.command("history", {"room": "moo", "channel": "broadcast"})
        return [m["payload"]["content"] for m in answer["payload"]["data"]["history"]]
    assert await eventually(published) == ["Hello"]
    listener = await connect_peer(daemon.ws_url)
    await listener.command("join_channel", {"room": "moo", "channel": "broadcast"})
    await sender.send({"type": "message", "room": "moo", "channel": "broadcast",
                       "payload": {"from": "root", "content":
                                   "Market closed. Switching to review mode.",
                                   "priority": "normal"}})
    ack = await sender.recv_type("message_response")
    assert os.readlink(log) == str(daemon.moo_dir / "broadcast.jsonl")
    [_, line] = [orjson.loads(text) for text in log.read_text().splitlines()]
    assert set(line) == {"ts", "from", "type", "content", "priority"}
    assert (line["from"], line["type"], line["priority"]) == ("root", "broadcast", "normal")
    got = await listener.recv_type("event")
    # Published once, by the narrative bridge reading the log: its id comes from the file.
    assert got["payload"] == line and got["id"] != ack["id"]
    assert got["metadata"]["source"] == {"path": str(log), "offset": len(first)}
    await listener.expect_silence(0.3)
    await sender.expect_silence(0.1)
    bad = {"type": "message", "room": "moo:broadcast", "payload": {"content": "x",
                                                                   "priority": "loud"}}
    await sender.send(bad)
    error = await sender.recv_type("error")
    assert "priority" in error["error"]
    assert len(log.read_text().splitlines()) == 2
    await listener.expect_silence(0.2)


def test_sighup_applies_added_removed_and_changed_zgent_tables(make_daemon):
    daemon = make_daemon({"zgents": {**ZGENTS, "leaving": {}}})
    assert sh(f"echo '{{\"kept\":1}}' > {daemon.moo_dir}/dreader-inbox").returncode == 0
    write_config(daemon.config_path, {
        "server": {"port": 0, "state_dir": str(daemon.state_dir)},
        "moo": {"dir": str(daemon.moo_dir), "log_dir": str(daemon.log_dir)},
        "zgents": {"dreader": {"capabilities": ["query:everything"]}, "arriving": {}}})
    start = len(daemon.lines)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_line("configuration reloaded", start=start)
    wait_for(lambda: sorted(registry(daemon)["zgents"]) == ["arriving", "dreader", "leaving"]
             and registry(daemon)["zgents"]["leaving"]["status"] == "offline", "reload")
    assert registry(daemon)["zgents"]["dreader"]["capabilities"] == ["query:everything"]
    assert not os.path.lexists(daemon.moo_dir / "leaving-inbox")
    assert stat.S_ISFIFO(os.lstat(daemon.moo_dir / "arriving-inbox").st_mode)
    got = sh(f"echo '{{\"id\":1,\"method\":\"arqon.recv\"}}' | socat - "
             f"UNIX-CONNECT:{daemon.moo_dir}/dreader.sock | jq -c .result")
    assert got.stdout == '{"kept":1}\n'


async def test_a_zgent_with_a_handler_attached_does_not_go_stale(make_daemon, zgent_socket):
    daemon = make_daemon({"zgents": {**ZGENTS, "idle": {}}, "moo": {"stale_after": 0.5}})
    handler = await zgent_socket(daemon.moo_dir / "dreader.sock")
    assert (await handler.call("arqon.serve"))["result"] == {"serving": "dreader"}
    wait_for(lambda: registry(daemon)["zgents"]["idle"]["status"] == "stale", "idle stale")
    # Meanwhile the served one stays active, its lastSeen refreshed by the checks.
    first = registry(daemon)["zgents"]["dreader"]["lastSeen"]
    wait_for(lambda: registry(daemon)["zgents"]["dreader"]["lastSeen"] != first, "refresh")
    assert registry(daemon)["zgents"]["dreader"]["status"] == "active"


def test_a_valid_but_hand_edited_registry_is_set_aside_at_start(make_daemon):
    daemon = make_daemon({"zgents": ZGENTS})
    daemon.stop()
    path = daemon.moo_dir / "registry.json"
    edited = registry(daemon)
    edited["zgents"]["dreader"]["capabilities"] = ["query:everything"]
    path.write_bytes(orjson.dumps(edited))
    daemon.start()
    assert "changed since arqond wrote it" in daemon.wait_for_line("unusable registry")
    assert orjson.loads((daemon.moo_dir / "registry.json.bad").read_bytes()) == edited
    assert registry(daemon)["zgents"]["dreader"]["capabilities"] == ZGENTS["dreader"][
        "capabilities"]
    # Its own file, left by a clean stop, is taken as it is.
    daemon.stop()
    daemon.start()  # (start() clears the collected lines)
    assert not any("unusable" in line for line in daemon.lines)


async def test_unregistering_a_served_zgent_answers_its_open_requests(make_daemon, connect_peer,
                                                                      zgent_socket):
    daemon = make_daemon()
    peer = await connect_peer(daemon.ws_url)
    await peer.command("zgent.register", {"id": "brief"})
    handler = await zgent_socket(daemon.moo_dir / "brief.sock")
    assert (await handler.call("arqon.serve"))["result"] == {"serving": "brief"}
    asker = await zgent_socket(daemon.moo_dir / "brief.sock")
    await asker.send({"id": "q", "method": "query"})
    await handler.recv()
    await peer.command("zgent.unregister", {"id": "brief"})
    answer = await asker.recv()
    assert answer["id"] == "q" and answer["error"]["code"] == -32001
    assert await handler.reader.read() == b""  # the handler's connection is closed too


async def test_members_of_the_moo_group_append_broadcasts_others_cannot(make_daemon,
                                                                       shared_moo_dir,
                                                                       connect_peer):
    daemon = make_daemon({"moo": {"dir": shared_moo_dir, "group": "nogroup"}})
    log = os.path.join(shared_moo_dir, "broadcast.jsonl")
    info = os.stat(log)
    assert stat.S_IMODE(info.st_mode) == 0o664 and info.st_gid == grp.getgrnam("nogroup").gr_gid
    listener = await connect_peer(daemon.ws_url)
    await listener.command("join_channel", {"room": "moo:broadcast"})
    line = ('{"ts":"2026-02-12T16:00:00Z","from":"orchestrator","type":"broadcast",'
            '"content":"Market closed.","priority":"normal"}')
    outsider = sh(f"setpriv --reuid=65534 --regid=65533 --clear-groups "
                  f"sh -c 'echo \"$0\" >> {log}' '{line}'")
    assert outsider.returncode != 0 and "Permission denied" in outsider.stderr
    member = sh(f"setpriv --reuid=65534 --regid=65534 --clear-groups "
                f"sh -c 'echo \"$0\" >> {log}' '{line}'")
    assert member.returncode == 0, member.stderr
    got = await listener.recv_type("event")
    assert got["payload"]["content"] == "Market closed." and got["sender"] == "orchestrator"
    await listener.expect_silence(0.3)  # once: the refused append published nothing


async def test_an_unregistered_zgent_is_purged_from_the_registry_after_its_time(make_daemon,
                                                                              connect_peer):
    daemon = make_daemon({"moo": {"purge_offline_after": 1.0}})
    peer = await connect_peer(daemon.ws_url)
    await peer.command("zgent.register", {"id": "brief"})
    await peer.command("zgent.unregister", {"id": "brief"})
    assert registry(daemon)["zgents"]["brief"]["status"] == "offline"
    daemon.wait_for_line("Zgent brief purged from the registry: offline for more than 1s "
                         "(moo.purge_offline_after)")
    wait_for(lambda: "brief" not in registry(daemon)["zgents"], "brief purged from the file")
    assert metrics_of(daemon)["arqonbus_moo_registry_purged_total"] == 1
    listed = await peer.command("zgent.list")
    assert listed["payload"]["data"]["zgents"] == {}
