"""A finished cross-method search written into a real MLflow store, without training.

The runs are created by skd_ray.results.tracking itself (parent run, child runs with params, tags,
per-epoch metrics and statuses) with made-up numbers, so plot and report tests read exactly
what a search writes, in milliseconds instead of a Ray search's minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skd_ray.results.store import MlflowStore
from skd_ray.results.tracking import SearchRuns, TrialTracker

THRESHOLDS = (0.5, 0.9, 0.99)
# Relative compute of BYOT's exits (standalone) and of reaching the last one with every head.
EXIT_COMPUTE = {"exit1": 0.3, "exit2": 0.6, "final": 1.0}
ENSEMBLE_COMPUTE = 1.1


@dataclass(frozen=True)
class FakeTrial:
    """One trial: its searched values, per-epoch val_acc and how it ended."""

    name: str
    method: str
    lr: float
    val_acc: tuple[float, ...]
    status: str = "completed"
    alpha: float | None = None  # byot only (a conditional parameter)


TRIALS = (
    FakeTrial("trial_00000", "byot", 0.05, (0.80, 0.90, 0.88), alpha=0.3),
    FakeTrial("trial_00001", "vanilla", 0.10, (0.70, 0.85, 0.87)),
    FakeTrial("trial_00002", "byot", 0.02, (0.60, 0.72), status="early_stopped", alpha=0.7),
    FakeTrial("trial_00003", "srdl", 0.15, (0.75, 0.80, 0.83)),
    FakeTrial("trial_00004", "vanilla", 1.0e4, (), status="failed"),
)
BEST = TRIALS[0]  # 0.90 at epoch 2


def epoch_metrics(trial: FakeTrial, epoch: int) -> dict[str, float]:
    """What engine.evaluate and fit report for one epoch (exit metrics for byot only)."""
    acc = trial.val_acc[epoch - 1]
    seen = trial.val_acc[:epoch]
    metrics = {"epoch": epoch, "train_loss": 1.0 / epoch, "val_acc": acc, "best_val_acc": max(seen)}
    if trial.method == "byot":
        metrics.update({"val_acc.exit1": acc - 0.2, "val_acc.exit2": acc - 0.1, "val_acc.ensemble": acc + 0.01})
        metrics.update({f"val_compute.{k}": v for k, v in EXIT_COMPUTE.items()})
        metrics["val_compute.ensemble"] = ENSEMBLE_COMPUTE
        for t in THRESHOLDS:
            metrics[f"val_acc.dynamic_t{t:g}"] = acc - 0.3 * (1 - t)
            metrics[f"val_compute.dynamic_t{t:g}"] = 0.3 + 0.8 * t
        for k in ("exit1", "exit2", "ensemble"):
            metrics[f"best_val_acc.{k}"] = max(a + {"exit1": -0.2, "exit2": -0.1, "ensemble": 0.01}[k] for a in seen)
    return metrics


def write_fake_search(uri: str, artifacts: Path, experiment: str = "fake",
                      trials: tuple[FakeTrial, ...] = TRIALS, legacy_names: bool = False) -> str:
    """Write a finished search of `trials` into `uri`, its artifacts under `artifacts` (not
    MLflow's default ./mlruns in the working directory); returns its parent run id.

    `legacy_names`: as a search logged before metric names were grouped and constants moved to
    the parent run wrote it (flat names, the early-exit sweep as metrics, every param on every
    trial), to check that such searches stay readable."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    c = MlflowClient(uri)
    c.create_experiment(experiment, artifact_location=(artifacts / experiment).as_uri())
    shared = {"train.epochs": 3, "data.name": "digits"}
    runs = SearchRuns.start(MlflowStore(uri), experiment, f"{experiment}_20250101-000000",
                            {"skd.space": "search_spaces/all.yaml", "skd.methods": "byot,vanilla,srdl"},
                            {"search.num_samples": len(trials), "search.seed": 0},
                            constants=None if legacy_names else shared)
    for trial in trials:
        flat = {"method": trial.method, "optim.lr": trial.lr, **shared}
        if trial.alpha is not None:
            flat["method.alpha"] = trial.alpha
            flat["method.exits"] = [1, 2]
        run_id = runs.start_trial(trial.name, trial.name, flat,
                                  {"skd.method": trial.method, "skd.trial_name": trial.name})
        tracker = TrialTracker(MlflowStore(uri), run_id, chart_threshold=0.9)
        for epoch in range(1, len(trial.val_acc) + 1):
            metrics = epoch_metrics(trial, epoch)
            if legacy_names:
                c.log_batch(run_id, metrics=[Metric(k, float(v), 0, epoch) for k, v in metrics.items()])
            else:
                tracker.log_epoch(epoch, metrics)
        runs.close(run_id, trial.status, "loss became nan" if trial.status == "failed" else None)
    runs.close(None, "completed")
    return runs.parent_run_id
