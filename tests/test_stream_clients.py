"""Durable streams from the clients' side, against the real daemon: /v1/stream resuming
(since, epoch, Last-Event-ID; NDJSON and server-sent events), a channel's own retention,
``arqon tail --since``, ``arqon read --cursor``, and the SDK resuming after arqond was
killed."""

from __future__ import annotations

import asyncio
import os
import signal

import orjson
import pytest

from tests.conftest import http_call, metrics_of, scaled

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

async def test_a_channel_created_with_its_own_retention_keeps_it_across_a_restart(
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
    daemon.kill()
    daemon.start()
    peer = await connect_peer(daemon.ws_url)
    info = (await peer.command("channel_info", TARGET))["payload"]["data"]["stream"]
    assert info == {"epoch": epoch, "first_seq": 3, "last_seq": 5, "retention": kept}
    await publish(peer, 2, start=5)
    info = (await peer.command("channel_info", TARGET))["payload"]["data"]["stream"]
    assert (info["first_seq"], info["last_seq"]) == (5, 7)
