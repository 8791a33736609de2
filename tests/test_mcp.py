"""arqon mcp against the real daemon, driven by the MCP SDK's own client: the tools and
resources an agent sees, each tool's success and refusal, update notifications, two agents
asking and answering through call, the narrative reaching a WebSocket client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, metrics_of, run_arqon
from tests.mcp_client import mcp_agent, mcp_environment

pytestmark = pytest.mark.filterwarnings(  # the handshake protocol versions runtimes speak
    "ignore:resources/subscribe is removed as of 2026-07-28")

ZGENT_TOOLS = {"recv", "narrate", "requests", "reply"}
BUS_TOOLS = {"publish", "read", "send", "call", "pane", "zgents", "channels"}


async def test_an_agent_sees_every_tool_with_a_described_schema_and_the_resources(daemon):
    async with mcp_agent(daemon, "--zgent", "alpha") as alpha:
        assert "client_type=human peer=unix" in daemon.wait_for_line("client connected")
        tools = {tool.name: tool for tool in (await alpha.session.list_tools()).tools}
        assert set(tools) == BUS_TOOLS | ZGENT_TOOLS
        for tool in tools.values():
            assert "Example: {" in tool.description, tool.name
            assert tool.input_schema["type"] == "object"
            assert tool.input_schema["additionalProperties"] is False
        assert tools["publish"].input_schema["required"] == ["room", "channel", "payload"]
        listed = {r.uri for r in (await alpha.session.list_resources()).resources}
        assert {"arqon://zgents", "arqon://mailbox", "arqon://requests",
                "arqon://channels/science/general"} <= listed
        templates = (await alpha.session.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["arqon://channels/{room}/{channel}"]
    async with mcp_agent(daemon) as anonymous:  # no Zgent: no mailbox, narrative, requests
        tools = {tool.name for tool in (await anonymous.session.list_tools()).tools}
        assert tools == BUS_TOOLS
        assert await anonymous.refused("recv") == (
            "this agent has no Zgent of its own: start arqon mcp with --zgent NAME to have a "
            "mailbox, a narrative and requests to answer")


async def test_read_returns_each_message_once_and_its_cursor_moves_past_them(daemon,
                                                                             connect_peer):
    async with mcp_agent(daemon, "--zgent", "alpha") as alpha:
        published = await alpha.tool("publish", room="team", channel="status",
                                     payload={"build": "green"})
        assert published["room"] == "team" and published["published"]
        peer = await connect_peer(daemon.ws_url)
        for n in range(3):
            await peer.send({"type": "message", "room": "team:status", "payload": {"n": n}})
            await peer.recv_type("message_response")
        first = await alpha.tool("read", room="team", channel="status", limit=2)
        assert [m["payload"] for m in first["messages"]] == [{"n": 1}, {"n": 2}]
        assert (await alpha.tool("read", room="team", channel="status"))["messages"] == []
        await peer.send({"type": "message", "room": "team:status", "payload": {"n": 3}})
        await peer.recv_type("message_response")
        await alpha.tool("publish", room="team", channel="status", payload={"n": 4})
        more = await alpha.tool("read", room="team", channel="status", limit=1)
        assert [m["payload"] for m in more["messages"]] == [{"n": 3}]
        rest = await alpha.tool("read", room="team", channel="status")
        assert [m["payload"] for m in rest["messages"]] == [{"n": 4}]
        assert "missed" not in rest


async def test_read_with_wait_returns_the_message_that_arrives_while_it_waits(daemon,
                                                                             connect_peer):
    async with mcp_agent(daemon) as agent:
        await agent.tool("publish", room="team", channel="status", payload="before")
        await agent.tool("read", room="team", channel="status")
        commands = metrics_of(daemon)["arqonbus_commands_total"]
        waiting = asyncio.create_task(agent.tool("read", room="team", channel="status",
                                                 wait=30))
        # Until its read waits in arqond: after joining the channel and acknowledging
        # "before", its third command.
        while metrics_of(daemon)["arqonbus_commands_total"] < commands + 3:
            await asyncio.sleep(0.05)
        peer = await connect_peer(daemon.ws_url)
        await peer.send({"type": "message", "room": "team:status", "payload": "during"})
        answer = await asyncio.wait_for(waiting, 30)
        assert [m["payload"] for m in answer["messages"]] == ["during"]


async def daemon_sees_a_member(daemon, agent, room: str, channel: str) -> None:
    """Until the agent's connection has joined room:channel (its wait has begun)."""
    for _ in range(200):
        channels = (await agent.tool("channels", room=room))["channels"]
        if any(c["channel"] == channel and c["participants"] for c in channels):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nobody joined {room}:{channel}")


