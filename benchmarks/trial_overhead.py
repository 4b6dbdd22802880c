"""Trial start-up and search efficiency on a warm local Ray cluster, through the real search.

Four searches run back to back on one local cluster, each with trials one at a time:
one-worker trials trained in the Tune trial process (the default), the same trials through
Ray Train (`--always-ray-train`, for the side-by-side ratio), two-worker DDP trials in the
search's persistent DDP pool (the default) and the same through a new Ray Train run per
trial (`--train-run-per-trial`). For every trial:

- start-up: Tune starting the trial (driver clock) to the end of its first optimiser step
  (the child run's start time plus its `time_startup_s` metric);
- turnaround: the previous trial's last report reaching the driver to this trial's start;
- training time: the sum of its epochs' `time_epoch_s`.

Search efficiency is the sum of the trials' training time over the search's wall time. The
first trial of each search is a warm-up (process start, imports) and is reported apart;
medians are over the others. The last line is
`startup_1w_s=<x> startup_2w_s=<y> search_efficiency=<z>` (z: the one-worker search).

    python benchmarks/trial_overhead.py            # ~5 minutes on 2 CPU cores
    python benchmarks/trial_overhead.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from ray import tune

from skd_ray.results.store import MlflowStore
from skd_ray.search.cluster.connect import connect_ray
from skd_ray.search.request import SearchRequest
from skd_ray.search.space.definition import load_space
from skd_ray.search.tuning.tuner import run_search
from skd_ray.training.metrics import TIME_EPOCH_S, TIME_STARTUP_S

# Nothing here should wait for resources on a warm local cluster: a search stuck behind
# resources ends with one error line within two minutes instead of running on.
RESOURCE_WAIT_S = 120.0


class TrialClock(tune.Callback):
    """Driver-side wall-clock times of every trial's start and of its latest result."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.last_result: dict[str, float] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started[trial.trial_id] = time.time()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.last_result[trial.trial_id] = time.time()


def write_space(path: Path, epochs: int) -> Path:
    """Vanilla on digits with a search over the learning rate: short, real trials."""
    path.write_text(yaml.safe_dump({
        "description": "trial start-up benchmark",
        "fixed": {"method": "vanilla", "data.name": "digits", "model.backbone": "resnet_small",
                  "model.width": 8, "train.epochs": epochs, "train.batch_size": 64},
        "params": {"optim.lr": {"type": "float", "low": 0.01, "high": 0.2, "log": True, "default": 0.05}},
    }))
    return path


def measure(name: str, space_path: Path, root: Path, trials: int, workers: int, always_ray_train: bool,
            uri: str, ddp_pool: bool = True) -> dict[str, Any]:
    """Run one search with trials one at a time; per-trial start-up, turnaround, training time."""
    clock = TrialClock()
    req = SearchRequest(space=load_space(space_path), storage=str(root / "results"), tracking_uri=uri,
                        experiment=name, search_name=name, num_samples=trials, workers=workers,
                        max_concurrent=1, grace_period=100, always_ray_train=always_ray_train,
                        ddp_pool=ddp_pool, callbacks=[clock], resource_wait_s=RESOURCE_WAIT_S)
    wall0 = time.time()
    outcome = run_search(req)
    wall = time.time() - wall0
    mlflow = MlflowStore(uri).client
    runs = mlflow.search_runs([outcome.experiment_id], f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'")
    rows = []
    for run in runs:
        trial_id = run.data.tags["skd.ray_trial_id"]
        startup = MlflowStore(uri).metric_history(run.info.run_id, TIME_STARTUP_S)
        epochs = MlflowStore(uri).metric_history(run.info.run_id, TIME_EPOCH_S)
        first_step = run.info.start_time / 1000 + startup[0].value
        rows.append({"start": clock.started[trial_id], "startup": first_step - clock.started[trial_id],
                     "train": sum(m.value for m in epochs), "last": clock.last_result[trial_id]})
    rows.sort(key=lambda r: r["start"])
    for prev, row in zip(rows, rows[1:]):
        row["turnaround"] = row["start"] - prev["last"]
    efficiency = sum(r["train"] for r in rows) / wall
    later = rows[1:] or rows
    summary = {
        "first_startup": rows[0]["startup"],
        "startup": statistics.median(r["startup"] for r in later),
        "turnaround": statistics.median(r.get("turnaround", 0.0) for r in later),
        "efficiency": efficiency, "wall": wall, "errors": outcome.num_errors, "trials": len(rows),
    }
    print(f"{name}: trials={len(rows)} errors={outcome.num_errors} wall={wall:.1f}s "
          f"first_trial_startup={summary['first_startup']:.2f}s median_startup={summary['startup']:.2f}s "
          f"median_turnaround={summary['turnaround']:.2f}s search_efficiency={efficiency:.3f}", flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="trials per search (the first is a warm-up)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 trials of 1 epoch per search")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs = 2, 1
    with tempfile.TemporaryDirectory(prefix="skd_trial_overhead_") as tmp:
        root = Path(tmp)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        space = write_space(root / "space.yaml", args.epochs)
        connect_ray(None, temp_dir=str(root / "ray"))
        in_place = measure("one_worker_in_trial", space, root, args.trials, 1, False, uri)
        via_train = measure("one_worker_ray_train", space, root, args.trials, 1, True, uri)
        two = measure("two_workers_ddp_pool", space, root, args.trials, 2, False, uri)
        two_per_run = measure("two_workers_train_run_per_trial", space, root, args.trials, 2, False, uri,
                              ddp_pool=False)
        import ray

        ray.shutdown()
    print(f"one-worker start-up, Ray Train / in the trial process: "
          f"{via_train['startup'] / in_place['startup']:.1f}x "
          f"({via_train['startup']:.2f}s vs {in_place['startup']:.2f}s)")
    print(f"two-worker start-up, a Train run per trial / the DDP pool: "
          f"{two_per_run['startup'] / two['startup']:.1f}x "
          f"({two_per_run['startup']:.2f}s vs {two['startup']:.2f}s; first pool trial {two['first_startup']:.2f}s)")
    print(f"startup_1w_s={in_place['startup']:.2f} startup_2w_s={two['startup']:.2f} "
          f"search_efficiency={in_place['efficiency']:.3f}")


if __name__ == "__main__":
    main()
