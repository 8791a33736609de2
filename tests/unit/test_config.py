"""Configuration rules in-process (arqond/config.py): every refused value names its key and
where it came from. tests/test_config.py proves once that `arqond --check-config` reports
them."""

from __future__ import annotations

import pytest

from arqond import config as configuration
from arqond.app import bus_settings
from arqond.core.bus import BusSettings
from tests.conftest import write_config
from tests.unit.harness import BusHarness, assert_ack


@pytest.mark.parametrize("sections, needle", [
    ({"server": {"prot": 1}}, "unknown key 'server.prot'"),
    ({"sever": {"port": 1}}, "unknown section or key 'sever'"),
    ({"server": {"port": "x"}}, "server.port: must be an integer"),
    ({"server": {"port": 70000}}, "server.port: must be a port number"),
    ({"server": {"log_level": "loud"}}, "server.log_level: must be one of"),
    ({"server": {"event_loop": "trio"}}, "server.event_loop: must be one of asyncio, uvloop"),
    ({"server": {"default_channel": "science"}}, "server.default_channel"),
    ({"moo": {"dir": "relative/moo"}}, "moo.dir: must be an absolute path"),
    ({"auth": {"enabled": True}}, "auth.jwt_secret: must be set"),
    ({"moo": {"pane_max_bytes": 0}}, "moo.pane_max_bytes: must be"),
    ({"casil": {"mode": "audit"}}, "casil.mode: must be one of monitor, enforce"),
    ({"casil": {"scope_include": "science:*"}}, "casil.scope_include: must be a list of"),
    ({"casil": {"redaction_patterns": ["(x"]}}, "casil.redaction_patterns: '(x' is not a"),
    ({"casil": {"redaction_patterns": ["a", "b"], "max_patterns": 1}}, "more than max_patt"),
    ({"omega": {"lab_room": "a:b"}}, "omega.lab_room: must be a non-empty room"),
])
def test_a_bad_file_names_the_key_and_the_file(tmp_path, sections, needle):
    path = write_config(tmp_path / "bad.toml", sections)
    with pytest.raises(configuration.ConfigError) as refused:
        configuration.load(str(path), environ={})
    assert needle in str(refused.value)
    assert str(path) in str(refused.value)


def test_a_bad_environment_value_names_the_variable():
    with pytest.raises(configuration.ConfigError) as refused:
        configuration.load("/dev/null", environ={"ARQONBUS_ENABLE_AUTH": "perhaps"})
    assert "environment ARQONBUS_ENABLE_AUTH: auth.enabled" in str(refused.value)


def test_a_bad_flag_value_names_the_flag():
    with pytest.raises(configuration.ConfigError) as refused:
        configuration.load("/dev/null", environ={}, overrides={"server.port": "-5"})
    assert "flag --port: server.port" in str(refused.value)


def test_invalid_toml_and_a_missing_explicit_file_are_named(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("[server\nport = 1\n")
    with pytest.raises(configuration.ConfigError, match="not valid TOML"):
        configuration.load(str(bad), environ={})
    with pytest.raises(configuration.ConfigError, match="cannot read"):
        configuration.load(str(tmp_path / "absent.toml"), environ={})


@pytest.mark.parametrize("default_channel, room, channel", [
    ("science:general", "science", "general"), ("lab:bench", "lab", "bench"), ("", None, None)])
def test_the_server_keys_the_bus_reads(tmp_path, default_channel, room, channel):
    path = write_config(tmp_path / "a.toml", {"server": {
        "default_channel": default_channel, "history_size": 7, "max_json_depth": 9}})
    settings = bus_settings(configuration.load(str(path), environ={}))
    assert settings == BusSettings(default_room=room, default_channel=channel, history_size=7,
                                   max_json_depth=9)


def test_with_the_default_channel_off_a_roomless_message_is_acked_and_goes_nowhere():
    settings = bus_settings(configuration.load("/dev/null", environ={
        "ARQONBUS_SERVER_DEFAULT_CHANNEL": ""}))
    assert (settings.default_room, settings.default_channel) == (None, None)
    client = BusHarness(settings).connect()
    assert_ack(client.send({"type": "message", "payload": {"x": 1}}))
    assert client.ok("status")["client"]["subscriptions"] == []


def test_every_environment_name_of_a_key_is_said_once():
    """An alias equal to the name derived from the key would be listed twice in arqond.conf(5)."""
    for option in configuration.SCHEMA:
        assert len(set(option.env_names)) == len(option.env_names), option.key
