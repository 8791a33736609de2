"""Who may do what with Zgents, against the real daemon: clients run as other uids on the bus
socket (as the ``arqon`` CLI and the SDK reach arqond locally), on Zgent sockets and over
loopback HTTP, for every MOO rule of the policy (arqond/core/access.py).

eve is uid 65533 in group 65533: not in the MOO group. mallory is ``nobody`` (65534) in group
``nogroup`` (65534, the MOO group here): a member who owns only what she registers. Root registers
``dreader`` through the control socket; its owner is root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import ROOT, eventually, metrics_of, run_arqon, scaled, sh

NOBODY = 65534
EVE, MALLORY = (65533, 65533), (NOBODY, NOBODY)     # uid, gid
pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="runs clients as other uids")

# A bus client run as another user, driven line by line on stdin: {"frame": F} sends F and
# prints the reply to it (a response, an error or a message_response); {"drain": S} prints
# every other frame that came within S seconds, as one list.
DRIVER = r"""
import asyncio, json, sys
from websockets.asyncio.client import unix_connect

REPLIES = ("response", "error", "message_response")

async def main(path):
    async with unix_connect(path, "ws://localhost/") as ws:
        await ws.recv()   # the welcome
        others = []
        loop = asyncio.get_running_loop()
        for line in iter(sys.stdin.readline, ""):
            order = json.loads(line)
            if "frame" in order:
                await ws.send(json.dumps(order["frame"]))
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] in REPLIES:
                        break
                    if frame["type"] != "command_response":
                        others.append(frame)
                print(json.dumps(frame), flush=True)
            else:
                deadline = loop.time() + order["drain"]
                while (left := deadline - loop.time()) > 0:
                    try:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), left))
                    except asyncio.TimeoutError:
                        break
                    if frame["type"] != "command_response":   # a command's second answer
                        others.append(frame)
                print(json.dumps(others), flush=True)
                others = []

