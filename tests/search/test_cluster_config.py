"""cluster.yaml is a valid Ray cluster-launcher config (checked offline with Ray's own schema)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster.yaml"


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


def test_the_head_runs_postgresql_for_mlflow_and_optuna() -> None:
    """PostgreSQL in a container on the head's host (127.0.0.1 only, data on EFS), its `mlflow`
    database the MLflow server's backend store and `optuna` the searches' studies; workers run
    only the shared disk's commands. Every command is valid shell."""
    import subprocess

    config = load()
    head_host = config["initialization_commands"]
    worker_host = config["available_node_types"]["gpu_worker"]["initialization_commands"]
    assert worker_host == head_host[:2] and not any("postgres" in c for c in worker_host)
    started = " ".join(head_host[2:])
    for part in ("postgres:16", "--network host", "listen_addresses=127.0.0.1", "POSTGRES_DB=mlflow",
                 "/mnt/shared/postgres:/var/lib/postgresql/data", "createdb -U skd optuna", "--restart unless-stopped"):
        assert part in started, part
    assert "--backend-store-uri postgresql://skd@127.0.0.1:5432/mlflow" in " ".join(config["head_start_ray_commands"])
    assert "~/.pgpass" in " ".join(config["head_setup_commands"])
    assert "--optuna-storage postgresql://skd@127.0.0.1:5432/optuna" in CLUSTER.read_text()
    for command in [*head_host, *config["head_setup_commands"], *config["head_start_ray_commands"]]:
        assert subprocess.run(["bash", "-n", "-c", command]).returncode == 0, command


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


def search_request(workers: int = 1, cpus: float = 1.0, gpus: float = 0.0, max_concurrent: int | None = None):
    from skd_ray.search.request import SearchRequest
    from skd_ray.search.space.definition import load_space

    space = load_space(CLUSTER.parent / "search_spaces" / "vanilla.yaml")
    return SearchRequest(space=space, storage="/tmp/x", tracking_uri="sqlite:///x.db", experiment="e",
                         search_name="s", num_samples=64, workers=workers, cpus_per_worker=cpus,
                         gpus_per_worker=gpus, max_concurrent=max_concurrent)


def test_a_search_sizes_itself_by_what_the_node_types_can_grow_to() -> None:
    """Nothing is up when the search starts (head CPU 0, min_workers 0): the search is sized by
    the node types of the config the autoscaler runs with."""
    from skd_ray.search.cluster.autoscaler import plan_on_node_types, read_launcher_config

    view = read_launcher_config(CLUSTER)
    workers = {t.name: t for t in view.node_types if not t.head}
    assert workers["gpu_worker"].resources == {"CPU": 8.0, "GPU": 1.0} and workers["gpu_worker"].max_workers == 8
    assert plan_on_node_types(view, search_request(gpus=1, cpus=4)) == 8
    assert plan_on_node_types(view, search_request(gpus=0.25, cpus=2)) == 32  # 4 per GPU node, CPU-bound
    assert plan_on_node_types(view, search_request(workers=2, gpus=1, cpus=4)) == 4
    assert plan_on_node_types(view, search_request(gpus=1, max_concurrent=3)) == 3


def test_a_trial_no_node_type_holds_is_refused_naming_the_node_types() -> None:
    from skd_ray.errors import SkdError
    from skd_ray.search.cluster.autoscaler import plan_on_node_types, read_launcher_config

    with pytest.raises(SkdError) as err:
        plan_on_node_types(read_launcher_config(CLUSTER), search_request(gpus=2))
    assert "gpu_worker (up to 8 x {CPU: 8, GPU: 1})" in err.value.problem and "head" in err.value.problem


def test_job_uploads_leave_out_the_environment_results_and_mlflow_stores() -> None:
    """`ray job submit --working-dir .` honours .rayignore (Ray refuses uploads over 100 MiB)."""
    ignored = (CLUSTER.parent / ".rayignore").read_text().split()
    assert {".venv/", "skd_results/", "mlruns/", "mlflow.db"} <= set(ignored)
    assert {".venv", "skd_results", "mlruns"} <= set(load()["rsync_exclude"])


def test_multi_worker_trials_leave_the_pools_on_an_autoscaling_cluster_unless_kept() -> None:
    """A pool holds its nodes until the search ends, so an autoscaling cluster gets a Train run
    per trial; --keep-ddp-pools keeps the pools, and each choice is said in one line."""
    from skd_ray.search.cluster.autoscaler import pools_on_autoscaling

    for keep, pooled, said in ((False, False, "start their own Ray Train run"), (True, True, "train in DDP pools")):
        req, lines = search_request(workers=2), []
        req.keep_pools = keep
        pools_on_autoscaling(req, lines.append)
        assert req.ddp_pool is pooled and len(lines) == 1 and said in lines[0], lines
    one_worker, lines = search_request(workers=1), []
    pools_on_autoscaling(one_worker, lines.append)
    assert one_worker.ddp_pool and not lines  # one-worker trials have no pool to keep or drop