async def test_bad_arguments_are_tool_errors_that_name_the_argument(daemon):
    async with mcp_agent(daemon) as agent:
        assert await agent.refused("publish", room="team", channel="status") == (
            "publish: bad arguments: 'payload' is a required property")
        assert await agent.refused("publish", room="te am", channel="x", payload=1) == (
            "publish: bad arguments: room: 'te am' does not match "
            "'^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'")
        assert await agent.refused("read", room="team", channel="status", limit=0) == (
            "read: bad arguments: limit: 0 is less than the minimum of 1")
        assert await agent.refused("nosuch") == (
            "no tool 'nosuch'; the tools are publish, read, send, call, pane, zgents, "
            "channels")


async def test_send_puts_a_message_in_the_inbox_and_recv_takes_it_once(daemon):
    async with mcp_agent(daemon, "--zgent", "alpha") as alpha, \
            mcp_agent(daemon, "--zgent", "beta") as beta:
        sent = await alpha.tool("send", to="beta", message={"text": "PR 42 is ready"})
        assert sent["message"] == {"from": "alpha", "text": "PR 42 is ready"}
        await alpha.tool("send", to="beta", message="and a plain line")
        first = await beta.tool("recv", wait=10)
        assert first == {"message": {"from": "alpha", "text": "PR 42 is ready"}}
        second = await beta.tool("recv", wait=10)
        assert second == {"message": {"from": "alpha", "text": "and a plain line"}}
        assert await beta.tool("recv") == {"message": None}
        assert await alpha.tool("recv") == {"message": None}  # nothing went to the sender
        gone = await alpha.refused("send", to="nobody-here", message="hi")
        assert gone == f"{daemon.moo_dir}/nobody-here-inbox does not exist (is nobody-here " \
                      "registered?)"


async def test_two_agents_ask_and_answer_through_call(daemon):
    async with mcp_agent(daemon, "--zgent", "alpha") as alpha, \
            mcp_agent(daemon, "--zgent", "beta", "--capability", "answer:questions") as beta:
        await beta.session.subscribe_resource("arqon://requests")
        asking = asyncio.create_task(alpha.tool("call", zgent="beta", method="ask",
                                                params={"question": "what is 6 x 7?"},
                                                timeout=30))
        assert await beta.update() == "arqon://requests"
        requests = (await beta.tool("requests", wait=10))["requests"]
        assert [(r["method"], r["params"]) for r in requests] == [
            ("ask", {"question": "what is 6 x 7?"})]
        assert (await beta.tool("requests"))["requests"] == []  # each is taken once
        assert await beta.tool("reply", id=requests[0]["id"], result={"answer": 42}) == {
            "replied": requests[0]["id"]}
        assert await asyncio.wait_for(asking, 30) == {"result": {"answer": 42}}
        # An error answer reaches the caller as a tool error with the code and the data.
        asking = asyncio.create_task(alpha.refused("call", zgent="beta", method="ask",
                                                   params={}, timeout=30))
        request = (await beta.tool("requests", wait=10))["requests"][0]
        await beta.tool("reply", id=request["id"],
                        error={"code": -32602, "message": "question is required",
                               "data": {"need": "question"}})
        assert await asyncio.wait_for(asking, 30) == (
            "beta ask: question is required (-32602)\n"
            '{"code":-32602,"message":"question is required","data":{"need":"question"}}')
        assert await beta.refused("reply", id=request["id"], result=1) == (
            f"no request {request['id']!r} waits for an answer from beta (answered already, "
            "or its caller stopped waiting: arqond answers for the agent after 30s)")


