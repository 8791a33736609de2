"""Zgents across the nodes of a cluster: the seed's request-response (section 5.2) between a
Zgent on one node and one on another, over the FIFO, the socket, arqon call and send-to; the
cluster's registry in each registry.json; no responder; a node killed (real nats-server,
real arqond nodes, real arqon serve, socat and jq)."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import eventually, run_arqon, sh
from tests.nats_harness import cluster_config, nats_server  # noqa: F401
from tests.test_call_and_serve import DREADER_HANDLER, SEED_PARAMS, SEED_RESULT, socat

pytestmark = pytest.mark.timeout(120)


def registry_of(node) -> dict:
    return orjson.loads((node.moo_dir / "registry.json").read_text())["zgents"]


async def listed(daemon, name: str, **expected) -> dict | None:
    """``name``'s entry in ``daemon``'s registry.json once it has ``expected``."""
    async def check():
        entry = registry_of(daemon).get(name)
        return entry if entry is not None and all(entry.get(k) == v
                                                  for k, v in expected.items()) else None
    return await eventually(check, 15)


@pytest.fixture
def two_nodes(make_daemon, nats_server):
    """Node zb serves DReader, node za has ParseClipmate; each knows the other's Zgent."""
    za = make_daemon({**cluster_config(nats_server, "za"), "moo": {"stale_after": 3},
                      "zgents": {"parseclipmate": {}}}, name="za")
    zb = make_daemon({**cluster_config(nats_server, "zb"),
                      "zgents": {"dreader": {"name": "DReader"}}}, name="zb")
    return za, zb


async def test_the_seeds_request_response_runs_between_zgents_of_two_nodes(two_nodes,
                                                                            serving):
    za, zb = two_nodes
    serving(zb, "dreader", "--exec", DREADER_HANDLER)
    entry = await listed(za, "dreader", node="zb", status="active")
    assert entry is not None, registry_of(za)
    assert (entry["name"], entry["inbox"], entry["socket"]) == \
        ("DReader", f"{za.moo_dir}/dreader-inbox", f"{za.moo_dir}/dreader.sock")
    assert await listed(zb, "parseclipmate", node="za") is not None
    # The seed's jq query over registry.json, on the node that does not serve DReader (no
    # status: ParseClipmate, served by nobody, goes stale after za's 3 s).
    where = sh(f"jq -r '.zgents | to_entries[] | \"\\(.key) \\(.value.node)\"' "
               f"{za.moo_dir}/registry.json")
    assert where.stdout.splitlines() == ["dreader zb", "parseclipmate za"]

    # Via named pipes: ParseClipmate (on za) writes the query into DReader's inbox on za,
    # naming its own inbox; DReader answers on zb; the answer is in ParseClipmate's mailbox.
    query = orjson.dumps({"id": "q-456", "method": "query", "params": SEED_PARAMS,
                          "replyTo": "parseclipmate"}).decode()
    assert sh(f"echo '{query}' > {za.moo_dir}/dreader-inbox").returncode == 0
    got = run_arqon(za, "recv", "parseclipmate", "--wait", "10")
    assert got.returncode == 0, got.stderr
    assert orjson.loads(got.stdout) == {"jsonrpc": "2.0", "id": "q-456", "result": SEED_RESULT}
    # Via the socket on za, and arqon call on za.
    line = orjson.dumps({"id": "q-7", "method": "query", "params": SEED_PARAMS}).decode()
    assert socat(za, line) == {"jsonrpc": "2.0", "id": "q-7", "result": SEED_RESULT}
    called = run_arqon(za, "call", "dreader", "query", orjson.dumps(SEED_PARAMS).decode())
    assert (called.returncode, called.stdout, called.stderr) == (
        0, orjson.dumps(SEED_RESULT).decode() + "\n", "")
    # arqon send-to on za: the message is in DReader's mailbox on zb.
    sent = run_arqon(za, "send-to", "dreader", '{"note": "from za"}')
    assert sent.returncode == 0, sent.stderr
    kept = run_arqon(zb, "recv", "dreader", "--wait", "10")
    assert (kept.returncode, orjson.loads(kept.stdout)) == (0, {"note": "from za"})
    # Its inbox is read, and its handler attached, where it is served.
    refused = socat(za, '{"id": 1, "method": "arqon.recv"}')
    assert refused["error"] == {"code": -32001, "message": "dreader is served on node zb: its "
                                                           "inbox is read there"}


async def test_a_zgent_nobody_serves_answers_not_serving_at_once_and_goes_offline(two_nodes,
                                                                                   serving):
    za, zb = two_nodes
    assert await listed(za, "dreader", node="zb") is not None
    unserved = run_arqon(za, "call", "dreader", "query", '{"symbol": "SPX"}')
    assert (unserved.returncode, unserved.stderr) == (
        4, "arqon: dreader query: dreader is not serving: no handler attached (arqon serve "
           "dreader) (-32001)\n")
    zb.kill()
    gone = run_arqon(za, "call", "dreader", "query", '{"symbol": "SPX"}', timeout=10)
    assert gone.returncode == 4
    assert gone.stderr == ("arqon: dreader query: dreader is not serving: no node serves it "
                           "now (node zb is gone, or it was unregistered there) (-32001)\n")
    # After moo.stale_after (3 s here) without a word from zb, its Zgent is offline on za.
    assert await listed(za, "dreader", status="offline") is not None


async def test_the_registries_of_three_nodes_converge_on_each_registration(make_daemon,
                                                                            nats_server):
    nodes = [make_daemon(cluster_config(nats_server, name), name=name)
             for name in ("r1", "r2", "r3")]
    made = run_arqon(nodes[2], "zgent", "register", "scout", "--capability", "query:volume")
    assert made.returncode == 0, made.stderr
    for node in nodes:
        entry = await listed(node, "scout", node="r3", status="active")
        assert entry is not None, registry_of(node)
        assert (entry["capabilities"], entry["socket"]) == \
            (["query:volume"], f"{node.moo_dir}/scout.sock")
    gone = run_arqon(nodes[2], "zgent", "unregister", "scout")
    assert gone.returncode == 0, gone.stderr
    for node in nodes:
        assert await listed(node, "scout", node="r3", status="offline") is not None
