"""``cluster.yaml``: the Ray cluster launcher config, checked offline.

Two layers, neither needs cloud credentials nor starts Ray:

- Ray's own checks: the JSON schema shipped in the wheel (``ray/autoscaler/ray-schema.json``) on
  the file as written, then ``prepare_config`` (merges the AWS defaults the launcher would use)
  and ``validate_config`` (schema again plus cross-field rules) on the merged config.
- What Parley relies on: a head and an autoscaling worker type, Ray's auth token reaching the
  workers, Redis installed on the head on a port other than Ray's GCS, and ``parley serve``
  joining the cluster with a ``redis://`` store that the CLI accepts.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from parley import cli

pytestmark = pytest.mark.timeout(30)

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"
SCHEMA_PATH = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(config: dict[str, Any]) -> dict[str, Any]:
    return prepare_config(config)


def _head_type(config: dict[str, Any]) -> dict[str, Any]:
    return config["available_node_types"][config["head_node_type"]]


def _worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


def _head_setup(config: dict[str, Any]) -> list[str]:
    return config.get("setup_commands", []) + config.get("head_setup_commands", [])


def _gcs_port(config: dict[str, Any]) -> int:
    starts = [c for c in config["head_start_ray_commands"] if "ray start" in c and "--head" in c]
    assert len(starts) == 1, starts
    match = re.search(r"--port[= ](\d+)", starts[0])
    # Without --port, `ray start --head` listens on 6379.
    return int(match.group(1)) if match else 6379


def _parley_serve_command(config: dict[str, Any]) -> str:
    commands = [c for c in config["head_start_ray_commands"] if "parley serve" in c]
    assert len(commands) == 1, "exactly one head start command runs `parley serve`"
    return commands[0]


def _parley_serve_args(command: str) -> list[str]:
    """The words after ``parley serve``, up to the first shell redirect or operator."""
    words = shlex.split(command[command.index("parley serve") :])
    args = []
    for word in words[2:]:
        if word in {">", ">>", "<", "2>&1", "&", "&&", ";", "|"} or word.startswith((">", "<", "2>")):
            break
        args.append(word)
    return args


def _parse_serve_flags(args: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """Run Parley's real argument parser, catching the parsed flags instead of serving."""
    seen: list[argparse.Namespace] = []

    def capture(namespace: argparse.Namespace) -> int:
        seen.append(namespace)
        return 0

    monkeypatch.setattr(cli, "_serve", capture)
    assert cli.main(["serve", *args]) == 0
    return seen[0]


# Ray's own validation


def test_schema_file_ships_with_ray() -> None:
    assert SCHEMA_PATH.is_file(), SCHEMA_PATH


def test_cluster_yaml_matches_ray_schema(config: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator_class(schema).iter_errors(config)
    ]
    assert errors == []


def test_ray_accepts_the_config_with_aws_defaults(prepared: dict[str, Any]) -> None:
    validate_config(prepared)  # raises on any problem
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_every_command_is_valid_shell(prepared: dict[str, Any]) -> None:
    keys = [
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    ]
    for key in keys:
        for command in prepared.get(key, []):
            # -n: parse only, nothing runs.
            checked = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            assert checked.returncode == 0, f"{key}: {command!r}: {checked.stderr}"


# Node types and autoscaling


def test_head_and_one_autoscaling_worker_type(config: dict[str, Any]) -> None:
    assert config["head_node_type"] in config["available_node_types"]
    workers = _worker_types(config)
    assert len(workers) == 1
    (worker,) = workers.values()
    assert worker["max_workers"] > worker["min_workers"] >= 1
    assert config["max_workers"] >= worker["max_workers"]


def test_node_types_name_an_instance_and_an_image(config: dict[str, Any]) -> None:
    for node_type in config["available_node_types"].values():
        node_config = node_type["node_config"]
        assert node_config["InstanceType"]
        assert node_config["ImageId"].startswith("ami-")


# Ray: GCS port, token auth, workers joining


def test_head_starts_the_autoscaler(config: dict[str, Any]) -> None:
    start = next(c for c in config["head_start_ray_commands"] if "ray start" in c and "--head" in c)
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in start


def test_workers_join_the_head_gcs_port(config: dict[str, Any]) -> None:
    joins = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    assert len(joins) == 1
    assert f"--address=$RAY_HEAD_IP:{_gcs_port(config)}" in joins[0]


def test_token_auth_is_on_everywhere_and_the_token_reaches_workers(config: dict[str, Any]) -> None:
    # `parley serve --address` defaults to RAY_AUTH_MODE=token, so the whole cluster must use it.
    assert any("RAY_AUTH_MODE=token" in c for c in config["setup_commands"])
    assert any("ray get-auth-token --generate" in c for c in config["head_setup_commands"])
    assert "~/.ray/auth_token" in config["cluster_synced_files"]


# Redis and Parley


def test_redis_is_installed_on_the_head_with_persistence(config: dict[str, Any]) -> None:
    head_setup = " ".join(_head_setup(config))
    assert re.search(r"apt-get\b.*\binstall\b.*\bredis-server\b", head_setup)
    assert "appendonly yes" in head_setup
    assert not any("redis-server" in c for c in config.get("worker_setup_commands", []))


def test_parley_is_installed_on_every_node(config: dict[str, Any]) -> None:
    assert any(re.search(r"pip install .*parley", c) for c in config["setup_commands"])


def test_parley_serve_joins_the_cluster_with_a_redis_store(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    command = _parley_serve_command(config)
    assert "nohup" in command  # outlives the launcher's SSH session
    flags = _parse_serve_flags(_parley_serve_args(command), monkeypatch)
    assert flags.address == "auto"
    assert flags.host == "0.0.0.0"
    store = urlsplit(flags.store)
    assert store.scheme == "redis"
    # Actors on workers use this URL too: it must not point at loopback.
    assert store.hostname not in {"localhost", "127.0.0.1", "0.0.0.0"}
    assert store.port is not None


def test_redis_port_differs_from_gcs_and_matches_redis_config(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = _parse_serve_flags(_parley_serve_args(_parley_serve_command(config)), monkeypatch)
    redis_port = urlsplit(flags.store).port
    assert redis_port != _gcs_port(config)
    redis_conf = " ".join(c for c in _head_setup(config) if "/etc/redis" in c)
    assert re.search(rf"(?<![\w-])port {redis_port}\b", redis_conf), (
        "Redis is configured to listen on the store URL's port"
    )
    assert not re.search(r"\bbind [^\"]*0\.0\.0\.0", redis_conf), "Redis stays off the public interfaces"
