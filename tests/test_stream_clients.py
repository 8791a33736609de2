"""Durable streams from the clients' side, against the real daemon: /v1/stream resuming
(since, epoch, Last-Event-ID; NDJSON and server-sent events), a channel's own retention,
``arqon tail --since``, ``arqon read --cursor``, and the SDK resuming after arqond was
killed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

import orjson
import pytest

from arqond.sdk import ArqonBusClient, ArqonBusConnectionError, CommandFailed, Position
from tests.conftest import (ROOT, arqon_command, http_call, metrics_of, on_free_ports,
                            run_arqon, scaled)
from tests.test_narrative_cli import narrative_line, published

TARGET = {"room": "lab", "channel": "notes"}
FORM = "is not SEQ or SEQ:EPOCH, as a message's metadata.seq and .epoch (say 42:3f2a9c01)"


async def publish(peer, count: int, start: int = 0, target: dict = TARGET) -> str:
    """``count`` messages {"n": start...} on the target, each acked; the stream's epoch."""
    for n in range(start, start + count):
        await peer.send({"type": "message", **target, "payload": {"n": n}})
        ack = await peer.recv_type("message_response")
    return ack["metadata"]["epoch"]


# -- /v1/stream ------------------------------------------------------------------------------

class CurlStream:
    """``curl -N`` on /v1/stream: its response head, then its body line by line."""

    def __init__(self, process: asyncio.subprocess.Process, status: int,
                 headers: dict[str, str]) -> None:
        self.process = process
        self.status = status
        self.headers = headers

    @classmethod
    async def open(cls, daemon, query: str, *headers: str) -> "CurlStream":
        arguments = [f"-H{header}" for header in headers]
        process = await asyncio.create_subprocess_exec(
            "curl", "-sSN", "-D", "/dev/stderr", *arguments, f"{daemon.http_url}/v1/stream?"
            f"{query}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
        status_line = await asyncio.wait_for(process.stderr.readline(), scaled(10))
        found = {}
        while line := (await asyncio.wait_for(process.stderr.readline(), scaled(10))).strip():
            name, _, value = line.decode().partition(":")
            found[name.lower()] = value.strip()
        return cls(process, int(status_line.split()[1]), found)

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.process.stdout.readline(), scaled(5))

    async def envelopes(self, count: int) -> list[dict]:
        return [orjson.loads(await self.line()) for _ in range(count)]

    async def events(self, count: int) -> list[dict]:
        """Server-sent events, each as its fields (data parsed as JSON)."""
        found = []
        for _ in range(count):
            event = {}
            while (line := await self.line()) != b"\n":
                name, _, value = line.decode().rstrip("\n").partition(": ")
                event[name] = orjson.loads(value) if name == "data" else value
            found.append(event)
        return found

    async def expect_silence(self, seconds: float = 0.3) -> None:
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), scaled(seconds))
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"expected nothing more, got {line!r}")

    async def close(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()


@pytest.fixture
async def curl_stream():
    opened: list[CurlStream] = []

    async def factory(daemon, query: str, *headers: str) -> CurlStream:
        opened.append(await CurlStream.open(daemon, query, *headers))
        return opened[-1]
    yield factory
    for stream in opened:
        await stream.close()


def resume_head(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.startswith("x-resume-")}


async def test_an_event_stream_resumes_after_its_last_event_id_with_exactly_what_it_missed(
        daemon, connect_peer, curl_stream):
    sender = await connect_peer(daemon.ws_url)
    epoch = await publish(sender, 5)
    # What a browser's EventSource sends when it reconnects: the last id it saw.
    stream = await curl_stream(daemon, "room=lab&channel=notes", "Accept: text/event-stream",
                               f"Last-Event-ID: 2:{epoch}")
    assert stream.status == 200 and stream.headers["content-type"] == "text/event-stream"
    assert resume_head(stream.headers) == {
        "x-resume-recovered": "true", "x-resume-epoch": epoch, "x-resume-earliest-seq": "1",
        "x-resume-last-seq": "5"}
    [said] = await stream.events(1)
    assert said == {"event": "resume", "data": {"recovered": True, "reason": None,
                                                "epoch": epoch, "earliest_seq": 1,
                                                "last_seq": 5}}
    missed = await stream.events(3)
    assert [(e["id"], e["data"]["payload"]) for e in missed] == [
        (f"3:{epoch}", {"n": 2}), (f"4:{epoch}", {"n": 3}), (f"5:{epoch}", {"n": 4})]
    assert all(e["data"]["metadata"] == {"seq": int(e["id"].split(":")[0]), "epoch": epoch}
               for e in missed)
    await publish(sender, 1, start=5)
    [live] = await stream.events(1)
    assert (live["id"], live["data"]["payload"]) == (f"6:{epoch}", {"n": 5})
    await stream.expect_silence()


async def test_last_event_id_wins_over_since_as_an_eventsource_reconnecting_sends_both(
        daemon, connect_peer, curl_stream):
    sender = await connect_peer(daemon.ws_url)
    epoch = await publish(sender, 4)
    stream = await curl_stream(daemon, f"room=lab&channel=notes&since=0&epoch={epoch}",
                               "Accept: text/event-stream", f"Last-Event-ID: 3:{epoch}")
    [said, only] = await stream.events(2)
    assert said["event"] == "resume" and (only["id"], only["data"]["payload"]) == (
        f"4:{epoch}", {"n": 3})
    await stream.expect_silence()


async def test_an_ndjson_stream_resumed_past_retention_says_why_in_its_head(
        make_daemon, connect_peer, curl_stream):
    daemon = make_daemon({"streams": {"max_messages": 3}})
    sender = await connect_peer(daemon.ws_url)
    epoch = await publish(sender, 6)
    query = f"room=lab&channel=notes&since=1&epoch={epoch}"
    stream = await curl_stream(daemon, query)
    assert stream.headers["content-type"] == "application/x-ndjson"
    expected = {"x-resume-recovered": "false", "x-resume-reason": "seq 2 is no longer kept "
                "(retention); the earliest kept is 4", "x-resume-epoch": epoch,
                "x-resume-earliest-seq": "4", "x-resume-last-seq": "6"}
    assert resume_head(stream.headers) == expected
    # What there is, then live; NDJSON lines are envelopes only (the head said the rest).
    got = await stream.envelopes(3)
    assert [(m["metadata"]["seq"], m["payload"]["n"]) for m in got] == [(4, 3), (5, 4), (6, 5)]
    await publish(sender, 1, start=6)
    assert (await stream.envelopes(1))[0]["metadata"] == {"seq": 7, "epoch": epoch}
    # HEAD says the same in its head, and sends nothing.
    head = http_call(daemon, "HEAD", f"/v1/stream?{query}")
    assert head.status == 200 and head.body == b""
    assert resume_head(head.headers) == {
        **expected, "x-resume-reason": "seq 2 is no longer kept (retention); the earliest kept "
        "is 5", "x-resume-earliest-seq": "5", "x-resume-last-seq": "7"}


async def test_since_without_an_epoch_resumes_in_the_stream_as_it_is_now(daemon, connect_peer,
                                                                        curl_stream):
    sender = await connect_peer(daemon.ws_url)
    epoch = await publish(sender, 3)
    stream = await curl_stream(daemon, "room=lab:notes&since=1")
    assert resume_head(stream.headers)["x-resume-recovered"] == "true"
    assert [m["metadata"]["seq"] for m in await stream.envelopes(2)] == [2, 3]
    await stream.expect_silence()
    ahead = await curl_stream(daemon, f"room=lab:notes&since=9&epoch={epoch}")
    assert resume_head(ahead.headers)["x-resume-reason"] == \
        "seq 9 is ahead of the stream (its last is 3)"
    await ahead.expect_silence()


async def test_a_wildcard_event_stream_has_no_ids_to_resume_by(daemon, connect_peer,
                                                               curl_stream):
    stream = await curl_stream(daemon, "room=*&channel=notes", "Accept: text/event-stream")
    assert resume_head(stream.headers) == {}
    sender = await connect_peer(daemon.ws_url)
    await publish(sender, 1)
    [event] = await stream.events(1)
    assert list(event) == ["data"] and event["data"]["payload"] == {"n": 0}


@pytest.mark.parametrize("query, headers, status, details", [
    ("room=lab:notes&since=abc", (), 400, f"since and epoch: 'abc' {FORM}"),
    ("room=lab:notes&since=-1", (), 400, f"since and epoch: '-1' {FORM}"),
    ("room=lab:notes&since=1&epoch=XYZ", (), 400, f"since and epoch: '1:XYZ' {FORM}"),
    ("room=lab:notes&epoch=0badcafe", (), 400,
     "epoch goes with since: since=SEQ&epoch=EPOCH of the last message seen"),
    ("room=lab:notes", ("Last-Event-ID", "yesterday"), 400, f"Last-Event-ID: 'yesterday' {FORM}"),
    ("room=*&channel=notes&since=0", (), 400, "since resumes one channel, not a wildcard"),
    ("room=lab:nothing&since=0", (), 404, "channel lab:nothing does not exist, so it has no "
     "epoch to resume in; give the epoch"),
])
def test_a_bad_resume_is_refused_with_what_is_wrong_and_leaves_nothing_behind(
        shared_daemon, query, headers, status, details):
    daemon = shared_daemon()
    reply = http_call(daemon, "GET", f"/v1/stream?{query}",
                      headers=dict([headers]) if headers else None)
    assert (reply.status, reply.json()["details"]) == (status, details)
    values = metrics_of(daemon)
    assert values["arqonbus_http_streams"] == 0 and values["arqonbus_connections_active"] == 0
    assert http_call(daemon, "GET", "/v1/history?room=lab:nothing").status == 404


# -- a channel's own retention ---------------------------------------------------------------

async def test_a_channel_created_with_its_own_retention_keeps_it_across_a_restart_even_unused(
        daemon, connect_peer):
    anyone = await connect_peer(daemon.ws_url)
    refused = await anyone.command("create_channel", {**TARGET, "retention": {"messages": 3}})
    assert (refused["error_code"], refused["error"]) == (
        "AUTHORIZATION_ERROR", "create_channel is for admin clients only")
    admin = await connect_peer(daemon.control_path)
    created = await admin.command("create_channel", {**TARGET, "retention": {"messages": 3}})
    kept = created["payload"]["data"]["stream"]["retention"]
    assert kept == {"messages": 3, "bytes": 67108864, "age": 0.0}
    epoch = await publish(admin, 5)
    # One nobody has published to yet is kept as well, from the answer on.
    quiet = {"room": "lab", "channel": "quiet"}
    made = await admin.command("create_channel", {**quiet, "description": "later",
                                                  "retention": {"age": 60}})
    daemon.kill()
    daemon.start()
    peer = await connect_peer(daemon.ws_url)
    info = (await peer.command("channel_info", TARGET))["payload"]["data"]["stream"]
    assert info == {"epoch": epoch, "first_seq": 3, "last_seq": 5, "retention": kept}
    restored = (await peer.command("channel_info", quiet))["payload"]["data"]
    assert (restored["stream"], restored["description"]) == (made["payload"]["data"]["stream"],
                                                            "later")
    await publish(peer, 2, start=5)
    info = (await peer.command("channel_info", TARGET))["payload"]["data"]["stream"]
    assert (info["first_seq"], info["last_seq"]) == (5, 7)


# -- arqon tail --since ----------------------------------------------------------------------

def arqon_env(daemon) -> dict[str, str]:
    """What run_arqon gives arqon: the daemon's configuration and WebSocket URL."""
    return {**daemon.env, "ARQONBUS_CONFIG": str(daemon.config_path),
            "ARQONBUS_WS_URL": daemon.ws_url}


def frames(text: str) -> list[dict]:
    return [orjson.loads(line) for line in text.splitlines()]


def seqs_and_payloads(messages: list[dict]) -> list[tuple[int, int]]:
    return [(m["metadata"]["seq"], m["payload"]["n"]) for m in messages]


async def test_tail_since_prints_what_came_after_then_follows_live(daemon, connect_peer):
    sender = await connect_peer(daemon.ws_url)
    epoch = await publish(sender, 5)
    tail = await asyncio.create_subprocess_exec(
        *arqon_command("tail", "--room", "lab", "--channel", "notes", "--since", f"2:{epoch}",
                       "--raw", "--follow"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=arqon_env(daemon),
        cwd=ROOT)
    try:
        lines = [orjson.loads(await asyncio.wait_for(tail.stdout.readline(), scaled(10)))
                 for _ in range(4)]
        assert lines[0]["payload"]["welcome"] == "Connected to ArqonBus"
        assert seqs_and_payloads(lines[1:]) == [(3, 2), (4, 3), (5, 4)]
        await publish(sender, 1, start=5)
        live = orjson.loads(await asyncio.wait_for(tail.stdout.readline(), scaled(5)))
        assert seqs_and_payloads([live]) == [(6, 5)]
    finally:
        tail.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(tail.wait(), scaled(10)) == 0
    assert await tail.stdout.read() == b"" and await tail.stderr.read() == b""


async def test_tail_since_says_on_stderr_when_it_could_not_recover(make_daemon, connect_peer):
    daemon = make_daemon({"streams": {"max_messages": 3}})
    sender = await connect_peer(daemon.ws_url)
    epoch = await publish(sender, 6)
    lost = run_arqon(daemon, "tail", "--room", "lab:notes", "--since", f"1:{epoch}", "--raw",
                     "--limit", "4")
    assert (lost.returncode, lost.stderr) == (0, "arqon: lab:notes: not recovered: seq 2 is no "
                                                 "longer kept (retention); the earliest kept "
                                                 "is 4\n")
    assert seqs_and_payloads(frames(lost.stdout)[1:]) == [(4, 3), (5, 4), (6, 5)]
    # Without an epoch: in the stream as it is now.
    now = run_arqon(daemon, "tail", "--channel", "lab:notes", "--since", "4", "--raw",
                    "--limit", "3")
    assert (now.returncode, now.stderr) == (0, "")
    assert seqs_and_payloads(frames(now.stdout)[1:]) == [(5, 4), (6, 5)]


@pytest.mark.parametrize("arguments, error", [
    (("--room", "lab", "--channel", "notes", "--since", "abc"), f"--since: 'abc' {FORM}"),
    (("--room", "lab", "--channel", "notes", "--since", "1:XY"), f"--since: '1:XY' {FORM}"),
    (("--since", "1"), "--since needs the channel it resumes: --room ROOM --channel CHANNEL"),
    (("--moo", "dreader", "--since", "1"),
     "--since is not for --moo, which shows the last --lines first"),
    (("--room", "*", "--channel", "notes", "--since", "0"),
     "cannot join *:notes: since resumes one channel, not a wildcard"),
    (("--room", "lab", "--channel", "nothing", "--since", "0"),
     "cannot resume lab:nothing: channel lab:nothing does not exist, so it has no epoch to "
     "resume in; give --since SEQ:EPOCH"),
])
def test_tail_since_refuses_what_it_cannot_resume_and_creates_nothing(shared_daemon, arguments,
                                                                     error):
    daemon = shared_daemon()
    done = run_arqon(daemon, "tail", *arguments)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"arqon: {error}\n")
    assert http_call(daemon, "GET", "/v1/history?room=lab:nothing").status == 404


async def test_tail_moo_shows_the_lines_from_before_a_kill_9_once_each(daemon):
    path = daemon.log_dir / "dreader-narrative.jsonl"
    with open(path, "ab") as handle:
        handle.write(b"".join(narrative_line(n) for n in (1, 2, 3)))
    await published(daemon, path)
    daemon.kill()
    daemon.start()
    tail = await asyncio.create_subprocess_exec(
        *arqon_command("tail", "--moo", "dreader", "--lines", "5"), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=arqon_env(daemon), cwd=ROOT)
    try:
        shown = [await asyncio.wait_for(tail.stdout.readline(), scaled(10)) for _ in range(3)]
        assert shown == [b"[14:30:01] signal 1\n", b"[14:30:02] signal 2\n",
                         b"[14:30:03] signal 3\n"]
        with open(path, "ab") as handle:
            handle.write(narrative_line(4))
        # The next line is the new one: nothing from before the restart came twice.
        assert await asyncio.wait_for(tail.stdout.readline(), scaled(10)) == \
            b"[14:30:04] signal 4\n"
    finally:
        tail.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(tail.wait(), scaled(10)) == 0
    assert await tail.stderr.read() == b""


# -- arqon read --cursor ---------------------------------------------------------------------

def arqon_read(daemon, *arguments: str) -> subprocess.CompletedProcess:
    return run_arqon(daemon, "read", "lab:notes", "--cursor", "mine", *arguments)


async def test_read_prints_each_new_message_once_and_again_if_it_could_not_print(
        daemon, connect_peer):
    sender = await connect_peer(daemon.ws_url)
    epoch = await publish(sender, 3)
    first = arqon_read(daemon)
    assert (first.returncode, first.stderr) == (0, "")
    assert [(m["metadata"], m["payload"]) for m in frames(first.stdout)] == [
        ({"seq": n + 1, "epoch": epoch}, {"n": n}) for n in range(3)]
    # Printed as tail --raw prints a frame: one JSON line, sorted keys.
    assert first.stdout.splitlines()[0] == json.dumps(frames(first.stdout)[0], sort_keys=True)
    nothing = arqon_read(daemon)
    assert (nothing.returncode, nothing.stdout, nothing.stderr) == (0, "", "")
    await publish(sender, 3, start=3)
    one = arqon_read(daemon, "--limit", "1")
    assert seqs_and_payloads(frames(one.stdout)) == [(4, 3)]
    # Output that cannot be written is not acknowledged: the next read has it again.
    with open("/dev/full", "w") as full:
        failed = subprocess.run(arqon_command("read", "lab:notes", "--cursor", "mine"),
                                stdout=full, stderr=subprocess.PIPE, text=True,
                                env=arqon_env(daemon), cwd=ROOT, timeout=scaled(30))
    assert (failed.returncode, failed.stderr) == (1, "arqon: cannot print the messages of "
                                                     "lab:notes (No space left on device); "
                                                     "cursor mine stays where it was\n")
    # The cursor is kept by arqond: a kill -9 does not move it either.
    daemon.kill()
    daemon.start()
    again = arqon_read(daemon)
    assert seqs_and_payloads(frames(again.stdout)) == [(5, 4), (6, 5)]
    # Another cursor of the same user is another position.
    other = run_arqon(daemon, "read", "lab:notes", "--cursor", "other", "--limit", "2")
    assert seqs_and_payloads(frames(other.stdout)) == [(1, 0), (2, 1)]


async def test_read_wait_prints_the_first_message_that_arrives_while_it_waits(daemon,
                                                                              connect_peer):
    sender = await connect_peer(daemon.ws_url)
    await publish(sender, 1)
    assert arqon_read(daemon).returncode == 0         # the cursor is past n=0
    empty = arqon_read(daemon, "--wait", "0.2")
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", "")
    commands = metrics_of(daemon)["arqonbus_commands_total"]
    waiting = asyncio.create_task(asyncio.to_thread(arqon_read, daemon, "--wait", "30"))
    while metrics_of(daemon)["arqonbus_commands_total"] == commands:   # its read has come
        await asyncio.sleep(0.05)
    await publish(sender, 1, start=1)
    done = await waiting
    assert (done.returncode, seqs_and_payloads(frames(done.stdout)), done.stderr) == (
        0, [(2, 1)], "")


@pytest.mark.parametrize("arguments, status, error", [
    (("lab:nothing", "--cursor", "c"), 1,
     "cannot read lab:nothing: channel lab:nothing does not exist (NOT_FOUND)"),
    (("lab", "--cursor", "c"), 1,
     "ROOM:CHANNEL must name a room and a channel, such as lab:notes"),
    ((":notes", "--cursor", "c"), 1,
     "ROOM:CHANNEL must name a room and a channel, such as lab:notes"),
    (("science:general", "--cursor", ""), 1, "cannot read science:general: cursor must be a "
     "name of 1 to 128 characters (VALIDATION_ERROR)"),
    (("science:general", "--cursor", "c" * 129), 1, "cannot read science:general: cursor "
     "must be a name of 1 to 128 characters (VALIDATION_ERROR)"),
    (("science:general", "--cursor", "c", "--limit", "0"), 1, "cannot read science:general: "
     "limit must be between 1 and 1000 (VALIDATION_ERROR)"),
    (("science:general", "--cursor", "c", "--wait", "-1"), 1, "--wait must be 0 to 3600 "
     "seconds"),
    (("science:general", "--cursor", "c", "--wait", "nan"), 1, "--wait must be 0 to 3600 "
     "seconds"),
])
def test_read_refuses_bad_arguments_with_what_is_wrong(shared_daemon, arguments, status,
                                                       error):
    daemon = shared_daemon()
    done = run_arqon(daemon, "read", *arguments)
    assert (done.returncode, done.stdout, done.stderr) == (status, "", f"arqon: {error}\n")
    assert http_call(daemon, "GET", "/v1/history?room=lab:nothing").status == 404


def test_read_without_a_cursor_is_a_usage_error(shared_daemon):
    done = run_arqon(shared_daemon(), "read", "lab:notes")
    assert done.returncode == 2 and done.stderr.endswith(
        "arqon read: error: the following arguments are required: --cursor\n")


@pytest.mark.skipif(os.getuid() != 0, reason="runs arqon as another uid")
def test_read_of_another_zgents_inbox_is_refused_and_its_owner_still_reads_it(daemon):
    assert run_arqon(daemon, "zgent", "register", "dreader").returncode == 0
    assert run_arqon(daemon, "send-to", "dreader", '{"secret": "roots"}').returncode == 0
    nobody = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         *arqon_command("read", "dreader:inbox", "--cursor", "peek")],
        capture_output=True, text=True, cwd=ROOT, timeout=scaled(30),
        env={**daemon.env, "ARQONBUS_WS_URL": daemon.ws_url})
    assert (nobody.returncode, nobody.stdout, nobody.stderr) == (
        6, "", "arqon: cannot read dreader:inbox: not allowed to read dreader:inbox (allowed: "
        "the owners of dreader: who registered it, its uids and groups; and admins) "
        "(AUTHORIZATION_ERROR)\n")
    daemon.wait_for_line("not allowed to read dreader:inbox")
    # (send-to only writes the FIFO: the line is there to read once arqond stored it.)
    owner = run_arqon(daemon, "read", "dreader:inbox", "--cursor", "peek", "--wait", "10")
    assert [m["payload"] for m in frames(owner.stdout)] == [{"secret": "roots"}]