async def test_an_agent_looks_at_and_types_into_a_zgents_pane_its_handler_relays(
        daemon, tmux_server):
    tmux = tmux_server()
    tmux("new-session", "-d", "-s", "alpha", "-n", "main", "-x", "60", "-y", "8", "cat")
    env = tmux.env_for(mcp_environment(daemon))
    async with mcp_agent(daemon, "--zgent", "alpha", "--relay-pane", env=env) as alpha, \
            mcp_agent(daemon, "--zgent", "beta") as beta:
        assert await beta.tool("pane", zgent="alpha", text="hello", enter=True) == {
            "result": {"pane": "alpha:main.0"}}
        tmux.shows("alpha:main.0", "hello\nhello")     # the tty's echo, then cat's
        looked = await alpha.tool("pane", zgent="alpha")
        assert looked == {"result": {"pane": "alpha:main.0", "text": "hello\nhello",
                                     "truncated": False}}
        # Pane requests are carried out for the agent, never handed to it.
        assert (await alpha.tool("requests"))["requests"] == []
        assert await beta.refused("pane", zgent="beta") == (
            "beta arqon.pane.capture: beta's handler does not relay its tmux pane (it was "
            "started without --relay-pane) (-32001)\n"
            '{"code":-32001,"message":"beta\'s handler does not relay its tmux pane (it was '
            'started without --relay-pane)"}')
        assert await beta.refused("pane", zgent="alpha", lines=5, text="x") == \
            "pane: lines is for looking at the pane, not with text, keys or enter"
    assert run_arqon(daemon, "mcp", "--relay-pane").stderr == \
        "arqon: --capability and --relay-pane need --zgent: they are a Zgent's\n"


async def test_call_names_the_zgent_that_is_not_serving_and_a_missing_one(daemon):
    run_arqon(daemon, "zgent", "register", "lonely")
    async with mcp_agent(daemon) as agent:
        assert await agent.refused("call", zgent="lonely", method="ping") == (
            "lonely ping: lonely is not serving: no handler attached (arqon serve lonely) "
            "(-32001)\n"
            '{"code":-32001,"message":"lonely is not serving: no handler attached '
            '(arqon serve lonely)"}')
        assert await agent.refused("call", zgent="ghost", method="ping") == (
            f"no socket {daemon.moo_dir}/ghost.sock: the Zgent is not registered (arqon "
            "zgent list), or arqond uses another MOO dir (--config)")


async def test_zgents_lists_the_registry_by_capability_and_channels_their_counts(daemon):
    run_arqon(daemon, "zgent", "register", "dreader", "--capability", "query:volume")
    async with mcp_agent(daemon, "--zgent", "alpha", "--capability", "ask:questions") as alpha:
        everyone = (await alpha.tool("zgents"))["zgents"]
        assert set(everyone) == {"dreader", "alpha"}
        assert everyone["alpha"]["capabilities"] == ["ask:questions"]
        assert everyone["alpha"]["status"] == "active"
        found = await alpha.tool("zgents", capability="query:volume")
        assert list(found["zgents"]) == ["dreader"]
        await alpha.tool("publish", room="team", channel="status", payload=1)
        await alpha.tool("publish", room="team", channel="status", payload=2)
        listed = await alpha.tool("channels", room="team")
        assert listed == {"total": 1, "channels": [
            {"room": "team", "channel": "status", "participants": 0, "messages": 2,
             "last_activity": listed["channels"][0]["last_activity"]}]}
        assert await alpha.refused("channels", room="nowhere") == (
            "list_channels: room nowhere does not exist (NOT_FOUND)")


