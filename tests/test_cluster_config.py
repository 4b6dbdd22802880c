"""cluster.yaml is a valid Ray cluster-launcher config (checked offline with Ray's own schema)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parent.parent / "cluster.yaml"


def load() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_rays_validator() -> None:
    prepared = validate(load())
    nodes = prepared["available_node_types"]
    head = nodes[prepared["head_node_type"]]
    workers = [n for name, n in nodes.items() if name != prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0
    assert workers and all(w["max_workers"] >= 1 and w["min_workers"] >= 0 for w in workers)


def test_cluster_yaml_keeps_services_private_and_storage_shared() -> None:
    config = load()
    head_cmds = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmds
    assert "mlflow server" in head_cmds
    assert "/mnt/shared" in " ".join(config["initialization_commands"])
    assert "-v /mnt/shared:/mnt/shared" in config["docker"]["run_options"]
    assert "pip install -e ~/skd-ray" in " ".join(config["setup_commands"])
    import ray

    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-py311")


@pytest.mark.parametrize("breakage", ["min_workers_type", "unknown_head_type", "min_over_max"])
def test_validator_rejects_broken_variants(breakage: str) -> None:
    config = load()
    if breakage == "min_workers_type":
        config["available_node_types"]["gpu_worker"]["min_workers"] = "two"
    elif breakage == "unknown_head_type":
        config["head_node_type"] = "nope"
    else:
        config["available_node_types"]["gpu_worker"]["min_workers"] = 50
    with pytest.raises(Exception):  # noqa: B017 - jsonschema.ValidationError or ValueError
        validate(config)
