"""The commands that train: `--debug` (one configuration in this process, no Ray), a new search
on Ray and `--resume`. Ray is imported only inside the functions that need it, so `--debug`
never loads it."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from skd_ray.cli.after import objective_tags, report_pareto_front, search_objectives
from skd_ray.cli.common import EXIT_INTERRUPTED, check_writable, print_browse_hint, show_results
from skd_ray.errors import SkdError
from skd_ray.results.tracking import (
    TrialTracker,
    check_reachable,
    finish_trial_run,
    start_search_run,
    start_trial_run,
)
from skd_ray.search.request import SearchRequest
from skd_ray.search.state import latest_search_name, saved_request
from skd_ray.training.engine import fit
from skd_ray.training.resolve import resolve_config
from skd_ray.training.session import LocalSession


def run_debug(space: Any, uri: str, experiment: str) -> int:
    """One configuration (the space's defaults + overrides) in this process, logged to MLflow."""

    cfg = resolve_config(space.defaults())
    flat = cfg.to_flat()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    exp_id, parent = start_search_run(uri, experiment, f"debug-{stamp}", {"skd.mode": "debug"},
                                      {"search.space": space.path})
    run_id = start_trial_run(uri, exp_id, parent, f"debug-{stamp}", "debug", flat,
                             {"skd.method": cfg.method, "skd.seed": str(cfg.train.seed), "skd.trial_name": "debug"})
    print(f"debug: {cfg.method} on {cfg.data.name} ({cfg.model.backbone}), {cfg.train.epochs} epochs, in-process")
    start = time.perf_counter()
    try:
        fit(cfg, LocalSession(cfg.train.device, TrialTracker(uri, run_id), total_epochs=cfg.train.epochs))
    except SkdError as err:
        finish_trial_run(uri, run_id, "failed", str(err))
        finish_trial_run(uri, parent, "failed", str(err))
        raise
    finish_trial_run(uri, run_id, "completed")
    finish_trial_run(uri, parent, "completed")
    print(f"debug run finished in {time.perf_counter() - start:.1f}s; MLflow run {run_id}")
    print_browse_hint(uri, experiment)
    return 0


def run_ray_search(args: argparse.Namespace, space: Any, uri: str, experiment: str) -> int:
    objectives = search_objectives(args, space)  # [] unless --multi-objective; checked before Ray starts
    storage = str(Path(args.storage).resolve())
    check_writable(storage)
    req = SearchRequest(space=space, storage=storage, tracking_uri=uri, experiment=experiment,
                        search_name=f"{experiment}_{time.strftime('%Y%m%d-%H%M%S')}",
                        num_samples=args.num_samples, workers=args.workers_per_trial,
                        cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                        max_concurrent=args.max_concurrent, address=args.address,
                        seed=args.seed if args.seed is not None else 0, grace_period=args.grace_period,
                        always_ray_train=args.always_ray_train, ddp_pool=not args.train_run_per_trial,
                        sampler=args.sampler,
                        early_stopping=not args.no_early_stopping,
                        start_from_defaults=not args.no_default_trial, objectives=objectives)
    req.extra_tags = {**req.extra_tags, **objective_tags(objectives)}
    return execute_search(req)


def resume_search(args: argparse.Namespace, experiment: str) -> int:
    """Continue the latest search of `experiment` with the settings it was started with; only
    where things are (--storage, --address, --mlflow-uri) comes from this command line."""
    storage = str(Path(args.storage).resolve())
    check_writable(storage)
    req = saved_request(storage, latest_search_name(storage, experiment))
    req.address = args.address
    if args.mlflow_uri:
        req.tracking_uri = args.mlflow_uri
    check_reachable(req.tracking_uri)
    print(f"resuming {req.search_name} with its saved settings ({req.space.path}, {req.num_samples} trials, "
          f"{req.workers} worker(s) per trial); other flags of this command are not used")
    return execute_search(req)


def execute_search(req: Any) -> int:
    """Run (or resume) `req` on Ray, then print its leaderboard (and Pareto front)."""
    from skd_ray.search.driver import run_search  # local: loads Ray, which --debug must not

    outcome = run_search(req)
    print()
    print(f"search {req.search_name}: {outcome.num_trials} trials, {outcome.num_errors} failed; "
          f"results in {outcome.experiment_dir}")
    show_results(req.tracking_uri, req.experiment, outcome.parent_run_id)
    if req.objectives and not outcome.interrupted:
        report_pareto_front(req.tracking_uri, outcome.experiment_id, outcome.parent_run_id, req.objectives)
    if outcome.interrupted:
        print("interrupted: finished trials are kept in MLflow; continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if outcome.num_errors < outcome.num_trials else 1