async def test_narrate_appends_a_schema_line_that_reaches_a_websocket_subscriber(
        daemon, connect_peer):
    peer = await connect_peer(daemon.ws_url)
    await peer.command("join_channel", {"room": "alpha:narrative"})
    async with mcp_agent(daemon, "--zgent", "alpha") as alpha:
        done = await alpha.tool("narrate", content="tests pass; opening the PR", tags=["ci"])
        path = daemon.log_dir / "alpha-narrative.jsonl"
        assert done == {"appended": str(path), "channel": "alpha:narrative"}
        line = json.loads(path.read_text())
        assert {k: line[k] for k in ("from", "type", "content", "tags")} == {
            "from": "alpha", "type": "narrative", "content": "tests pass; opening the PR",
            "tags": ["ci"]}
        event = await peer.recv_type("event")
        assert event["sender"] == "alpha" and event["payload"] == line
        assert "malformed" not in event.get("metadata", {})


async def test_subscribers_are_told_when_a_channel_or_the_mailbox_gets_something(
        daemon, connect_peer):
    async with mcp_agent(daemon, "--zgent", "alpha") as alpha:
        await alpha.tool("publish", room="team", channel="status", payload="first")
        await alpha.session.subscribe_resource("arqon://channels/team/status")
        await alpha.session.subscribe_resource("arqon://mailbox")
        peer = await connect_peer(daemon.ws_url)
        await peer.send({"type": "message", "room": "team:status", "payload": "news"})
        assert await alpha.update() == "arqon://channels/team/status"
        read = await alpha.session.read_resource("arqon://channels/team/status")
        history = json.loads(read.contents[0].text)["history"]
        assert [m["payload"] for m in history] == ["first", "news"]
        run_arqon(daemon, "send-to", "alpha", '{"from": "ops", "text": "wake up"}')
        assert await alpha.update() == "arqon://mailbox"
        mailbox = json.loads((await alpha.session.read_resource("arqon://mailbox"))
                             .contents[0].text)
        assert [m["payload"] for m in mailbox["history"]] == [{"from": "ops",
                                                               "text": "wake up"}]
        assert await alpha.tool("recv") == {"message": {"from": "ops", "text": "wake up"}}
        with pytest.raises(Exception, match="arqon://zgents sends no updates"):
            await alpha.session.subscribe_resource("arqon://zgents")


async def test_requests_past_max_requests_are_refused_busy_at_once(daemon):
    async with mcp_agent(daemon, "--zgent", "alpha", "--max-requests", "1") as alpha:
        first = asyncio.create_task(asyncio.to_thread(
            run_arqon, daemon, "call", "alpha", "ask", '{"n": 1}'))
        assert len((await alpha.tool("requests", wait=10))["requests"]) == 1
        second = await asyncio.to_thread(run_arqon, daemon, "call", "alpha", "ask", '{"n": 2}')
        assert second.returncode == 6
        assert second.stderr == ("arqon: alpha ask: alpha's agent has 1 requests waiting; try "
                                 "again later (-32004)\n")
        assert "alpha: 1 requests wait for the agent (--max-requests); refusing ask" in \
            alpha.stderr.read_text()
        request = (await alpha.session.read_resource("arqon://requests")).contents[0].text
        [pending] = json.loads(request)["requests"]
        assert pending["params"] == {"n": 1}
        await alpha.tool("reply", id=pending["id"], result="one")
        assert (await first).stdout == '"one"\n'


@pytest.mark.parametrize("ending", ["stdin closes", "SIGTERM"])
async def test_it_leaves_unregistering_what_it_registered_and_no_socket_behind(daemon, ending):
    socket_path, inbox = daemon.moo_dir / "alpha.sock", daemon.moo_dir / "alpha-inbox"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "arqond.cli", "mcp", "--zgent", "alpha",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=mcp_environment(daemon))
    line = await asyncio.wait_for(process.stderr.readline(), 30)
    assert line == b"arqon: registered Zgent alpha\n"
    assert (await process.stderr.readline()) == b"arqon: serving Zgent alpha for the agent\n"
    assert socket_path.exists() and inbox.exists()
    if ending == "SIGTERM":
        process.terminate()
    else:
        process.stdin.close()
    assert await asyncio.wait_for(process.wait(), 30) == 0
    assert (await process.stderr.read()).decode().startswith(
        "arqon: unregistered Zgent alpha\narqon: mcp: ")
    assert not socket_path.exists() and not inbox.exists()
    registry = json.loads(run_arqon(daemon, "zgent", "list").stdout)["zgents"]
    assert registry["alpha"]["status"] == "offline"


