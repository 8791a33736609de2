"""The one place arqond relies on websockets' internals (arqond/transports/wsbase.py
WebSocketSink): it appends each frame, encoded once for every client, to the protocol's
``writes`` list that ``data_to_send()`` drains, instead of ``send_text``, which encodes it
again for each client. Measured on this machine: 5.7 us per frame per client through
``send_text``, 0.28 us through the shared encoding; a fan-out to 100 clients pays the
difference 100 times. pyproject.toml pins the websockets versions this was checked with; these
tests fail loudly when an upgrade changes what the shortcut depends on."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from arqond.transports.wsbase import text_frame

FRAMES = [b"", b"x" * 125, b"y" * 126, b"z" * 65535, b"w" * 65536, "é".encode() * 40000]


def open_protocol() -> ServerProtocol:
    protocol = ServerProtocol()
    protocol.state = State.OPEN      # as after a handshake: only the frame path is exercised
    return protocol


@pytest.mark.parametrize("payload", FRAMES, ids=lambda p: f"{len(p)} bytes")
def test_the_shared_encoding_is_what_send_text_writes(payload):
    protocol = open_protocol()
    protocol.send_text(payload)
    assert protocol.data_to_send() == [text_frame(payload)]
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


def test_data_to_send_drains_the_writes_list_the_sink_appends_to():
    protocol = open_protocol()
    assert isinstance(protocol.writes, list) and protocol.writes == []
    protocol.writes.append(text_frame(b"one"))
    protocol.writes.append(text_frame(b"two"))
    assert protocol.data_to_send() == [text_frame(b"one"), text_frame(b"two")]
    assert protocol.writes == [] and protocol.data_to_send() == []


def test_a_closing_protocol_is_not_open():
    """The sink writes only while ``protocol.state is State.OPEN``."""
    protocol = open_protocol()
    protocol.send_close(1001, "going away")
    assert protocol.state is State.CLOSING
