"""The commands that train: `--debug` (one configuration in this process, no Ray), a new search
on Ray and `--resume`. Ray is imported only inside the functions that need it, so `--debug`
never loads it."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from skd_ray.cli.after import objective_tags, report_pareto_front, search_objectives
from skd_ray.cli.common import EXIT_INTERRUPTED, check_writable, print_browse_hint, show_results, verbosity_of
from skd_ray.cli.failure import FailureLog
from skd_ray.results.names import Tags
from skd_ray.results.statuses import FINISHED_SEARCH, Status
from skd_ray.results.store import MlflowStore
from skd_ray.results.tracking import (
    SearchRuns,
    TrialTracker,
)
from skd_ray.search.cluster.connect import use_token_if_available
from skd_ray.search.console.ray_logs import QUIET, RAY_LOG_FILE, ray_logs_to_file
from skd_ray.search.request import SearchOutcome, SearchRequest
from skd_ray.search.state.live import hold_search
from skd_ray.search.state.saved import (
    check_name_unique,
    check_resumable,
    check_search_names,
    claim_search_name,
    latest_search_name,
    safe_name,
)
from skd_ray.search.state.study import StudyStorage
from skd_ray.search.state.tune_files import restore_tune_state
from skd_ray.search.tuning.closing import ending_status, reason_of
from skd_ray.training.engine import fit
from skd_ray.training.resolve import resolve_config
from skd_ray.training.session import LocalSession

# Parent-run statuses of a search that ended: a resume has nothing to continue.


def run_debug(space: Any, store: MlflowStore, experiment: str) -> int:
    """One configuration (the space's defaults + overrides) in this process, logged to MLflow."""

    cfg = resolve_config(space.defaults())
    flat = cfg.to_flat()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = SearchRuns.start(store, experiment, f"debug-{stamp}", {Tags.MODE: "debug"}, {"search.space": space.path})
    run_id = runs.start_trial(f"debug-{stamp}", "debug", flat,
                              {Tags.METHOD: cfg.method, Tags.SEED: str(cfg.train.seed), Tags.TRIAL_NAME: "debug"})
    print(f"debug: {cfg.method} on {cfg.data.name} ({cfg.model.backbone}), {cfg.train.epochs} epochs, in-process")
    start = time.perf_counter()
    try:
        tracker = TrialTracker(store, run_id, chart_threshold=cfg.eval.charted_threshold())
        fit(cfg, LocalSession(cfg.train.device, tracker, total_epochs=cfg.train.epochs))
    except BaseException as err:  # any ending (Ctrl-C, a bug, a full disk) closes both runs
        status, reason = ending_status(err), reason_of(err)
        for run in (run_id, runs.parent_run_id):
            with contextlib.suppress(Exception):
                runs.close(run, status, None if status == Status.INTERRUPTED else reason)
        raise
    runs.close(run_id, Status.COMPLETED)
    runs.close(None, Status.COMPLETED)
    print(f"debug run finished in {time.perf_counter() - start:.1f}s; MLflow run {run_id}")
    print_browse_hint(store, experiment)
    return 0


def run_ray_search(args: argparse.Namespace, space: Any, store: MlflowStore, experiment: str) -> int:
    return execute_search(search_request(args, space, store, experiment))


def search_request(args: argparse.Namespace, space: Any, store: MlflowStore, experiment: str) -> SearchRequest:
    """A new search's request from the command line's options, once its storage, folder name
    and MLflow store are checked (no Ray yet); shared with the Python API."""
    objectives = search_objectives(args, space)  # [] unless --multi-objective; checked before Ray starts
    study = StudyStorage(args.optuna_storage, args.storage)  # (a folder matters to the default file only)
    study.check_usable(store.uri)
    storage = str(Path(args.storage).resolve())
    check_writable(storage)
    check_search_names(storage, experiment)  # before the store gets the experiment and Ray its folder name
    check_name_unique(storage, experiment)
    store.check_usable(experiment)
    # Its folder is made now: a search of the same experiment started in the same second (here,
    # or with its study in the same Optuna storage) must not share its name.
    search_name = claim_search_name(storage, experiment, None if study.is_default else study.has_study)
    FailureLog.use(Path(storage) / safe_name(search_name))
    req = SearchRequest(space=space, storage=storage, tracking_uri=store.uri, experiment=experiment,
                        search_name=search_name, optuna_storage=args.optuna_storage,
                        num_samples=args.num_samples, workers=args.workers_per_trial,
                        cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                        max_concurrent=args.max_concurrent, max_failures=args.max_failures, address=args.address,
                        seed=args.seed if args.seed is not None else 0, grace_period=args.grace_period,
                        always_ray_train=args.always_ray_train, ddp_pool=not args.train_run_per_trial,
                        keep_pools=args.keep_ddp_pools,
                        sampler=args.sampler,
                        early_stopping=not args.no_early_stopping,
                        start_from_defaults=not args.no_default_trial, objectives=objectives,
                        verbosity=verbosity_of(args), resource_wait_s=args.resource_wait_timeout,
                        tracking_outage_s=args.tracking_outage_limit)
    req.extra_tags = {**req.extra_tags, **objective_tags(objectives)}
    return req


def resume_search(args: argparse.Namespace, experiment: str) -> int:
    """Continue the latest search of `experiment` with the settings it was started with; only
    where things are (--storage, --address, --mlflow-store) comes from this command line."""
    storage = str(Path(args.storage).resolve())
    check_writable(storage)
    name = latest_search_name(storage, experiment)
    FailureLog.use(Path(storage) / safe_name(name))
    # One driver at a time: a second resume of this search is refused before it changes anything.
    with hold_search(Path(storage) / safe_name(name)):
        return resume_held(args, storage, name)


def resume_held(args: argparse.Namespace, storage: str, name: str) -> int:
    """`resume_search`, once this process holds the search's folder."""
    # Every saved piece is checked (reading only) before anything is reopened: a resume that
    # cannot proceed leaves the search exactly as it was.
    check = check_resumable(storage, name, args.optuna_storage)
    req = check.request
    req.address = args.address
    req.verbosity = verbosity_of(args)
    req.resource_wait_s = args.resource_wait_timeout
    req.tracking_outage_s = args.tracking_outage_limit
    if args.mlflow_uri:
        req.tracking_uri = args.mlflow_uri
    req.store.check_usable()
    parent = req.store.check_search_run(check.experiment_id, check.parent_run_id)
    status = parent.data.tags.get(Tags.STATUS)
    if check.finished and status in FINISHED_SEARCH:
        print(f"search {name} already ended ({status}); nothing to resume")
        show_results(req.store, req.experiment, check.parent_run_id)
        return 0
    if check.backup is not None:
        restored = restore_tune_state(Path(storage) / safe_name(name), check.backup)
        print(f"{check.damaged_file.split(';')[0]}: resuming from the last intact copy "
              f"({', '.join(restored)}; the damaged files are kept as *.damaged)")
    print(f"resuming {req.search_name} with its saved settings ({req.space.path}, {req.num_samples} trials, "
          f"{req.workers} worker(s) per trial)")
    return execute_search(req)


def launch_search(req: Any) -> SearchOutcome:
    """Run (or resume) `req` on Ray, Ray's own log records going to the search's `ray.log`;
    shared with the Python API, which reads the answer from MLflow instead of printing it."""
    use_token_if_available()  # before Ray is imported: its core reads the authentication mode once
    from skd_ray.search.tuning.tuner import run_search  # local: loads Ray, which --debug must not

    log_file = Path(req.storage) / safe_name(req.search_name) / RAY_LOG_FILE
    if req.verbosity > QUIET:
        print(f"search {req.search_name}: {req.num_samples} trials; Ray's logs go to {log_file} "
              "(-v shows them here)")
    with ray_logs_to_file(log_file, req.verbosity):
        return run_search(req)


def execute_search(req: Any) -> int:
    """Run (or resume) `req` on Ray, then print its leaderboard (and Pareto front)."""
    outcome = launch_search(req)
    print()
    print(f"search {req.search_name}: {outcome.num_trials} trials, {outcome.num_errors} failed; "
          f"results in {outcome.experiment_dir}")
    show_results(req.store, req.experiment, outcome.parent_run_id)
    if req.objectives and not outcome.interrupted:
        report_pareto_front(req.store, outcome.experiment_id, outcome.parent_run_id, req.objectives)
    if outcome.interrupted:
        print("interrupted: finished trials are kept in MLflow; continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if outcome.num_errors < outcome.num_trials else 1
