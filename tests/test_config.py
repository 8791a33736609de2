"""Configuration precedence and errors, through the real `arqond --check-config`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from arqond import config as configuration
from tests.conftest import ROOT, write_config


def check(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arqond", *args, "--check-config"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **(env or {})},
                          cwd=ROOT)


def test_shipped_config_file_is_valid_and_all_defaults():
    loaded = configuration.load(str(ROOT / "etc" / "arqond.toml"), environ={})
    assert loaded.values == {o.key: o.default for o in configuration.SCHEMA}
    result = check(["--config", str(ROOT / "etc" / "arqond.toml")])
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_every_option_is_documented_in_the_shipped_file():
    text = (ROOT / "etc" / "arqond.toml").read_text()
    for option in configuration.SCHEMA:
        assert f"[{option.section}]" in text
        assert f"#{option.name} = " in text, option.key


def test_precedence_defaults_file_env_flags(tmp_path):
    path = write_config(tmp_path / "a.toml", {"server": {"port": 1111, "host": "127.0.0.2"},
                                               "auth": {"enabled": False}})
    loaded = configuration.load(str(path), environ={})
    assert (loaded.server.port, loaded.server.host) == (1111, "127.0.0.2")
    assert loaded.server.history_size == 500
    loaded = configuration.load(str(path), environ={"ARQONBUS_SERVER_PORT": "2222"})
    assert loaded.server.port == 2222 and loaded.server.host == "127.0.0.2"
    loaded = configuration.load(str(path), environ={"ARQONBUS_PORT": "2222"},
                                overrides={"server.port": "3333"})
    assert loaded.server.port == 3333


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
    ({"casil": {"mode": "audit"}}, "casil.mode: must be one of monitor, enforce"),
    ({"casil": {"scope_include": "science:*"}}, "casil.scope_include: must be a list of"),
    ({"casil": {"redaction_patterns": ["(x"]}}, "casil.redaction_patterns: '(x' is not a"),
    ({"casil": {"redaction_patterns": ["a", "b"], "max_patterns": 1}}, "more than max_patt"),
    ({"omega": {"lab_room": "a:b"}}, "omega.lab_room: must be a non-empty room"),
])
def test_bad_file_names_the_key(tmp_path, sections, needle):
    path = write_config(tmp_path / "bad.toml", sections)
    result = check(["--config", str(path)])
    assert result.returncode == 1
    assert needle in result.stderr, result.stderr
    assert str(path) in result.stderr


def test_bad_environment_and_flag_values_are_named(tmp_path):
    path = write_config(tmp_path / "ok.toml", {})
    result = check(["--config", str(path)], env={"ARQONBUS_ENABLE_AUTH": "perhaps"})
    assert result.returncode == 1
    assert "environment ARQONBUS_ENABLE_AUTH: auth.enabled" in result.stderr
    result = check(["--config", str(path), "--port", "-5"])
    assert result.returncode == 1 and "flag --port: server.port" in result.stderr


def test_invalid_toml_and_missing_explicit_file(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("[server\nport = 1\n")
    result = check(["--config", str(bad)])
    assert result.returncode == 1 and "not valid TOML" in result.stderr
    result = check(["--config", str(tmp_path / "absent.toml")])
    assert result.returncode == 1 and "cannot read" in result.stderr


def test_version_flag():
    result = subprocess.run([sys.executable, "-m", "arqond", "--version"], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "arqond 0.1.0"
