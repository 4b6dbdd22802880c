"""Search efficiency: TPE + ASHA against random search without early stopping, same trial count.

Both searches tune `vanilla` on a fixed Fashion-MNIST subset, run through the real search
(Ray Tune + Optuna + MLflow) one after the other on one local cluster, with the same seed
and trial count, and neither starts from the space's defaults (they are already good here:
both searches would "find" the answer in their first trial). Two spaces: `narrow` (learning
rate, weight decay, momentum, label smoothing around a known-good SGD recipe: most random
draws train well) and `wide` (the same plus the batch size, over the ranges one searches with
little prior knowledge: much of it trains badly). Every epoch any trial trains is read back
from MLflow with its timestamp; walking each search's epochs in the order they finished, the
benchmark counts the epochs spent until some trial first reached within 0.5 points of the best
validation accuracy that either search found (a search that never gets there is charged the
full budget, every trial to its last epoch). One pair of searches is a single draw of a noisy
quantity, so the pair is repeated with `--repeats` seeds and the ratio is of the summed
epochs. The validation set must be large enough that its noise is small next to the 0.5
points (`--val-fraction`: 3,000 images by default, +-0.7 points; 0.1 = 6,000 images). It also
prints the fraction of training time the epochs spent waiting for data. The last line is
`epochs_ratio=<tpe_asha epochs / random epochs>`.

    python benchmarks/search_efficiency.py            # narrow, 12 trials x 6 epochs: ~7 minutes on 2 CPU cores
    python benchmarks/search_efficiency.py --space wide --trials 36 --val-fraction 0.1   # ~26 minutes
    python benchmarks/search_efficiency.py --quick    # smoke run (digits, tiny budget)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from skd_ray.results.store import MlflowStore
from skd_ray.search.cluster.connect import connect_ray
from skd_ray.search.request import SearchRequest
from skd_ray.search.space.definition import load_space
from skd_ray.search.tuning.tuner import run_search
from skd_ray.training.metrics import VAL_ACC

TOLERANCE = 0.005  # 0.5 points of accuracy


# "narrow": ranges around a known-good SGD recipe, where most random draws already train well;
# "wide": what one tunes with little prior knowledge (four decades of learning rate, the batch
# size too), where a large part of the space trains badly or diverges.
SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "narrow": {
        "optim.lr": {"type": "float", "low": 0.001, "high": 0.5, "log": True, "default": 0.05},
        "optim.weight_decay": {"type": "float", "low": 1.0e-6, "high": 1.0e-2, "log": True, "default": 5.0e-4},
        "optim.momentum": {"type": "float", "low": 0.0, "high": 0.99, "default": 0.9},
        "method.label_smoothing": {"type": "float", "low": 0.0, "high": 0.3, "default": 0.0},
    },
    "wide": {
        "optim.lr": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True, "default": 0.05},
        "optim.weight_decay": {"type": "float", "low": 1.0e-6, "high": 1.0e-1, "log": True, "default": 5.0e-4},
        "optim.momentum": {"type": "float", "low": 0.0, "high": 0.99, "default": 0.9},
        "method.label_smoothing": {"type": "float", "low": 0.0, "high": 0.5, "default": 0.0},
        "train.batch_size": {"type": "categorical", "choices": [32, 64, 128, 256], "default": 64},
    },
}


def write_space(path: Path, space: str, dataset: str, epochs: int, subset: int, val_fraction: float) -> Path:
    params = SPACES[space]
    fixed = {"method": "vanilla", "data.name": dataset, "data.train_subset": subset,
             "data.val_fraction": val_fraction, "model.backbone": "resnet_small", "model.width": 8,
             "train.epochs": epochs, "train.batch_size": 64, "eval.batch_size": 512}
    path.write_text(yaml.safe_dump({
        "description": f"search-efficiency benchmark: vanilla on a fixed subset, {space} space",
        "fixed": {key: value for key, value in fixed.items() if key not in params},
        "params": params,
    }))
    return path


def epoch_log(uri: str, experiment_id: str, parent_run_id: str) -> tuple[list[tuple[int, float, str]], list[float]]:
    """(timestamp ms, val_acc, run id) of every epoch any trial of the search trained, in time
    order, and every epoch's fraction of training time spent waiting for data."""
    mlflow = MlflowStore(uri).client
    runs = mlflow.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    points = [(m.timestamp, m.value, run.info.run_id)
              for run in runs for m in MlflowStore(uri).metric_history(run.info.run_id, VAL_ACC)]
    waits = [m.value for run in runs for m in MlflowStore(uri).metric_history(run.info.run_id, "time_data_frac")]
    return sorted(points), waits


def epochs_to_reach(points: list[tuple[int, float, str]], target: float) -> tuple[int, bool]:
    """Epochs spent until the first epoch at or above `target` (all of them if never)."""
    for spent, (_, acc, _) in enumerate(points, start=1):
        if acc >= target:
            return spent, True
    return len(points), False


