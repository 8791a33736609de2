"""op.webhook.*: real deliveries to an HTTP receiver on loopback, started by the test. The
rules themselves (every argument at its bound, matching, who may list and remove) are
checked in-process in tests/unit/test_webhooks.py."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.conftest import metrics_of, scaled

FENCE_TIMEOUT = 5.0
# What the tests of delivery need: ordinary clients may register, to the receiver on loopback.
OPEN_TO_LOOPBACK = {"webhooks": {"allow_non_admin": True,
                                 "allowed_destinations": ["http://127.0.0.1:*"]}}


@pytest.fixture
def daemon(make_daemon):
    return make_daemon(OPEN_TO_LOOPBACK)


class Receiver:
    """A minimal HTTP/1.1 server: records each POST (path, headers, JSON body), answers 200."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: asyncio.Queue[dict] = asyncio.Queue()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> "Receiver":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def url(self, path: str) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode().split()
        headers = {}
        while (line := (await reader.readline()).decode().rstrip("\r\n")):
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        body = await reader.readexactly(int(headers["content-length"]))
        await self.requests.put({"method": request_line[0], "path": request_line[1],
                                 "headers": headers, "body": orjson.loads(body)})
        writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    async def next(self) -> dict:
        return await asyncio.wait_for(self.requests.get(), scaled(FENCE_TIMEOUT))


async def test_message_is_posted_to_matching_rule(daemon, connect_peer):
    async with Receiver() as receiver:
        owner = await connect_peer(daemon.ws_url)
        sender = await connect_peer(daemon.ws_url)
        response = await owner.command("op.webhook.register", {
            "url": receiver.url("/hook?x=1"), "room": "science", "channel": "general",
            "headers": {"X-Token": "abc"}, "timeout_seconds": 1.5})
        rule = response["payload"]["data"]
        assert rule["rule_id"].startswith("wh_") and rule["timeout_seconds"] == 1.5
        assert (rule["room"], rule["channel"]) == ("science", "general")
        await sender.send({"type": "message", "id": "arq_1_1_abcdef",
                           "payload": {"content": "hi"}})
        await sender.recv_type("message_response")
        await owner.recv_type("message")  # the owner is a subscriber too
        posted = await receiver.next()
        assert (posted["method"], posted["path"]) == ("POST", "/hook?x=1")
        assert posted["headers"]["content-type"] == "application/json"
        assert posted["headers"]["x-token"] == "abc"
        body = posted["body"]
        assert body["rule_version"] == "v1" and body["sender_client_id"] == sender.id
        envelope = body["envelope"]
        assert (envelope["id"], envelope["payload"], envelope["room"], envelope["channel"]) == (
            "arq_1_1_abcdef", {"content": "hi"}, "science", "general")
        # A message elsewhere does not match; a wildcard rule (no room/channel) sees it.
        await sender.command("join_channel", {"room": "other:place"})
        await owner.command("op.webhook.register", {"url": receiver.url("/all")})
        await sender.send({"type": "message", "room": "other:place", "payload": {"n": 2}})
        await sender.recv_type("message_response")
        posted = await receiver.next()
        assert posted["path"] == "/all" and posted["body"]["envelope"]["payload"] == {"n": 2}
        listed = (await owner.command("op.webhook.list"))["payload"]["data"]
        assert listed["count"] == 2
        assert {r["owner_client_id"] for r in listed["rules"]} == {owner.id}
        assert "headers" not in listed["rules"][0]  # header values may be credentials
        assert (await sender.command("op.webhook.list"))["payload"]["data"]["count"] == 0


async def test_unregister_and_disconnect_remove_rules(daemon, connect_peer):
    async with Receiver() as receiver:
        owner = await connect_peer(daemon.ws_url)
        sender = await connect_peer(daemon.ws_url)
        fence = await connect_peer(daemon.ws_url)
        rule = (await owner.command("op.webhook.register",
                                    {"url": receiver.url("/gone")}))["payload"]["data"]
        removed = await owner.command("op.webhook.unregister", {"rule_id": rule["rule_id"]})
        assert removed["payload"]["data"] == {"rule_id": rule["rule_id"], "removed": True}
        await owner.command("op.webhook.register", {"url": receiver.url("/owner-left")})
        await owner.close()
        await fence.command("op.webhook.register", {"url": receiver.url("/fence")})
        await sender.send({"type": "message", "payload": {"after": "cleanup"}})
        posted = await receiver.next()
        assert posted["path"] == "/fence"  # neither removed rule delivered anything
        assert receiver.requests.empty()


async def test_failed_delivery_is_logged_and_bus_unaffected(daemon, connect_peer,
                                                            refused_port):
    dead_port = refused_port
    async with Receiver(status=500) as receiver:
        owner = await connect_peer(daemon.ws_url)
        other = await connect_peer(daemon.ws_url)
        await owner.command("op.webhook.register", {"url": f"http://127.0.0.1:{dead_port}/x"})
        await owner.command("op.webhook.register", {"url": receiver.url("/err")})
        await owner.send({"type": "message", "payload": {"k": 1}})
        assert (await other.recv_type("message"))["payload"] == {"k": 1}
        await owner.recv_type("message_response")
        assert (await receiver.next())["path"] == "/err"
        daemon.wait_for_line(f"webhook delivery to http://127.0.0.1:{dead_port}/x failed")
        daemon.wait_for_line("failed: HTTP status 500")
        await owner.send({"type": "message", "payload": {"k": 2}})
        assert (await other.recv_type("message"))["payload"] == {"k": 2}