# -- the SDK ---------------------------------------------------------------------------------

def on_fixed_ports(make_daemon, config: dict | None = None):
    """A daemon on ports of its own that stay its own across restarts, as a client that
    connects again expects (port 0 would pick new ones)."""
    def start(ports: list[int]):
        ws, telemetry, http = ports
        sections = {**(config or {})}
        sections["server"] = {**sections.get("server", {}), "port": ws,
                              "telemetry_port": telemetry, "http_port": http}
        return make_daemon(sections)
    return on_free_ports(3, start)


async def next_message(client: ArqonBusClient, target: dict = TARGET) -> dict:
    """The next message on the target, past what else comes (a new connection's welcome)."""
    while True:
        frame = await client.recv_json(timeout=scaled(10))
        if (frame.get("room"), frame.get("channel")) == (target["room"], target["channel"]) \
                and frame["type"] == "message":
            return frame


async def test_an_sdk_client_that_reconnects_gets_every_message_after_its_last_one_once(
        make_daemon, connect_peer):
    daemon = on_fixed_ports(make_daemon)
    told: list[tuple[str, dict]] = []
    async with ArqonBusClient(daemon.ws_url, reconnect=True,
                              on_resume=lambda target, resume: told.append((target, resume))
                              ) as client:
        joined = await client.join("lab:notes")
        epoch = joined["stream"]["epoch"]
        assert client.positions == {"lab:notes": Position(0, epoch)}
        sender = await connect_peer(daemon.ws_url)
        await publish(sender, 5)
        assert [(await next_message(client))["payload"]["n"] for _ in range(5)] == \
            [0, 1, 2, 3, 4]
        assert client.positions["lab:notes"] == Position(5, epoch)
        # Its own message moves it too, once acknowledged: arqond never sends it back.
        mine = await client.publish("lab:notes", {"n": "mine"})
        while (await client.recv_json(timeout=scaled(5))).get("id") != mine:
            pass
        assert client.positions["lab:notes"] == Position(6, epoch)
        await publish(sender, 2, start=5)       # not taken by the program before the kill
        daemon.kill()
        daemon.start()
        sender = await connect_peer(daemon.ws_url)
        await publish(sender, 3, start=7)       # while it is away
        got = [(await next_message(client))["payload"]["n"] for _ in range(5)]
        await publish(sender, 2, start=10)      # live
        got += [(await next_message(client))["payload"]["n"] for _ in range(2)]
        assert got == [5, 6, 7, 8, 9, 10, 11]
        with pytest.raises(ArqonBusConnectionError, match="^Timed out waiting for message$"):
            await client.recv_json(timeout=scaled(0.3))
        assert client.positions["lab:notes"] == Position(13, epoch)
    assert told == [("lab:notes", {"recovered": True, "reason": None, "epoch": epoch,
                                   "earliest_seq": 1, "last_seq": 11})]


