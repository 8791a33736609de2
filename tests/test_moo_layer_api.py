"""The MooLayer calls other parts of arqond make (the narrative bridge, /status), in process
with real files."""

from __future__ import annotations

import asyncio
import os
import socket as sockets
import stat

import orjson
import pytest

from arqond import config as configuration
from arqond.core.bus import Bus
from arqond.core.moo.names import ZgentError
from arqond.core.moo.registry import Status
from arqond.moo.layer import MooLayer
from arqond.principals import PrincipalResolver
from arqond.system.fdstore import FdStore
from arqond.transports.timers import LoopTimers
from tests.conftest import ZgentSocket, write_config


@pytest.fixture
async def layer(tmp_path):
    moo, log, state = tmp_path / "moo", tmp_path / "log", tmp_path / "state"
    path = write_config(tmp_path / "a.toml", {"moo": {"dir": str(moo), "log_dir": str(log)},
                                               "server": {"state_dir": str(state)}})
    bus = Bus()
    config = configuration.load(str(path), environ={})
    layer = MooLayer(bus, config, FdStore(), LoopTimers(), PrincipalResolver(config))
    await layer.start()
    yield layer
    await layer.stop()


async def test_ensure_zgent_registers_once_and_touch_refreshes(layer):
    layer.ensure_zgent("newbie")
    inbox = os.path.join(layer.dir, "newbie-inbox")
    assert stat.S_ISFIFO(os.lstat(inbox).st_mode)
    layer.ensure_zgent("newbie")  # already there: no error, nothing new
    assert list(layer.zgents.served) == ["newbie"]
    layer.zgents.served["newbie"].zgent.status = Status.STALE
    layer.touch("newbie")
    layer.touch("not-registered")  # ignored
    await layer.written()
    with open(layer.registry_path, "rb") as handle:
        entry = orjson.loads(handle.read())["zgents"]["newbie"]
    assert entry["status"] == "active"
    with pytest.raises(ZgentError):
        layer.ensure_zgent("../escape")
    assert not os.path.lexists(os.path.join(os.path.dirname(layer.dir), "escape-inbox"))


async def test_inbox_line_is_a_message_to_the_zgent(layer):
    layer.ensure_zgent("newbie")
    layer.inbox_line("newbie", {"n": 1})
    layer.inbox_line("ghost", {"n": 2})  # refused: no such Zgent, counted
    assert layer.zgents.served["newbie"].mailbox.take() == {"n": 1}
    assert (layer.zgents.inbox_lines_total, layer.zgents.inbox_refused_total) == (1, 1)
    history = layer.bus.router.history("newbie", "inbox")
    assert [env["payload"] for env in history] == [{"n": 1}]
    status = layer.status()["zgents"]
    assert status["newbie"]["mailbox"] == 0 and status["newbie"]["handler"] is False


async def test_fds_handed_back_by_the_fd_store_are_taken_over_with_their_data(tmp_path):
    """What a restart under systemd looks like: the FIFO's read end and the listening socket
    come back through FdStore.inherited, with a line and a connection waiting in them."""
    moo, log, state = tmp_path / "moo", tmp_path / "log", tmp_path / "state"
    moo.mkdir()
    inbox, sock_path = moo / "kept-inbox", moo / "kept.sock"
    os.mkfifo(inbox, 0o660)
    read_end = os.open(inbox, os.O_RDONLY | os.O_NONBLOCK)
    listening = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    listening.bind(str(sock_path))
    listening.listen()
    # Written and connected while "arqond is down": only the kept fds hold them.
    writer = os.open(inbox, os.O_WRONLY | os.O_NONBLOCK)
    os.write(writer, b'{"while":"restarting"}\n')
    os.close(writer)
    early = await ZgentSocket.open(sock_path)
    await early.send({"id": "early", "method": "arqon.ping"})

    path = write_config(tmp_path / "a.toml", {
        "moo": {"dir": str(moo), "log_dir": str(log)}, "server": {"state_dir": str(state)},
        "zgents": {"kept": {}}})
    store = FdStore({"kept-inbox": read_end, "kept.sock": listening.detach()})
    config = configuration.load(str(path), environ={})
    layer = MooLayer(Bus(), config, store, LoopTimers(), PrincipalResolver(config))
    await layer.start()
    try:
        assert layer.files["kept"].reader.fd == read_end
        answer = await early.recv()
        assert answer["id"] == "early" and answer["result"]["pong"]
        waiting = await early.call("arqon.recv", {"wait": 5}, request_id=2)
        assert waiting["result"] == {"while": "restarting"}
    finally:
        await early.close()
        await layer.stop()


async def test_a_part_that_stopped_working_is_listed_in_faults_until_it_is_gone(layer):
    layer.ensure_zgent("newbie")
    assert layer.faults() == []
    inbox = os.path.join(layer.dir, "newbie-inbox")
    writer = os.open(inbox, os.O_WRONLY | os.O_NONBLOCK)
    os.unlink(inbox)
    open(inbox, "w").close()
    os.close(writer)   # the last writer leaves: the reader reopens the path, finds a file
    for _ in range(100):
        if layer.faults():
            break
        await asyncio.sleep(0.01)
    assert layer.faults() == [f"{inbox}: cannot reopen: {inbox} was replaced by something "
                              "that is not a FIFO; inbox closed"]
    layer.unregister("newbie")
    assert layer.faults() == []
    # registry.json that cannot be written is one too, until a write succeeds.
    os.unlink(layer.registry_path)
    os.mkdir(layer.registry_path)
    await layer.written()
    assert layer.faults() == [f"cannot write {layer.registry_path}: Is a directory"]
    os.rmdir(layer.registry_path)
    await layer.written()
    assert layer.faults() == []
