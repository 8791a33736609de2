"""[cluster] settings: where they come from, and every refusal with its exact reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arqond import config as configuration
from arqond.config import ConfigError
from tests.conftest import ROOT, write_config


def check(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arqond", *args, "--check-config"],
                          capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_unset_is_a_single_node():
    assert configuration.defaults().cluster.nats_url == ()


def test_several_urls_come_from_the_file_the_environment_and_the_flag(tmp_path):
    path = write_config(tmp_path / "c.toml", {"cluster": {"nats_url": ["nats://a:4222"]}})
    assert configuration.load(str(path), environ={}).cluster.nats_url == ("nats://a:4222",)
    from_env = configuration.load(str(path), environ={
        "ARQONBUS_CLUSTER_NATS_URL": "nats://b:4222, tls://c:4443"})
    assert from_env.cluster.nats_url == ("nats://b:4222", "tls://c:4443")
    from_flag = configuration.load(str(path), environ={
        "ARQONBUS_CLUSTER_NATS_URL": "nats://b:4222"}, overrides={
        "cluster.nats_url": "nats://d:4222,nats://e:4222"})
    assert from_flag.cluster.nats_url == ("nats://d:4222", "nats://e:4222")


def test_the_flag_reaches_check_config(tmp_path):
    path = write_config(tmp_path / "ok.toml", {})
    assert check(["--config", str(path), "--nats-url", "nats://127.0.0.1:4222"]).returncode == 0
    bad = check(["--config", str(path), "--nats-url", "http://127.0.0.1:4222"])
    assert bad.returncode == 1
    assert bad.stderr == ("arqond: flag --nats-url: cluster.nats_url: 'http://127.0.0.1:4222': "
                          "must be nats://HOST:PORT or tls://HOST:PORT\n")
    env = check(["--config", str(path)], {"ARQONBUS_CLUSTER_NATS_URL": "nats://h:1,x"})
    assert env.returncode == 1
    assert env.stderr == ("arqond: environment ARQONBUS_CLUSTER_NATS_URL: cluster.nats_url: "
                          "'x': must be nats://HOST:PORT or tls://HOST:PORT\n")


URL = ["nats://127.0.0.1:4222"]
REFUSALS = [
    ({"node": "a b"}, 'cluster.node: must be 1 to 64 letters, digits, ".", "_" or "-" (or "" '
                      "for the host name) (got 'a b')"),
    ({"node": "x" * 65}, "cluster.node: must be 1 to 64 letters"),
    ({"name": "Arq"}, 'cluster.name: must be 1 to 32 lower-case letters, digits, "_" or "-" '
                      "(got 'Arq')"),
    ({"name": "a.b"}, "cluster.name: must be 1 to 32 lower-case letters"),
    ({"replicas": 0}, "cluster.replicas: must be from 1 to 5 (got 0)"),
    ({"replicas": 7}, "cluster.replicas: must be from 1 to 5 (got 7)"),
    ({"outage_buffer": 0}, "cluster.outage_buffer: must be greater than 0 (got 0)"),
    ({"creds_file": "relative.creds"}, "cluster.creds_file: must be an absolute path"),
    ({"tls_ca": "ca.pem"}, "cluster.tls_ca: must be an absolute path"),
    ({"user": "arq"}, "cluster.user and cluster.password: set both or neither"),
    ({"password": "pw"}, "cluster.user and cluster.password: set both or neither"),
    ({"token": "t", "user": "u", "password": "p"},
     "cluster.token: use a token, a user and password, or a creds file, not several"),
    ({"token": "t", "creds_file": "/etc/arqond/nats.creds"},
     "cluster.token: use a token, a user and password, or a creds file, not several"),
    ({"tls_cert": "/etc/arqond/c.pem"}, "cluster.tls_cert and cluster.tls_key: set both or "
                                        "neither"),
    ({"nats_url": ["nats://h:4222/x"]}, "cluster.nats_url: 'nats://h:4222/x': must be "
                                        "nats://HOST:PORT or tls://HOST:PORT"),
    ({"nats_url": "nats://h:4222"}, "cluster.nats_url: must be a list of strings"),
]


@pytest.mark.parametrize("cluster, reason", REFUSALS,
                         ids=[f"{sorted(row[0])}" for row in REFUSALS])
def test_a_bad_cluster_setting_is_refused_naming_the_key_and_why(tmp_path: Path, cluster,
                                                                 reason):
    path = write_config(tmp_path / "bad.toml", {"cluster": {"nats_url": URL, **cluster}})
    with pytest.raises(ConfigError) as refused:
        configuration.load(str(path), environ={})
    assert str(refused.value).startswith(f"{path}: ") and reason in str(refused.value)


def test_a_cluster_node_needs_a_state_dir_copy_of_the_streams(tmp_path):
    path = write_config(tmp_path / "mem.toml", {"cluster": {"nats_url": URL},
                                                 "streams": {"durability": "memory"}})
    with pytest.raises(ConfigError) as refused:
        configuration.load(str(path), environ={})
    assert str(refused.value) == (
        f"{path}: cluster.nats_url: a node of a cluster keeps its copy of the cluster's "
        'streams in server.state_dir: streams.durability must be "write" or "fsync", not '
        '"memory"')
    alone = write_config(tmp_path / "alone.toml", {"streams": {"durability": "memory"}})
    assert configuration.load(str(alone), environ={}).streams.durability == "memory"


def test_good_credentials_and_tls_settings_load(tmp_path):
    path = write_config(tmp_path / "good.toml", {"cluster": {
        "nats_url": ["tls://nats1:4443", "tls://nats2:4443"], "node": "web-1.example",
        "user": "arqond", "password": "s3cret", "tls_ca": "/etc/arqond/ca.pem",
        "tls_cert": "/etc/arqond/node.pem", "tls_key": "/etc/arqond/node.key",
        "replicas": 3}})
    cluster = configuration.load(str(path), environ={}).cluster
    assert (cluster.node, cluster.user, cluster.replicas, cluster.tls_key) == \
        ("web-1.example", "arqond", 3, "/etc/arqond/node.key")


def test_a_cluster_without_the_nats_client_refuses_to_start_saying_what_to_install(
        make_daemon, tmp_path):
    shadow = tmp_path / "shadow" / "nats"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("No module named \'nats\'")\n')
    node = make_daemon({"cluster": {"nats_url": ["nats://127.0.0.1:4222"]}},
                       env={"PYTHONPATH": str(shadow.parent)}, start=False)
    node.start(wait_ready=False)
    assert node.proc.wait(30) == 1
    node.wait_for_line("cluster.nats_url is set, but the NATS client cannot be loaded (No "
                       "module named 'nats'): install nats-py (pip install 'arqond[cluster]')")