def run(name: str, space: Path, root: Path, uri: str, trials: int, sampler: str, early_stopping: bool,
        seed: int, grace_period: int, reduction_factor: int) -> dict[str, Any]:
    req = SearchRequest(space=load_space(space), storage=str(root / "results"), tracking_uri=uri,
                        experiment=name, search_name=name, num_samples=trials, seed=seed, grace_period=grace_period,
                        reduction_factor=reduction_factor, sampler=sampler, early_stopping=early_stopping,
                        start_from_defaults=False)
    start = time.time()
    outcome = run_search(req)
    points, waits = epoch_log(uri, outcome.experiment_id, outcome.parent_run_id)
    if not points:
        raise SystemExit(f"{name}: no trial trained an epoch ({outcome.num_errors} failed; the reason is above). "
                         "Is Fashion-MNIST installed (`apt-get install dataset-fashion-mnist`)?")
    summary = {"points": points, "wall": time.time() - start, "best": max(a for _, a, _ in points),
               "trials": outcome.num_trials, "errors": outcome.num_errors}
    print(f"{name}: trials={outcome.num_trials} errors={outcome.num_errors} epochs={len(points)} "
          f"best_val_acc={summary['best']:.4f} wall={summary['wall']:.0f}s "
          f"data_wait_frac_median={statistics.median(waits):.4f} max={max(waits):.4f}", flush=True)
    return summary


def compare(tpe: dict[str, Any], rnd: dict[str, Any], full_budget: int) -> tuple[int, int, int, int]:
    """Print one pair's outcome; return (epochs charged, missed) for tpe_asha, then random.

    A search that never reached the target is charged `full_budget` (every trial run to the
    end, what random search without early stopping always spends): charging it only the
    epochs it did spend would reward giving up early.
    """
    best = max(tpe["best"], rnd["best"])
    target = best - TOLERANCE
    charged: list[int] = []
    for name, result in (("tpe_asha", tpe), ("random_no_stopping", rnd)):
        epochs, hit = epochs_to_reach(result["points"], target)
        reached = f"reached after {epochs} epochs" if hit else f"never reached (charged {full_budget} epochs)"
        good_trials = len({run for _, acc, run in result["points"] if acc >= target})
        print(f"  {name}: {reached}; {len(result['points'])} epochs in all (target {target:.4f}); "
              f"{good_trials} of {result['trials']} trials got there")
        charged += [epochs if hit else full_budget, 0 if hit else 1]
    return charged[0], charged[1], charged[2], charged[3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=6, help="epoch budget of a full trial")
    parser.add_argument("--subset", type=int, default=2000, help="training images (fixed random subset)")
    parser.add_argument("--space", choices=sorted(SPACES), default="narrow", help="which search space")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="share of the training set held out for validation (Fashion-MNIST: 0.05 = 3,000 images)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first pair (then seed+1, ...)")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of searches, one seed each")
    parser.add_argument("--grace-period", type=int, default=SearchRequest.grace_period,
                        help="epochs before ASHA may stop a trial (default: run_search.py's)")
    parser.add_argument("--reduction-factor", type=int, default=SearchRequest.reduction_factor,
                        help="ASHA keeps 1 in this many trials at each rung (default: run_search.py's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: digits, one pair of 3 trials of 2 epochs")
    args = parser.parse_args()
    dataset = "fashion-mnist"
    if args.quick:
        dataset, args.trials, args.epochs, args.subset, args.repeats, args.val_fraction = "digits", 3, 2, 0, 1, 0.2
    totals = {"tpe_asha": [0, 0, 0], "random_no_stopping": [0, 0, 0]}  # [to reach, in all, misses]
    with tempfile.TemporaryDirectory(prefix="skd_search_eff_") as tmp:
        root = Path(tmp)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        space = write_space(root / "space.yaml", args.space, dataset, args.epochs, args.subset, args.val_fraction)
        connect_ray(None, temp_dir=str(root / "ray"))
        for seed in range(args.seed, args.seed + args.repeats):
            tpe = run(f"tpe_asha_s{seed}", space, root, uri, args.trials, "tpe", True, seed, args.grace_period,
                      args.reduction_factor)
            rnd = run(f"random_no_stopping_s{seed}", space, root, uri, args.trials, "random", False, seed,
                      args.grace_period, args.reduction_factor)
            tpe_reach, tpe_miss, rnd_reach, rnd_miss = compare(tpe, rnd, args.trials * args.epochs)
            for name, reach, result, miss in (("tpe_asha", tpe_reach, tpe, tpe_miss),
                                              ("random_no_stopping", rnd_reach, rnd, rnd_miss)):
                totals[name][0] += reach
                totals[name][1] += len(result["points"])
                totals[name][2] += miss
        import ray

        ray.shutdown()
    (tpe_reach, tpe_all, tpe_miss), (rnd_reach, rnd_all, rnd_miss) = totals["tpe_asha"], totals["random_no_stopping"]
    print(f"dataset={dataset} space={args.space} val_fraction={args.val_fraction} trials={args.trials} "
          f"max_epochs={args.epochs} repeats={args.repeats} "
          f"grace_period={args.grace_period} reduction_factor={args.reduction_factor}: "
          f"epochs to reach, summed: tpe_asha={tpe_reach} random_no_stopping={rnd_reach}; "
          f"in all: tpe_asha={tpe_all} random_no_stopping={rnd_all}; "
          f"never reached: tpe_asha={tpe_miss}/{args.repeats} random_no_stopping={rnd_miss}/{args.repeats}")
    print(f"total_epochs_ratio={tpe_all / rnd_all:.3f}")
    print(f"epochs_ratio={tpe_reach / rnd_reach:.3f}")


if __name__ == "__main__":
    main()