asyncio.run(main(sys.argv[1]))
"""


class Driven:
    """One bus client of another uid on the bus socket."""

    def __init__(self, bus_socket: Path, ids: tuple[int, int]) -> None:
        self.process = subprocess.Popen(
            ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups",
             sys.executable, "-c",
             DRIVER, str(bus_socket)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, cwd=ROOT)

    def _order(self, order: dict[str, Any]) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(order) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the driven client ended"
        return json.loads(line)

    def command(self, name: str, **args: Any) -> dict[str, Any]:
        return self._order({"frame": {"type": "command", "command": name, "args": args}})

    def publish(self, target: str, payload: Any) -> dict[str, Any]:
        return self._order({"frame": {"type": "message", "room": target, "payload": payload}})

    def drain(self, seconds: float = 0.5) -> list[dict[str, Any]]:
        return self._order({"drain": scaled(seconds)})

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(scaled(10))
        self.process.stdout.close()


def refused(reply: dict[str, Any], text: str) -> bool:
    """A command's error response, or a message's error frame, of the policy."""
    assert reply["type"] in ("response", "error") and reply.get("status", "error") == "error"
    assert (reply["error_code"], reply["error"]) == ("AUTHORIZATION_ERROR", text), reply
    return True


def ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["type"] in ("response", "message_response"), reply
    assert reply.get("status", "success") == "success", reply
    return reply


MOO_MEMBERS = "(allowed: members of the MOO group (moo.group) and admins)"


def owners_of(zgent: str) -> str:
    return f"(allowed: the owners of {zgent}: who registered it, its uids and groups; and " \
           "admins)"


@pytest.fixture
def shared():
    """The MOO dir, log dir and bus socket where other uids can reach them."""
    top = Path(tempfile.mkdtemp(prefix="arqond-access-"))
    os.chmod(top, 0o755)
    yield top
    subprocess.run(["rm", "-rf", str(top)], check=True)


@pytest.fixture
def moo(make_daemon, shared):
    # As packaged (arqond-moo(7) "Permissions"): only arqond makes files in the MOO dir; the
    # group writes in the log dir, where the sticky bit keeps each file its owner's.
    for sub, mode in (("moo", 0o2755), ("log", 0o3775)):
        (shared / sub).mkdir()
        os.chown(shared / sub, 0, NOBODY)
        os.chmod(shared / sub, mode)
    daemon = make_daemon({"server": {"bus_socket": str(shared / "bus.sock")},
                          "moo": {"dir": str(shared / "moo"), "log_dir": str(shared / "log"),
                                  "group": "nogroup"},
                          "quotas": {"zgents": 2}})
    assert run_arqon(daemon, "zgent", "register", "dreader").returncode == 0
    drivers: list[Driven] = []

    def as_(ids: tuple[int, int]) -> Driven:
        drivers.append(Driven(shared / "bus.sock", ids))
        return drivers[-1]
    daemon.shared = shared
    yield daemon, as_
    for driver in drivers:
        driver.close()


def write_inbox(daemon, zgent: str, line: dict[str, Any]) -> None:
    path = daemon.shared / "moo" / f"{zgent}-inbox"
    assert sh(f"echo '{orjson.dumps(line).decode()}' > {path}").returncode == 0


def test_outside_the_moo_group_the_bus_gives_no_zgent_administration_inboxes_or_rooms(moo):
    daemon, as_ = moo
    eve = as_(EVE)
    assert refused(eve.command("zgent.register", id="evil"),
                   f"not allowed to register a Zgent {MOO_MEMBERS}")
    assert refused(eve.command("zgent.unregister", id="dreader"),
                   f"not allowed to manage Zgent dreader {owners_of('dreader')}")
    assert refused(eve.command("join_channel", room="dreader", channel="inbox"),
                   f"not allowed to read dreader:inbox {owners_of('dreader')}")
    assert refused(eve.command("history", room="dreader", channel="inbox"),
                   f"not allowed to read dreader:inbox {owners_of('dreader')}")
    assert refused(eve.publish("dreader:inbox", {"text": "hi"}),
                   f"not allowed to write to dreader:inbox {MOO_MEMBERS}")
    assert refused(eve.publish("dreader:narrative", {"content": "I am dreader"}),
                   f"not allowed to publish in Zgent dreader's room {owners_of('dreader')}")
    assert refused(eve.publish("moo:broadcast", "urgent: stop everything"),
                   f"not allowed to publish in room moo {MOO_MEMBERS}")
    # A wildcard is joined, and filtered for her at each message: the secret never comes.
    ok(eve.command("join_channel", room="*", channel="inbox"))
    write_inbox(daemon, "dreader", {"secret": "roots"})
    assert eve.drain() == []
    # Nothing she tried changed anything: dreader is there, its message waits for root.
    registry = json.loads(run_arqon(daemon, "zgent", "list").stdout)["zgents"]
    assert set(registry) == {"dreader"} and registry["dreader"]["status"] == "active"
    received = run_arqon(daemon, "recv", "dreader")
    assert orjson.loads(received.stdout) == {"secret": "roots"}
    assert not Path(daemon.shared / "moo", "evil-inbox").exists()
    assert "urgent" not in (daemon.shared / "moo" / "broadcast.jsonl").read_text()
    daemon.wait_for_line("not allowed to register a Zgent")
    assert metrics_of(daemon)["arqonbus_moo_zgents"] == 1


async def test_a_member_owns_what_she_registers_and_nothing_else(moo):
    daemon, as_ = moo
    mallory = as_(MALLORY)
    mine = ok(mallory.command("zgent.register", id="mine"))["payload"]["data"]
    assert mine["status"] == "active"
    daemon.wait_for_line("Zgent mine registered (command) by nobody")
    ok(mallory.command("join_channel", room="mine", channel="inbox"))
    assert refused(mallory.command("join_channel", room="dreader", channel="inbox"),
                   f"not allowed to read dreader:inbox {owners_of('dreader')}")
    assert refused(mallory.command("zgent.unregister", id="dreader"),
                   f"not allowed to manage Zgent dreader {owners_of('dreader')}")
    # Writing to an inbox is what the FIFO's mode gives her; speaking as dreader is not.
    ok(mallory.publish("dreader:inbox", {"text": "hello dreader"}))
    assert refused(mallory.publish("dreader:notes", {"content": "I am dreader"}),
                   f"not allowed to publish in Zgent dreader's room {owners_of('dreader')}")
    # Broadcasts: as herself or a Zgent she owns; another name is for admins.
    assert refused(mallory.publish("moo:broadcast", {"from": "orchestrator", "content": "x"}),
                   "not allowed to broadcast as orchestrator (allowed: admins)")
    ok(mallory.publish("moo:broadcast", {"from": "mine", "content": "from mine"}))
    ok(mallory.publish("moo:broadcast", "from myself"))
    lines = [orjson.loads(line) for line in
             Path(daemon.shared / "moo", "broadcast.jsonl").read_text().splitlines()]
    assert [(line["from"], line["content"]) for line in lines] == [
        ("mine", "from mine"), ("nobody", "from myself")]
    # Her inbox reaches her; dreader's, written by root, does not.
    write_inbox(daemon, "dreader", {"secret": "roots"})
    write_inbox(daemon, "mine", {"for": "mallory"})
    got: list[dict[str, Any]] = []

    async def hers() -> list[dict[str, Any]]:   # her line comes once the store has it
        got.extend(mallory.drain())
        return got
    await eventually(hers)
    got.extend(mallory.drain())   # and nothing after it
    assert [(f["room"], f["payload"]) for f in got] == [("mine", {"for": "mallory"})]
    # Her quota: quotas.zgents is 2 here.
    ok(mallory.command("zgent.register", id="mine2"))
    third = mallory.command("zgent.register", id="mine3")
    assert (third["status"], third["error_code"], third["error"]) == (
        "error", "LIMIT_EXCEEDED", "quota quotas.zgents (2) reached for nobody: 2 in use")
    ok(mallory.command("zgent.unregister", id="mine2"))
    daemon.wait_for_line("Zgent mine2 unregistered by nobody")
    assert metrics_of(daemon)['arqonbus_quota_refusals_total{quota="zgents"}'] == 1


def test_ownership_survives_a_restart(moo):
    daemon, as_ = moo
    mallory = as_(MALLORY)
    ok(mallory.command("zgent.register", id="mine"))
    mallory.close()
    daemon.stop()
    daemon.start()
    eve, mallory = as_(EVE), as_(MALLORY)
    assert refused(eve.command("zgent.unregister", id="mine"),
                   f"not allowed to manage Zgent mine {owners_of('mine')}")
    assert refused(mallory.command("zgent.unregister", id="dreader"),
                   f"not allowed to manage Zgent dreader {owners_of('dreader')}")
    ok(mallory.command("zgent.unregister", id="mine"))


def test_on_a_zgent_socket_only_its_owners_read_its_mailbox_or_serve_it(moo):
    daemon, as_ = moo
    mallory = as_(MALLORY)
    ok(mallory.command("zgent.register", id="mine"))
    write_inbox(daemon, "dreader", {"secret": "roots"})
    write_inbox(daemon, "mine", {"for": "mallory"})
    moo_dir = daemon.shared / "moo"

    def ask(zgent: str, *requests: dict[str, Any]) -> list[dict[str, Any]]:
        lines = "\n".join(json.dumps(r) for r in requests)
        done = sh(f"printf '%s\\n' '{lines}' | setpriv --reuid={NOBODY} --regid={NOBODY} "
                  f"--clear-groups socat -t 2 - UNIX-CONNECT:{moo_dir}/{zgent}.sock")
        return [orjson.loads(line) for line in done.stdout.splitlines()]
    recv = {"id": "r", "method": "arqon.recv"}
    serve = {"id": "s", "method": "arqon.serve"}
    history = {"id": "h", "method": "arqon.history", "params": {"channel": "inbox"}}
    forbidden = {"code": -32003, "message": f"not allowed to read dreader:inbox "
                 f"{owners_of('dreader')[1:-1].join('()')}"}
    assert ask("dreader", recv, history) == [
        {"jsonrpc": "2.0", "id": "r", "error": forbidden},
        {"jsonrpc": "2.0", "id": "h", "error": forbidden}]
    assert ask("dreader", serve) == [{"jsonrpc": "2.0", "id": "s", "error": {
        "code": -32003, "message": f"not allowed to serve Zgent dreader "
                                   f"{owners_of('dreader')}"}}]
    [mine] = ask("mine", recv)
    assert mine == {"jsonrpc": "2.0", "id": "r", "result": {"for": "mallory"}}
    # dreader's message is still there for root.
    assert orjson.loads(run_arqon(daemon, "recv", "dreader").stdout) == {"secret": "roots"}


async def test_history_and_streams_over_http_keep_inboxes_to_their_owners(moo):
    daemon, as_ = moo
    write_inbox(daemon, "dreader", {"secret": "roots"})
    host, port = daemon.http_address
    base = f"http://{host}:{port}"

    def curl(path: str) -> tuple[str, str]:
        done = sh(f"setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups curl -s -m 2 "
                  f"-w '\\n%{{http_code}}' '{base}{path}'")
        body, _, status = done.stdout.rpartition("\n")
        return status, body

    async def roots_view() -> list[Any]:   # the line is in history once the store has it
        sh(f"curl -s '{base}/v1/history?room=dreader&channel=inbox' > {daemon.tmp}/root.json")
        return orjson.loads(Path(f"{daemon.tmp}/root.json").read_bytes())["messages"]
    assert [m["payload"] for m in await eventually(roots_view)] == [{"secret": "roots"}]
    # Not hers.
    status, body = curl("/v1/history?room=dreader&channel=inbox")
    assert (status, orjson.loads(body)) == ("403", {
        "error": "Forbidden", "status": 403,
        "details": f"not allowed to read dreader:inbox {owners_of('dreader')}"})
    status, body = curl("/v1/stream?room=dreader&channel=inbox")
    assert status == "403" and "not allowed to read dreader:inbox" in body
    # The whole room's history leaves the inbox out for her.
    status, body = curl("/v1/history?room=dreader")
    assert status == "200" and orjson.loads(body)["messages"] == []


def test_a_narrative_file_makes_its_owner_the_zgents_owner(moo):
    daemon, as_ = moo
    log = daemon.shared / "log"
    done = sh(f"setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups sh -c "
              f"'echo {{\\\"content\\\": \\\"hi\\\"}} >> {log}/storyteller-narrative.jsonl'")
    assert done.returncode == 0, done.stderr
    daemon.wait_for_line("Zgent storyteller registered (narrative)")
    eve, mallory = as_(EVE), as_(MALLORY)
    assert refused(eve.command("join_channel", room="storyteller", channel="inbox"),
                   f"not allowed to read storyteller:inbox {owners_of('storyteller')}")
    ok(mallory.command("join_channel", room="storyteller", channel="inbox"))
    ok(mallory.command("zgent.unregister", id="storyteller"))


def test_moo_max_zgents_bounds_every_registration_admins_too(make_daemon):
    daemon = make_daemon({"moo": {"max_zgents": 2}, "zgents": {"declared": {}}})
    for name in ("one", "two"):
        assert run_arqon(daemon, "zgent", "register", name).returncode == 0
    third = run_arqon(daemon, "zgent", "register", "three")
    assert (third.returncode, third.stderr) == (1, (
        "arqon: zgent.register: moo.max_zgents (2) Zgents are registered already; unregister "
        "one first (LIMIT_EXCEEDED)\n"))
    daemon.wait_for_line("moo.max_zgents (2) reached")
    metrics = metrics_of(daemon)
    assert (metrics["arqonbus_moo_zgents_refused_total"], metrics["arqonbus_moo_zgents"]) == \
        (1, 3)   # the declared one is not counted against the bound
    assert run_arqon(daemon, "zgent", "unregister", "one").returncode == 0
    assert run_arqon(daemon, "zgent", "register", "three").returncode == 0
