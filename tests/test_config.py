"""Configuration through the real `arqond --check-config`: the shipped file, precedence, and
how a refusal reaches the user. Each refusal rule is a row of tests/unit/test_config.py."""

from __future__ import annotations

import subprocess
import sys

from arqond import config as configuration
from tests.conftest import ROOT, write_config


def check(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arqond", *args, "--check-config"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd=ROOT)


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


def test_a_bad_file_is_reported_with_its_key_and_path_and_exit_status_1(tmp_path):
    path = write_config(tmp_path / "bad.toml", {"server": {"port": 70000}})
    result = check(["--config", str(path)])
    assert result.returncode == 1
    assert "server.port: must be a port number" in result.stderr, result.stderr
    assert str(path) in result.stderr


def test_a_bad_flag_value_is_named_by_the_flag(tmp_path):
    path = write_config(tmp_path / "ok.toml", {})
    result = check(["--config", str(path), "--port", "-5"])
    assert result.returncode == 1 and "flag --port: server.port" in result.stderr


def test_version_flag():
    result = subprocess.run([sys.executable, "-m", "arqond", "--version"], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "arqond 0.1.0"
