"""Static checks of the Ray autoscaler cluster config (cluster.yaml).

The config is validated the way `ray up` does it, minus the AWS API calls: `prepare_config` merges
Ray's AWS defaults into it, then `validate_config` checks the result against Ray's JSON schema
(`ray/autoscaler/ray-schema.json`) plus the head-node and min/max-worker invariants.
"""

from __future__ import annotations

import copy
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = pathlib.Path(__file__).resolve().parents[1] / "cluster.yaml"
DASHBOARD_PORT = 8265
GPU_INSTANCE_FAMILY = re.compile(r"^(g4dn|g4ad|g5|g5g|g6|g6e|gr6|p3|p3dn|p4d|p4de|p5|p5e|p5en|p6)\.")


def _load() -> dict[str, Any]:
    cfg = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(cfg, dict)
    return cfg


def _prepared(cfg: dict[str, Any]) -> dict[str, Any]:
    return prepare_config(copy.deepcopy(cfg))


def _head_start_commands(cfg: dict[str, Any]) -> list[str]:
    return [" ".join(str(cmd).split()) for cmd in cfg["head_start_ray_commands"]]


def _worker_types(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: nt for name, nt in cfg["available_node_types"].items() if name != cfg["head_node_type"]}


def _iter_ip_permissions(node: Any) -> Iterator[dict[str, Any]]:
    """Yields every ingress rule in any `IpPermissions` list found anywhere in the config."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "IpPermissions" and isinstance(value, list):
                yield from (rule for rule in value if isinstance(rule, dict))
            else:
                yield from _iter_ip_permissions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _iter_ip_permissions(item)


def _rule_opens_port(rule: dict[str, Any], port: int) -> bool:
    if str(rule.get("IpProtocol", "")) == "-1":  # all protocols, all ports
        return True
    from_port = int(rule.get("FromPort", -1))
    to_port = int(rule.get("ToPort", -1))
    if from_port == -1 and to_port == -1:
        return True
    return from_port <= port <= to_port


def _ports_opened(cfg: dict[str, Any], port: int) -> list[dict[str, Any]]:
    return [rule for rule in _iter_ip_permissions(cfg) if _rule_opens_port(rule, port)]


def test_cluster_yaml_passes_ray_validator() -> None:
    cfg = _load()
    assert cfg["cluster_name"] == "lead-ray"
    assert cfg["provider"]["type"] == "aws"
    assert cfg["provider"]["region"] == "us-west-2"
    assert cfg["provider"]["cache_stopped_nodes"] is False
    assert cfg["max_workers"] == 8
    assert cfg["idle_timeout_minutes"] == 10
    validate_config(_prepared(cfg))  # raises on an invalid config


@pytest.mark.parametrize(
    ("mutate", "validator", "path"),
    [
        (lambda c: c.__setitem__("not_a_ray_key", 1), "additionalProperties", []),
        (lambda c: c.__setitem__("max_workers", "lots"), "type", ["max_workers"]),
        (
            lambda c: c["available_node_types"]["ray.worker.gpu"].__setitem__("min_workers", "none"),
            "type",
            ["available_node_types", "ray.worker.gpu", "min_workers"],
        ),
        (lambda c: c["docker"].__setitem__("shm_size", "16g"), "additionalProperties", ["docker"]),
    ],
    ids=["unknown-top-level-key", "max_workers-not-int", "node-min_workers-not-int", "unknown-docker-key"],
)
def test_validator_rejects_broken_config(mutate: Any, validator: str, path: list[str]) -> None:
    cfg = _load()
    mutate(cfg)
    with pytest.raises(jsonschema.ValidationError) as excinfo:
        validate_config(_prepared(cfg))
    assert excinfo.value.validator == validator
    assert list(excinfo.value.absolute_path) == path


def test_validator_rejects_bad_head_node_type() -> None:
    cfg = _load()
    cfg["head_node_type"] = "ray.head.missing"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(_prepared(cfg))


def test_no_wildcard_address_anywhere_in_file() -> None:
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()


@pytest.mark.parametrize("prepared", [False, True], ids=["as-written", "with-ray-defaults"])
def test_dashboard_bound_to_localhost(prepared: bool) -> None:
    cfg = _load()
    if prepared:  # Ray's AWS defaults use --dashboard-host=0.0.0.0; make sure ours replace them
        cfg = _prepared(cfg)
    commands = _head_start_commands(cfg)
    head_starts = [cmd for cmd in commands if "ray start" in cmd and "--head" in cmd]
    assert len(head_starts) == 1, commands
    head_start = head_starts[0]
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "--dashboard-host=0.0.0.0" not in head_start
    assert re.findall(r"--dashboard-host[= ](\S+)", head_start) == ["127.0.0.1"]
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert all("0.0.0.0" not in cmd for cmd in commands)


def test_workers_join_head() -> None:
    commands = [" ".join(str(cmd).split()) for cmd in _load()["worker_start_ray_commands"]]
    assert any("ray start --address=$RAY_HEAD_IP:6379" in cmd for cmd in commands), commands


def test_gpu_worker_types_scale_from_zero() -> None:
    cfg = _load()
    gpu_types = {
        name: nt
        for name, nt in _worker_types(cfg).items()
        if GPU_INSTANCE_FAMILY.match(nt["node_config"]["InstanceType"])
    }
    assert "ray.worker.gpu" in gpu_types
    for name, nt in gpu_types.items():
        assert nt.get("min_workers") == 0, name
        assert nt.get("resources") == {}, name  # let the autoscaler detect CPUs/GPUs from the type
        assert 0 < nt["max_workers"] <= cfg["max_workers"], name


def test_gpu_workers_reach_storage_through_an_instance_profile_not_keys() -> None:
    cfg = _load()
    for name, nt in _worker_types(cfg).items():
        assert nt["node_config"]["IamInstanceProfile"] == {"Name": "lead-ray-s3"}, name
    text = CLUSTER_YAML.read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret_access_key" not in text.lower()


def test_head_is_cpu_only() -> None:
    cfg = _load()
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert cfg["head_node_type"] == "ray.head.default"
    assert not GPU_INSTANCE_FAMILY.match(head["node_config"]["InstanceType"])
    assert head["resources"].get("GPU", 0) == 0


def test_no_dashboard_ingress_rule() -> None:
    cfg = _load()
    assert _ports_opened(cfg, DASHBOARD_PORT) == []


def test_ingress_check_detects_an_open_dashboard_port() -> None:
    cfg = _load()
    cfg["provider"].setdefault("security_group", {}).setdefault("IpPermissions", []).append(
        {"FromPort": 8000, "ToPort": 9000, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "203.0.113.0/24"}]}
    )
    assert len(_ports_opened(cfg, DASHBOARD_PORT)) == 1
    assert _rule_opens_port({"IpProtocol": "-1"}, DASHBOARD_PORT)
    assert not _rule_opens_port({"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp"}, DASHBOARD_PORT)


def test_docker_image_matches_installed_ray() -> None:
    docker = _load()["docker"]
    assert docker["pull_before_run"] is True
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+)\.\d+-py\d+-gpu", docker["image"])
    assert match, docker["image"]
    assert match.group(1) == ".".join(ray.__version__.split(".")[:2])
    options = " ".join(docker["run_options"])
    assert "--ulimit nofile=65536:65536" in options
    assert "--shm-size=16g" in options


def test_project_is_mounted_and_installed() -> None:
    cfg = _load()
    assert cfg["file_mounts"] == {"/home/ray/lead-ray": "."}
    assert "pip install -e /home/ray/lead-ray" in cfg["setup_commands"]


RAY_INTERNAL_PORTS = (6379, 10001)  # GCS and Ray Client: unauthenticated; cluster.yaml's header says never open them


@pytest.mark.parametrize("port", RAY_INTERNAL_PORTS)
def test_cluster_yaml_opens_no_ray_internal_port(port: int) -> None:
    assert _ports_opened(_load(), port) == []


def test_cluster_yaml_port_check_catches_open_rules() -> None:
    bad = {"provider": {"security_group": {"IpPermissions": [{"IpProtocol": "tcp", "FromPort": 6000, "ToPort": 11000}]}}}
    assert all(len(_ports_opened(bad, p)) == 1 for p in RAY_INTERNAL_PORTS)
    assert _rule_opens_port({"IpProtocol": "-1"}, 6379)
    assert not _rule_opens_port({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}, 6379)