async def test_an_sdk_client_is_told_when_a_resume_could_not_recover(make_daemon, connect_peer):
    daemon = on_fixed_ports(make_daemon, {"streams": {"durability": "memory"}})
    told: list[tuple[str, dict]] = []
    async with ArqonBusClient(daemon.ws_url, reconnect=True,
                              on_resume=lambda target, resume: told.append((target, resume))
                              ) as client:
        await client.join("lab:notes")
        sender = await connect_peer(daemon.ws_url)
        before = await publish(sender, 1)
        assert (await next_message(client))["metadata"] == {"seq": 1, "epoch": before}
        daemon.kill()           # memory only: the stream's past is gone with it
        daemon.start()
        sender = await connect_peer(daemon.ws_url)
        after = await publish(sender, 1, start=1)
        got = await next_message(client)
        assert (got["payload"], got["metadata"]) == ({"n": 1}, {"seq": 1, "epoch": after})
    resume = {"recovered": False, "reason": f"epoch {before} is gone (the stream's past was "
              f"lost; it is now epoch {after})", "epoch": after, "earliest_seq": 1,
              "last_seq": 1}
    assert told == [("lab:notes", resume)]


async def test_sdk_join_since_resumes_and_refuses_what_cannot_be_resumed(daemon, connect_peer):
    sender = await connect_peer(daemon.ws_url)
    epoch = await publish(sender, 4)
    async with ArqonBusClient(daemon.ws_url) as client:
        data = await client.join("lab:notes", since=(2, epoch))
        assert data["resume"] == client.resumes["lab:notes"] == {
            "recovered": True, "reason": None, "epoch": epoch, "earliest_seq": 1,
            "last_seq": 4}
        assert [(await next_message(client))["payload"]["n"] for _ in range(2)] == [2, 3]
        for since, error in [((-1, epoch), 'since must be {"seq": N, "epoch": "E"} as the '
                              "last message seen carried them in its metadata"),
                             ((1, 7), 'since must be {"seq": N, "epoch": "E"} as the last '
                              "message seen carried them in its metadata")]:
            with pytest.raises(CommandFailed) as refused:
                await client.join("lab:notes", since=since)
            assert str(refused.value) == f"VALIDATION_ERROR: {error}"
        with pytest.raises(CommandFailed) as refused:
            await client.join("*:notes", since=(0, epoch))
        assert str(refused.value) == \
            "VALIDATION_ERROR: since resumes one channel, not a wildcard"
        # Nothing of that moved where it stands.
        assert client.positions == {"lab:notes": Position(4, epoch)}


async def test_without_reconnect_a_closed_connection_is_an_error_and_close_forgets_channels(
        make_daemon):
    daemon = on_fixed_ports(make_daemon)
    client = ArqonBusClient(daemon.ws_url)
    await client.connect()
    await client.join("lab:notes")
    daemon.kill()
    with pytest.raises(ArqonBusConnectionError, match="^Receive failed: "):
        while True:
            await client.recv_json(timeout=scaled(5))
    daemon.start()
    await client.close()
    assert client.positions == {} and client.resumes == {}
    async with client:      # connected again after close: a fresh start, nothing joined
        status = await client.command("status")
        assert status["payload"]["data"]["client"]["subscriptions"] == ["science:general"]