async def test_it_leaves_a_zgent_it_found_registered_as_it_was(daemon):
    run_arqon(daemon, "zgent", "register", "dreader", "--capability", "query:volume")
    async with mcp_agent(daemon, "--zgent", "dreader", "--capability", "other") as dreader:
        entry = (await dreader.tool("zgents"))["zgents"]["dreader"]
        assert entry["capabilities"] == ["query:volume"]  # its own, not the agent's
        assert dreader.stderr.read_text().startswith(
            "arqon: Zgent dreader is registered already: it keeps its own capabilities, not "
            "--capability's\narqon: serving Zgent dreader for the agent\n")
    registry = json.loads(run_arqon(daemon, "zgent", "list").stdout)["zgents"]
    assert registry["dreader"]["status"] == "active"
    assert (daemon.moo_dir / "dreader.sock").exists()
    result = run_arqon(daemon, "call", "dreader", "ask")
    assert result.stderr == "arqon: dreader ask: dreader is not serving: no handler attached " \
                            "(arqon serve dreader) (-32001)\n"


async def test_a_zgent_that_already_has_a_handler_is_refused_at_start(daemon):
    async with mcp_agent(daemon, "--zgent", "alpha"):
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "arqond.cli", "mcp", "--zgent", "alpha",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=mcp_environment(daemon))
        out, err = await asyncio.wait_for(second.communicate(), 30)
        assert (second.returncode, out) == (6, b"")
        assert err.decode().startswith("arqon: cannot serve alpha: alpha already has a handler")


async def test_after_arqond_restarts_the_agent_is_on_the_bus_and_serving_again(daemon,
                                                                              connect_peer):
    async with mcp_agent(daemon, "--zgent", "alpha") as alpha:
        await alpha.tool("publish", room="team", channel="status", payload="before")
        await alpha.session.subscribe_resource("arqon://channels/team/status")
        daemon.stop()
        daemon.start()
        log = alpha.stderr.read_text
        for _ in range(400):  # until both connections are back (they log it)
            if log().count("serving Zgent alpha") == 2 and "arqond again" in log():
                break
            await asyncio.sleep(0.05)
        asking = asyncio.create_task(asyncio.to_thread(run_arqon, daemon, "call", "alpha",
                                                       "ask", '{"again": true}'))
        [request] = (await alpha.tool("requests", wait=20))["requests"]
        await alpha.tool("reply", id=request["id"], result="here")
        assert (await asking).stdout == '"here"\n'
        peer = await connect_peer(daemon.ws_url)
        await peer.command("join_channel", {"room": "team:status"})  # arqond forgot it
        await daemon_sees_a_member(daemon, alpha, "team", "status")
        await peer.send({"type": "message", "room": "team:status", "payload": "after"})
        assert await alpha.update() == "arqon://channels/team/status"
    assert "arqon: arqond closed the bus connection; attaching again in 0.5s\n" in log()
    assert "arqon: connected to arqond again\n" in log()


