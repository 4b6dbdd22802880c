"""A Ray Train trial that fails mid-run restarts from its last checkpoint and ends exactly
where an uninterrupted run ends, with one MLflow history (no repeated epochs)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from skd_ray.results.store import MlflowStore

pytestmark = pytest.mark.slow

FLAT = {"method": "srdl", "data.name": "digits", "data.val_fraction": 0.2, "model.width": 4,
        "train.epochs": 4, "train.threads": 1, "method.snapshot_at": 0.5}


@pytest.fixture(scope="module")
def local_ray():
    import os

    import ray
    import ray.cloudpickle

    # Workers cannot import this test module: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    tmp = Path(f"/tmp/skdr{os.getpid()}")
    ray.init(num_cpus=2, _temp_dir=str(tmp), runtime_env={"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}})
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def crash_once_in_epoch_3(loop_config: dict[str, Any]) -> None:
    """Like trial.train_worker, but the first attempt dies after training epoch 3, before
    reporting it: the restart must resume from the epoch-2 checkpoint."""
    import ray.train

    from skd_ray.results.tracking import TrialTracker
    from skd_ray.search.execution.sessions import RaySession
    from skd_ray.training.engine import fit
    from skd_ray.training.resolve import resolve_config

    class CrashingSession(RaySession):
        def report(self, metrics: dict[str, float], state: dict[str, Any], is_best: bool) -> None:
            if metrics["epoch"] == 3 and not loop_config["first_attempt_marker"].exists():
                loop_config["first_attempt_marker"].touch()
                raise RuntimeError("simulated worker failure")
            super().report(metrics, state, is_best)

    first = ray.train.get_checkpoint() is None
    cfg = resolve_config(loop_config["flat"])
    sink = TrialTracker(loop_config["store"], loop_config["run_id"])
    session = CrashingSession(cfg.train.device, sink) if first else RaySession(cfg.train.device, sink)
    fit(cfg, session)


def run_trainer(fn: Any, tmp_path: Path, name: str, uri: str, run_id: str) -> Any:
    import ray.train
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        fn,
        train_loop_config={"flat": FLAT, "store": MlflowStore(uri), "run_id": run_id,
                           "first_attempt_marker": tmp_path / f"{name}.crashed"},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name=name, storage_path=str(tmp_path / "storage"),
                                       failure_config=ray.train.FailureConfig(max_failures=1)),
    )
    return trainer.fit()


def test_failed_worker_resumes_from_checkpoint_exactly(local_ray, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from skd_ray.search.execution.executors import train_worker
    from skd_ray.training.checkpoint import CHECKPOINT_FILE, load_state

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = MlflowStore(uri).experiment_id("resume", create=True)
    runs = {k: client.create_run(exp).info.run_id for k in ("plain", "crashed")}
    plain = run_trainer(train_worker, tmp_path, "plain", uri, runs["plain"])
    crashed = run_trainer(crash_once_in_epoch_3, tmp_path, "crashed", uri, runs["crashed"])
    assert (tmp_path / "crashed.crashed").exists(), "the first attempt did not fail"
    history = client.get_metric_history(runs["crashed"], "val/acc")
    assert sorted(m.step for m in history) == [1, 2, 3, 4], "epochs before the checkpoint were re-run"
    plain_hist = {m.step: m.value for m in client.get_metric_history(runs["plain"], "val/acc")}
    assert {m.step: m.value for m in history} == plain_hist
    with plain.checkpoint.as_directory() as a, crashed.checkpoint.as_directory() as b:
        sa, sb = load_state(Path(a) / CHECKPOINT_FILE), load_state(Path(b) / CHECKPOINT_FILE)
    import torch

    assert sa["epoch"] == sb["epoch"] == 4
    # A resumed search asks whether a trial's Train run already trained every epoch.
    from skd_ray.search.execution.executors import finished_train_metrics

    finished = finished_train_metrics(str(tmp_path / "storage" / "plain"), 4)
    assert finished is not None and finished["epoch"] == 4 and finished["val_acc"] == plain_hist[4]
    assert finished_train_metrics(str(tmp_path / "storage" / "plain"), 5) is None
    assert finished_train_metrics(str(tmp_path / "storage" / "never_ran"), 4) is None
    assert int(sb["model"]["stage"]) == 2  # SRDL's stage survived the restart
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), key
    momentum_a = [v["momentum_buffer"] for v in sa["optimizer"]["state"].values()]
    momentum_b = [v["momentum_buffer"] for v in sb["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b))
