"""How a search scales with its number of trials: wall time, the marginal cost of one more trial,
the share of the wall time spent training, and how long its results take to read back.

Searches of N tiny trials (`vanilla` on ~200 digits images, 2 epochs, TPE + ASHA, 2 trials at
once on a 2-CPU machine) run one after the other through the real search on one local Ray
cluster, each into its own MLflow SQLite store. For every N it prints:

- `wall`: `run_search` from start to return (the end-of-search summary and plots included);
- `tail`: the last trial ending to `run_search` returning (summary and plots);
- `driver_cpu`: CPU seconds of the driver process (Tune's loop, its callbacks, Optuna, the
  summary), less sensitive to other work on the machine than wall time;
- `per_trial`: the marginal wall time of one more trial, the slope between this N and the
  previous one, and what that is of a trial slot (`x concurrency`);
- `train_frac`: the sum of every trial's epoch times (`time_epoch_s`, read back from MLflow)
  over `wall x concurrency`, the share of the trial slots spent training;
- `results` and `report`: `skd-ray results` and `skd-ray results --report DIR` on the finished
  search, each a fresh process as a user runs it, and the CPU seconds each took.

The load average is printed beside each search: on a shared machine it says how much of the
wall time other work took. The last line is
`per_trial_s=<slope between the two largest N> results_s=<x> report_s=<y>` (at the largest N).

    python benchmarks/scale.py                    # 16, 64, 256 trials: ~4 minutes on 2 CPU cores
    python benchmarks/scale.py --large            # and 1000 trials
    python benchmarks/scale.py --sizes 16,1000    # any sizes
    python benchmarks/scale.py --quick            # smoke run: 2 and 4 trials of 1 epoch
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
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
from skd_ray.training.metrics import TIME_EPOCH_S

CONCURRENCY = 2
SIZES = (16, 64, 256)
LARGE = 1000


class LastTrialEnd(tune.Callback):
    """Driver-side wall-clock time of the latest trial end."""

    def __init__(self) -> None:
        self.at = 0.0

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.at = time.time()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.at = time.time()


def write_space(path: Path, epochs: int, subset: int) -> Path:
    """Vanilla on a fixed digits subset, three searched values as in search_spaces/vanilla.yaml."""
    path.write_text(yaml.safe_dump({
        "description": "scale benchmark: tiny vanilla trials",
        "fixed": {"method": "vanilla", "data.name": "digits", "data.val_fraction": 0.2, "data.train_subset": subset,
                  "model.backbone": "resnet_small", "model.width": 8, "train.epochs": epochs,
                  "train.batch_size": 64},
        "params": {
            "method.label_smoothing": {"type": "float", "low": 0.0, "high": 0.3, "default": 0.0},
            "optim.lr": {"type": "float", "low": 0.01, "high": 0.2, "log": True, "default": 0.05},
            "optim.weight_decay": {"type": "float", "low": 1.0e-5, "high": 1.0e-3, "log": True, "default": 5.0e-4},
        },
    }))
    return path


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def training_seconds(store: MlflowStore, run_ids: list[str]) -> float:
    """Sum of every epoch time of the runs."""
    return sum(m.value for history in store.metric_histories(run_ids, TIME_EPOCH_S).values() for m in history)


def timed_command(args: list[str], log: Path) -> tuple[float, float]:
    """(wall, CPU) seconds `skd-ray <args>` took as a new process; its output goes to `log`. The
    CPU seconds (user + system) are what the command itself needed, whatever else ran beside it."""
    cli = Path(sys.executable).with_name("skd-ray")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "skd_ray.cli.main"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("a") as out:
        proc = subprocess.run(command + args, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"skd-ray {' '.join(args)} failed (exit {proc.returncode}); see {log}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(n: int, space_path: Path, root: Path) -> dict[str, float]:
    """One search of `n` trials, then `results` and `results --report` on it."""
    name = f"scale_{n}"
    uri = f"sqlite:///{root / name}.db"
    log = root / f"{name}.log"
    last = LastTrialEnd()
    load_before = load()
    req = SearchRequest(space=load_space(space_path), storage=str(root / "results"), tracking_uri=uri,
                        experiment=name, search_name=name, num_samples=n, max_concurrent=CONCURRENCY,
                        callbacks=[last], resource_wait_s=300.0)
    start, cpu0 = time.time(), time.process_time()
    with log.open("w") as out, contextlib.redirect_stdout(out):  # one line per trial event: kept in the log
        outcome = run_search(req)
    wall, cpu = time.time() - start, time.process_time() - cpu0
    store = MlflowStore(uri)
    runs = store.search_all([outcome.experiment_id], f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'")
    train = training_seconds(store, [r.info.run_id for r in runs])
    common = ["results", "--experiment", name, "--mlflow-uri", uri]
    (results_s, results_cpu), (report_s, report_cpu) = (timed_command(common, log), timed_command(
        [*common, "--report", str(root / f"{name}_report")], log))
    row = {"n": n, "runs": len(runs), "errors": outcome.num_errors, "wall": wall, "cpu": cpu,
           "tail": start + wall - last.at if last.at else float("nan"), "train": train,
           "train_frac": train / (wall * CONCURRENCY), "results": results_s, "report": report_s,
           "results_cpu": results_cpu, "report_cpu": report_cpu}
    print(f"trials={n} runs={len(runs)} errors={outcome.num_errors} wall={wall:.1f}s driver_cpu={cpu:.1f}s "
          f"tail={row['tail']:.1f}s train={train:.1f}s train_frac={row['train_frac']:.3f} results={results_s:.1f}s "
          f"(cpu {results_cpu:.1f}s) report={report_s:.1f}s (cpu {report_cpu:.1f}s) "
          f"(load average {load_before} before, {load()} after)", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="trial counts, comma-separated")
    parser.add_argument("--large", action="store_true", help=f"also a search of {LARGE} trials")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=200, help="training images (a fixed digits subset)")
    parser.add_argument("--keep", metavar="DIR", help="keep the stores, logs and reports in DIR")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 and 4 trials of 1 epoch")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()} | ({LARGE} if args.large else set()))
    if args.quick:
        sizes, args.epochs = [2, 4], 1
    print(f"{os.cpu_count()} CPUs, {CONCURRENCY} trials at once, {args.epochs} epochs of {args.subset} images per "
          f"trial; load average {load()}", flush=True)
    tmp = tempfile.mkdtemp(prefix="skd_scale_")
    root = Path(tmp)
    try:
        space = write_space(root / "space.yaml", args.epochs, args.subset)
        connect_ray(None, temp_dir=str(root / "ray"), log_to_driver=False)
        rows = [measure(n, space, root) for n in sizes]
        import ray

        ray.shutdown()
    finally:
        if args.keep:
            shutil.copytree(root, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("ray"))
        shutil.rmtree(root, ignore_errors=True)
    print("trials  wall_s  per_trial_s  slot_s  driver_cpu_per_trial_s  train_per_trial_s  train_frac  "
          "results_s (cpu)  report_s (cpu)")
    for prev, row in zip([None, *rows], rows):
        slope = (row["wall"] - prev["wall"]) / (row["n"] - prev["n"]) if prev else float("nan")
        cpu_slope = (row["cpu"] - prev["cpu"]) / (row["n"] - prev["n"]) if prev else float("nan")
        row["slope"] = slope
        print(f"{row['n']:>6}  {row['wall']:>6.1f}  {slope:>11.3f}  {slope * CONCURRENCY:>6.2f}  {cpu_slope:>22.3f}  "
              f"{row['train'] / row['n']:>17.3f}  {row['train_frac']:>10.3f}  "
              f"{row['results']:>9.1f} ({row['results_cpu']:4.1f})  {row['report']:>8.1f} ({row['report_cpu']:4.1f})")
    top = rows[-1]
    print(f"per_trial_s={top['slope']:.3f} results_s={top['results']:.2f} report_s={top['report']:.2f}")


if __name__ == "__main__":
    main()