async def test_each_tool_refuses_bad_input_with_a_clear_text(daemon):
    async with mcp_agent(daemon, "--zgent", "alpha") as alpha:
        assert await alpha.refused("zgents", capability=5) == (
            "zgents: bad arguments: capability: 5 is not of type 'string'")
        assert await alpha.refused("narrate", tags=["x"]) == (
            "narrate: bad arguments: 'content' is a required property")
        assert await alpha.refused("recv", wait=3601) == (
            "recv: bad arguments: wait: 3601 is greater than the maximum of 3600")
        assert await alpha.refused("requests", wait=-1) == (
            "requests: bad arguments: wait: -1 is less than the minimum of 0")
        assert await alpha.refused("call", zgent="alpha", method="") == (
            "call: bad arguments: method: '' should be non-empty")
        assert await alpha.refused("reply", id="r-1", result=1, error={"message": "no"}) == (
            "reply: give result or error, not both")
        assert await alpha.refused("reply", id="r-1", error={"code": -1}) == (
            "reply: bad arguments: error: 'message' is a required property")
        assert await alpha.refused("send", to="alpha", message=[1]) == (
            "send: bad arguments: message: [1] is not of type 'object', 'string'")
        assert await alpha.tool("recv") == {"message": None}  # nothing was sent meanwhile


async def test_read_says_when_more_came_than_the_channel_keeps_between_two_reads(
        make_daemon):
    daemon = make_daemon({"streams": {"max_messages": 3}})
    async with mcp_agent(daemon) as agent:
        for n in range(2):
            await agent.tool("publish", room="team", channel="status", payload=n)
        assert [m["payload"] for m in
                (await agent.tool("read", room="team", channel="status"))["messages"]] == [0, 1]
        for n in range(2, 6):
            await agent.tool("publish", room="team", channel="status", payload=n)
        late = await agent.tool("read", room="team", channel="status")
        assert [m["payload"] for m in late["messages"]] == [3, 4, 5]
        assert late["missed"] == ("some messages since your last read are gone: seq 3 is no "
                                  "longer kept (retention); the earliest kept is 4")
        assert (await agent.tool("read", room="team", channel="status"))["messages"] == []


async def test_an_agent_that_starts_again_reads_on_where_it_left_off(daemon, connect_peer):
    peer = await connect_peer(daemon.ws_url)

    async def publish(*payloads: int) -> None:
        for n in payloads:
            await peer.send({"type": "message", "room": "team:status", "payload": n})
            await peer.recv_type("message_response")

    def read(messages: dict) -> list:
        return [m["payload"] for m in messages["messages"]]

    await publish(0, 1, 2)
    async with mcp_agent(daemon, "--zgent", "alpha") as alpha:
        assert read(await alpha.tool("read", room="team", channel="status", limit=2)) == [1, 2]
    await publish(3, 4)
    daemon.kill()       # the cursor is arqond's, kept in its store
    daemon.start()
    peer = await connect_peer(daemon.ws_url)
    await publish(5)
    async with mcp_agent(daemon, "--zgent", "alpha") as again:
        first = await again.tool("read", room="team", channel="status")
        assert read(first) == [3, 4, 5] and "missed" not in first
    # Another cursor has a place of its own: the first read, the most recent.
    async with mcp_agent(daemon, "--cursor", "reviewer") as other:
        assert read(await other.tool("read", room="team", channel="status", limit=2)) == [4, 5]


def test_a_bad_cursor_name_is_refused_before_anything_starts(daemon):
    refused = subprocess.run([sys.executable, "-m", "arqond.cli", "mcp", "--cursor", ""],
                             capture_output=True, text=True, env=mcp_environment(daemon),
                             cwd=ROOT, timeout=30, stdin=subprocess.DEVNULL)
    assert (refused.returncode, refused.stdout, refused.stderr) == (
        1, "", "arqon: --cursor must be a name of 1 to 128 characters\n")


def test_without_the_mcp_sdk_it_says_which_extra_to_install(daemon):
    hidden = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['mcp'] = None\n"
         "from arqond.cli import main; sys.exit(main(['mcp']))"],
        capture_output=True, text=True, env=mcp_environment(daemon), cwd=ROOT, timeout=30)
    assert (hidden.returncode, hidden.stdout) == (1, "")
    assert hidden.stderr == "arqon: arqon mcp needs the MCP SDK: pip install 'arqond[mcp]'\n"
