"""Every registered method trains one epoch with 2 DDP workers through Ray Train.

One Ray Train run trains every method in turn (a Train run costs ~15 s to start here; the
methods share it, as trials share a DDP pool). It runs the real `skd_ray.search.execution.executors.train_worker`
for each; a thin wrapper only observes it on each rank (the model `RaySession.prepare_model`
returned, the rank's last report) and writes what it saw to a file per method, so each
method's test can check that the two ranks really formed a process group, wrapped the method
in DistributedDataParallel, trained on different shards (different per-rank losses before
they are averaged for logging, identical ones after) and still ended with identical weights
(gradients all-reduced).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from skd_ray.methods import METHODS
from skd_ray.results.store import MlflowStore

pytestmark = pytest.mark.slow

WORKERS = 2


@pytest.fixture(scope="module")
def local_ray():
    import ray
    from ray import cloudpickle

    # Ray workers cannot import this test module (tests/ is not on their sys.path): ship the
    # wrapper below to them by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    tmp = Path(f"/tmp/skdd{os.getpid()}")
    ray.init(num_cpus=WORKERS, _temp_dir=str(tmp),
             runtime_env={"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}})
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One MLflow store and experiment for the module (creating a SQLite store takes seconds)."""

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    return uri, MlflowStore(uri).experiment_id("ddp", create=True)


def observed_train_worker(loop_config: dict[str, Any]) -> None:
    """`train_worker` for every method of `loop_config["jobs"]`, plus a record of what this
    rank did for each (written to `observe_dir/<method>/rank<r>.json`)."""
    import ray.train
    import torch

    from skd_ray.search.execution import sessions as session_module
    from skd_ray.search.execution.executors import train_worker
    from skd_ray.training import engine as engine_module

    seen: dict[str, Any] = {}
    cls = session_module.RaySession
    original_prepare, original_report = cls.prepare_model, cls.report
    original_mean = engine_module.mean_over_ranks

    def prepare_model(self: Any, model: Any) -> Any:
        wrapped = original_prepare(self, model)
        seen["model"], seen["wrapper"] = model, type(wrapped).__name__
        return wrapped

    def report(self: Any, metrics: dict[str, float], state: dict[str, Any], is_best: bool) -> None:
        seen["metrics"], seen["checkpoint_epoch"] = dict(metrics), state["epoch"]
        original_report(self, metrics, state, is_best)

    def mean_over_ranks(metrics: dict[str, float], device: Any) -> dict[str, float]:
        seen["own_train_loss"] = metrics["train_loss"]
        return original_mean(metrics, device)

    # Each Ray Train worker is a process of its own that ends with the run: patching here
    # observes this rank only. Every method starts from scratch: in a shared run, Train's
    # `get_checkpoint` would hand a method the checkpoint the previous method reported.
    cls.prepare_model, cls.report = prepare_model, report
    original_load = cls.load_checkpoint
    cls.load_checkpoint = lambda self: None
    engine_module.mean_over_ranks = mean_over_ranks
    ctx = ray.train.get_context()
    dist = torch.distributed
    try:
        for method, job in loop_config["jobs"].items():
            seen.clear()
            returned = train_worker(job)
            trainable = [p.detach().cpu().contiguous() for p in seen["model"].parameters() if p.requires_grad]
            record = {
                "rank": ctx.get_world_rank(),
                "world_size": ctx.get_world_size(),
                "process_group_size": dist.get_world_size() if dist.is_initialized() else 1,
                "wrapper": seen["wrapper"],
                "param_digest": hashlib.sha256(b"".join(p.numpy().tobytes() for p in trainable)).hexdigest(),
                "own_train_loss": seen["own_train_loss"],
                "metrics": seen["metrics"],
                "checkpoint_epoch": seen["checkpoint_epoch"],
                "returned": returned,
            }
            out = Path(loop_config["observe_dir"]) / method / f"rank{record['rank']}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(record))
    finally:
        cls.prepare_model, cls.report, cls.load_checkpoint = original_prepare, original_report, original_load
        engine_module.mean_over_ranks = original_mean


@pytest.fixture(scope="module")
def ddp_run(local_ray, tracking, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Any]:
    """Train every method in one 2-worker Ray Train run; (observations, MLflow run ids, result)."""
    import ray.train
    from mlflow import MlflowClient
    from ray.train.torch import TorchTrainer

    uri, experiment_id = tracking
    client = MlflowClient(uri)
    observe_dir = tmp_path_factory.mktemp("observed")
    run_ids = {m: client.create_run(experiment_id, run_name=m).info.run_id for m in sorted(METHODS)}
    jobs = {m: {"flat": {"method": m, "data.name": "digits", "data.val_fraction": 0.2, "model.width": 4,
                         "train.epochs": 1, "train.threads": 1},
                "store": MlflowStore(uri), "run_id": run_ids[m]} for m in sorted(METHODS)}
    trainer = TorchTrainer(
        observed_train_worker,
        train_loop_config={"jobs": jobs, "observe_dir": str(observe_dir)},
        scaling_config=ray.train.ScalingConfig(num_workers=WORKERS, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="ddp_methods", storage_path=str(observe_dir / "storage")),
    )
    start = time.perf_counter()
    result = trainer.fit()
    print(f"{len(jobs)} methods: trainer.fit() took {time.perf_counter() - start:.1f}s")
    return observe_dir, run_ids, result


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_trains_one_epoch_with_two_ddp_workers(method: str, ddp_run, tracking) -> None:
    from mlflow import MlflowClient

    observe_dir, run_ids, result = ddp_run
    assert result.error is None
    ranks = [json.loads((observe_dir / method / f"rank{r}.json").read_text()) for r in range(WORKERS)]
    assert not (ranks[0]["returned"] or {}).get("error"), ranks[0]["returned"]
    metrics = ranks[0]["metrics"]
    assert metrics["epoch"] == 1 and 0.0 <= metrics["val_acc"] <= 1.0

    history = MlflowClient(tracking[0]).get_metric_history(run_ids[method], "val/acc")
    assert [m.step for m in history] == [1], "val_acc must be logged once per epoch, by rank 0 only"
    assert history[0].value == pytest.approx(metrics["val_acc"])
    assert ranks[0]["checkpoint_epoch"] == 1  # the state rank 0 reported as its checkpoint

    assert [r["rank"] for r in ranks] == list(range(WORKERS))
    assert all(r["world_size"] == r["process_group_size"] == WORKERS for r in ranks)
    assert all(r["wrapper"] == "DistributedDataParallel" for r in ranks)
    assert all(r["metrics"]["epoch"] == 1 for r in ranks)
    assert ranks[0]["own_train_loss"] != ranks[1]["own_train_loss"], "both ranks trained on the same shard"
    mean_loss = (ranks[0]["own_train_loss"] + ranks[1]["own_train_loss"]) / 2
    assert ranks[0]["metrics"]["train_loss"] == ranks[1]["metrics"]["train_loss"] == pytest.approx(mean_loss), \
        "the logged training loss must be the mean over ranks"
    assert ranks[0]["param_digest"] == ranks[1]["param_digest"], "weights diverged: gradients not all-reduced"
