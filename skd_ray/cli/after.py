"""The commands that act on a finished search, and the steps of the multi-objective search.

`--final-top K --seeds S` retrains a finished search's K best configurations (final
evaluation), `--export-best DIR` writes its best model for plain PyTorch, and
`--multi-objective` turns a search into an accuracy/compute Pareto search (`skd-ray final`,
`export` and `pareto`). `skd_ray.cli.options` defines their options, `skd_ray.cli.main` owns
errors and exit codes; this module runs them.
Ray is imported only when a final evaluation runs (by `skd_ray.selection.final_eval`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from skd_ray.cli.common import EXIT_INTERRUPTED, check_writable, verbosity_of
from skd_ray.errors import SkdError
from skd_ray.results.names import Tags
from skd_ray.results.store import MlflowStore
from skd_ray.selection.export import ExportRequest, export_best
from skd_ray.selection.final_eval import FinalRequest, describe, plan_final, run_final_eval
from skd_ray.selection.final_summary import final_seeds
from skd_ray.selection.multi_objective import (
    DEFAULT_THRESHOLD,
    check_multi_objective,
    format_front,
    objectives,
    record_pareto_front,
)


def wants_finished_search(args: argparse.Namespace) -> bool:
    """True when the command acts on a finished search instead of starting one."""
    return args.final_top is not None or args.export_best is not None


def check_combination(args: argparse.Namespace) -> None:
    """Options that act on a finished search do not mix with starting or resuming one."""
    clash = [flag for flag, on in (("--debug", args.debug), ("--resume", args.resume),
                                   ("--multi-objective", args.multi_objective), ("--results", args.results)) if on]
    if wants_finished_search(args) and clash:
        raise SkdError(f"--final-top / --export-best act on a finished search and cannot be combined with {clash[0]}",
                       "run them as a separate command")


def run_finished_search(args: argparse.Namespace, store: MlflowStore, experiment: str) -> int:
    """--export-best, then --final-top, on the latest (or --search) search of `experiment`."""
    store.check_reachable()
    code = 0
    if args.export_best is not None:
        export_best_model(args, store, experiment)
    if args.final_top is not None:
        code = final_evaluation(args, store, experiment)
    return code


def export_best_model(args: argparse.Namespace, store: MlflowStore, experiment: str) -> None:
    outcome = export_best(ExportRequest(store.uri, experiment, args.export_best, args.search, args.export_keep_exits))
    src = outcome.metadata["source"]
    print(f"exported {src['trial']} of {src['search']} (best val_acc {src['best_val_acc']:.4f}, epoch "
          f"{src['checkpoint_epoch']}) to {outcome.directory}: model.pt2, state_dict.pt, config.json, "
          "metadata.json, README.md")


def final_evaluation(args: argparse.Namespace, store: MlflowStore, experiment: str) -> int:
    seeds = final_seeds(args.seeds, args.seed)
    storage = str(Path(args.storage).resolve())
    req = FinalRequest(
        tracking_uri=store.uri, experiment=experiment, storage=storage, top_k=args.final_top, seeds=seeds,
        search=args.search, workers=args.workers_per_trial, cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker, max_concurrent=args.max_concurrent, address=args.address,
        verbosity=verbosity_of(args))
    plan = plan_final(req)  # the search, its best trials and their configs: bad input fails before Ray
    check_writable(storage)
    outcome = run_final_eval(req, plan)
    print()
    print(describe(outcome, seeds))
    if outcome.interrupted:
        print("interrupted: the finished retrainings are in MLflow (summarised above); a new --final-top "
              "retrains every configuration", file=sys.stderr)
        return EXIT_INTERRUPTED
    finished = sum(len(s.test_acc) for s in outcome.summaries)
    return 0 if finished else 1


def search_objectives(args: argparse.Namespace, space: Any) -> list[tuple[str, str]]:
    """The objectives of a --multi-objective search (checked against the space), else [].
    The space's trials then chart the early-exit policy at that threshold in MLflow, where the
    Pareto front is read from."""
    if not args.multi_objective:
        return []
    threshold = args.compute_threshold if args.compute_threshold is not None else DEFAULT_THRESHOLD
    check_multi_objective(space, threshold)
    space.fixed["eval.chart_threshold"] = threshold
    return objectives(threshold)


def objective_tags(objs: list[tuple[str, str]]) -> dict[str, str]:
    """Parent-run tags recording a multi-objective search's objectives."""
    return {Tags.OBJECTIVES: ",".join(f"{m}:{d}" for m, d in objs)} if objs else {}


def report_pareto_front(store: MlflowStore, experiment_id: str, parent_run_id: str,
                        objs: list[tuple[str, str]]) -> None:
    """Tag, log and print the Pareto front of a finished multi-objective search."""
    trials = record_pareto_front(store, experiment_id, parent_run_id, objs)
    front = sum(t.on_front for t in trials)
    print(f"Pareto front ({front} of {len(trials)} completed trials; tagged skd.pareto=true in MLflow, "
          "pareto_front.json/.csv on the search run):")
    print(format_front(trials, objs))
