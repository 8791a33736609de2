"""Envelope details that ArqonBus's clients see (wire facts §2.1, §2.2)."""

from __future__ import annotations

import pytest

from arqond.core import envelope


@pytest.mark.parametrize("sent, relayed", [
    ("2025-01-01T12:00:00.000Z", "2025-01-01T12:00:00+00:00"),
    ("2025-01-01T12:00:00Z", "2025-01-01T12:00:00+00:00"),
    ("2025-01-01T12:00:00.5+02:00", "2025-01-01T12:00:00.500000+02:00"),
    ("2025-01-01T12:00:00", "2025-01-01T12:00:00"),          # naive stays naive
])
def test_a_senders_timestamp_is_relayed_re_formatted_as_arqonbus_does(sent, relayed):
    env = envelope.parse(f'{{"payload":{{"a":1}},"timestamp":"{sent}"}}', 64)
    assert env["timestamp"] == relayed


def test_legacy_to_client_is_copied_into_metadata_when_there_is_none():
    env = envelope.parse('{"payload":{"a":1},"to_client":"arq_client_x"}', 64)
    assert env["metadata"] == {"to_client": "arq_client_x"} and env["to_client"] == "arq_client_x"
    kept = envelope.parse('{"payload":{"a":1},"to_client":"x","metadata":{"k":1}}', 64)
    assert kept["metadata"] == {"k": 1}