async def test_full_delivery_queue_drops_and_logs_while_the_bus_delivers_all(daemon, connect_peer):
    release = asyncio.Event()
    hung = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)
        await release.wait()
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        owner = await connect_peer(daemon.ws_url)
        other = await connect_peer(daemon.ws_url)
        await owner.command("op.webhook.register", {"url": f"http://127.0.0.1:{port}/slow",
                                                    "timeout_seconds": 30})
        # 4 deliveries hang in the workers, 1024 wait in the queue, the rest are dropped.
        count = 1100
        for n in range(count):
            await owner.send({"type": "message", "payload": {"n": n}})
        for n in range(count):
            assert (await owner.recv_type("message_response"))["payload"] == {"n": n}
            assert (await other.recv_type("message"))["payload"] == {"n": n}
        line = daemon.wait_for_line("webhook queue full (webhooks.queue_size 1024): delivery "
                                    "dropped, 64 so far")
        assert "RULE_ID=wh_" in line
    finally:
        release.set()
        server.close()


async def test_only_admins_register_webhooks_unless_the_configuration_says_otherwise(
        make_daemon, connect_peer):
    daemon = make_daemon({"webhooks": {"allowed_destinations": ["http://127.0.0.1:*"]}})
    tcp_client = await connect_peer(daemon.ws_url)  # root over TCP: a local user, no admin
    refused = await tcp_client.command("op.webhook.register", {"url": "http://127.0.0.1:9/"})
    assert (refused["status"], refused["error_code"]) == ("error", "AUTHORIZATION_ERROR")
    assert refused["error"] == "not allowed to use webhooks (allowed: admins)"
    line = daemon.wait_for_line("not allowed to use webhooks (allowed: admins)")
    assert f"CLIENT_ID={tcp_client.id} PRINCIPAL=uid:0 UID=0" in line
    admin = await connect_peer(daemon.control_path)  # root on the control socket: admin
    ok = await admin.command("op.webhook.register", {"url": "http://127.0.0.1:9/"})
    assert ok["status"] == "success"
    daemon.wait_for_line("webhook " + ok["payload"]["data"]["rule_id"] + " registered to "
                         "http://127.0.0.1:9/")


async def test_anonymous_clients_never_register_webhooks(make_daemon, connect_peer):
    daemon = make_daemon({"auth": {"loopback_identity": False}, **OPEN_TO_LOOPBACK})
    anonymous = await connect_peer(daemon.ws_url)
    refused = await anonymous.command("op.webhook.register", {"url": "http://127.0.0.1:9/"})
    assert refused["error"] == ("not allowed to use webhooks (allowed: identified principals "
                                "(not anonymous))")


@pytest.mark.parametrize("allowed, url, needle", [
    ([], "https://hooks.example.com/", "https://hooks.example.com:443 is not in "
     "webhooks.allowed_destinations; an administrator must list it"),
    (["http://127.0.0.1:8000"], "http://127.0.0.1:8001/", "http://127.0.0.1:8001 is not in "
     "webhooks.allowed_destinations"),
    (["http://*:*"], "http://127.0.0.1:8000/", "http://127.0.0.1:8000 is a loopback, private "
     "or link-local destination; it must be listed exactly (no wildcard) or by network"),
    (["http://*"], "http://169.254.169.254/latest/meta-data", "http://169.254.169.254:80 is a "
     "loopback, private or link-local destination"),
    (["http://*:*"], "http://localhost:8000/", "http://localhost:8000 is a loopback"),
])
async def test_webhook_destinations_must_be_listed_and_never_reach_inside_by_wildcard(
        make_daemon, connect_peer, allowed, url, needle):
    daemon = make_daemon({"webhooks": {"allow_non_admin": True,
                                       "allowed_destinations": allowed}})
    peer = await connect_peer(daemon.ws_url)
    refused = await peer.command("op.webhook.register", {"url": url})
    assert (refused["error_code"], refused["error"]) == ("AUTHORIZATION_ERROR", needle) \
        or needle in refused["error"], refused
    assert (await peer.command("op.webhook.list"))["payload"]["data"]["count"] == 0
    daemon.wait_for_line("webhook refused: " + needle)


async def test_a_webhook_pointing_at_arqond_itself_does_not_loop(make_daemon, connect_peer):
    daemon = make_daemon({"webhooks": {"allow_non_admin": True, "allowed_destinations": [
        "http://127.0.0.1:*"]}})
    peer = await connect_peer(daemon.ws_url)
    listener = await connect_peer(daemon.ws_url)
    await listener.command("join_channel", {"room": "loop:ch"})
    await peer.command("join_channel", {"room": "loop:ch"})
    await peer.command("op.webhook.register", {
        "url": f"{daemon.http_url}/v1/publish?room=loop:ch", "room": "loop", "channel": "ch"})
    await peer.send({"type": "message", "room": "loop:ch", "payload": {"n": 1}})
    # The message, then the copy the webhook published back: once, never again.
    assert (await listener.recv_type("message"))["payload"] == {"n": 1}
    echoed = await listener.recv_type("message")
    assert echoed["payload"]["envelope"]["payload"] == {"n": 1}
    await listener.expect_silence(0.5)
    metrics = metrics_of(daemon)
    assert metrics["arqonbus_webhook_loops_total"] == 1
    assert metrics["arqonbus_webhook_delivered_total"] == 1
