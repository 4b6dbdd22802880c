"""Every registered method trains one epoch with 2 DDP workers through Ray Train.

The trainer runs the real `skd_ray.trial.train_worker`; a thin wrapper only observes it on
each rank (the model `RaySession.prepare_model` returned, the rank's last report) and
writes what it saw to a file, so the test can check that the two ranks really formed a
process group, wrapped the method in DistributedDataParallel, trained on different shards
(different per-rank losses before they are averaged for logging, identical ones after) and
still ended with identical weights (gradients all-reduced).
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
    from skd_ray.tracking import get_or_create_experiment

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    return uri, get_or_create_experiment(uri, "ddp")


def observed_train_worker(loop_config: dict[str, Any]) -> Any:
    """`train_worker`, plus a record of what this rank did (written to `observe_dir`)."""
    import ray.train
    import torch

    from skd_ray import engine as engine_module
    from skd_ray import session as session_module
    from skd_ray.trial import train_worker

    seen: dict[str, Any] = {}
    cls = session_module.RaySession
    original_prepare, original_report = cls.prepare_model, cls.report

    def prepare_model(self: Any, model: Any) -> Any:
        wrapped = original_prepare(self, model)
        seen["model"], seen["wrapper"] = model, type(wrapped).__name__
        return wrapped

    def report(self: Any, metrics: dict[str, float], state: dict[str, Any], is_best: bool) -> None:
        seen["metrics"] = dict(metrics)
        original_report(self, metrics, state, is_best)

    original_mean = engine_module.mean_over_ranks

    def mean_over_ranks(metrics: dict[str, float], device: Any) -> dict[str, float]:
        seen["own_train_loss"] = metrics["train_loss"]
        return original_mean(metrics, device)

    # Each Ray Train worker is a process of its own that ends with the run: patching here
    # observes this rank only.
    cls.prepare_model, cls.report = prepare_model, report
    engine_module.mean_over_ranks = mean_over_ranks
    try:
        returned = train_worker(loop_config)
    finally:
        cls.prepare_model, cls.report = original_prepare, original_report
        engine_module.mean_over_ranks = original_mean
    ctx = ray.train.get_context()
    dist = torch.distributed
    trainable = [p.detach().cpu().contiguous() for p in seen["model"].parameters() if p.requires_grad]
    digest = hashlib.sha256(b"".join(p.numpy().tobytes() for p in trainable)).hexdigest()
    record = {
        "rank": ctx.get_world_rank(),
        "world_size": ctx.get_world_size(),
        "process_group_size": dist.get_world_size() if dist.is_initialized() else 1,
        "wrapper": seen["wrapper"],
        "param_digest": digest,
        "own_train_loss": seen["own_train_loss"],
        "train_loss": seen["metrics"]["train_loss"],
        "epoch": seen["metrics"]["epoch"],
    }
    out = Path(loop_config["observe_dir"]) / f"rank{record['rank']}.json"
    out.write_text(json.dumps(record))
    return returned


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_trains_one_epoch_with_two_ddp_workers(method: str, local_ray, tracking, tmp_path: Path) -> None:
    import ray.train
    from mlflow import MlflowClient
    from ray.train.torch import TorchTrainer

    from skd_ray.session import CHECKPOINT_FILE, load_state

    uri, experiment_id = tracking
    client = MlflowClient(uri)
    run_id = client.create_run(experiment_id, run_name=method).info.run_id
    flat = {"method": method, "data.name": "digits", "data.val_fraction": 0.2, "model.width": 4,
            "train.epochs": 1, "train.threads": 1}
    trainer = TorchTrainer(
        observed_train_worker,
        train_loop_config={"flat": flat, "tracking_uri": uri, "run_id": run_id, "observe_dir": str(tmp_path)},
        scaling_config=ray.train.ScalingConfig(num_workers=WORKERS, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name=f"ddp_{method}", storage_path=str(tmp_path / "storage")),
    )
    start = time.perf_counter()
    result = trainer.fit()
    print(f"{method}: trainer.fit() took {time.perf_counter() - start:.1f}s")

    assert result.error is None
    assert not (result.return_value or {}).get("error"), result.return_value
    assert result.metrics["epoch"] == 1 and 0.0 <= result.metrics["val_acc"] <= 1.0

    history = client.get_metric_history(run_id, "val_acc")
    assert [m.step for m in history] == [1], "val_acc must be logged once per epoch, by rank 0 only"
    assert history[0].value == pytest.approx(result.metrics["val_acc"])

    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as directory:
        state = load_state(Path(directory) / CHECKPOINT_FILE)
    assert state["epoch"] == 1

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORKERS)]
    assert [r["rank"] for r in ranks] == list(range(WORKERS))
    assert all(r["world_size"] == r["process_group_size"] == WORKERS for r in ranks)
    assert all(r["wrapper"] == "DistributedDataParallel" for r in ranks)
    assert all(r["epoch"] == 1 for r in ranks)
    assert ranks[0]["own_train_loss"] != ranks[1]["own_train_loss"], "both ranks trained on the same shard"
    mean_loss = (ranks[0]["own_train_loss"] + ranks[1]["own_train_loss"]) / 2
    assert ranks[0]["train_loss"] == ranks[1]["train_loss"] == pytest.approx(mean_loss), \
        "the logged training loss must be the mean over ranks"
    assert ranks[0]["param_digest"] == ranks[1]["param_digest"], "weights diverged: gradients not all-reduced"
