"""`--compare vanilla,byot,...`: which self-KD method is best on this data, tuned alike and
judged on test over several seeds (see `skd_ray.selection.comparison.runner`). Everything the user can
get wrong (method names, the recipe, the data, the store, the storage) is checked here before
Ray starts; `--resume --experiment NAME` continues an interrupted comparison and
`--results [--report DIR]` shows a finished one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from skd_ray.cli.common import EXIT_INTERRUPTED, REPO_ROOT, check_writable, print_browse_hint
from skd_ray.cli.preflight import check_space_data
from skd_ray.errors import ConfigError, SkdError, ensure_writable_directory
from skd_ray.results.leaderboard import find_search_run
from skd_ray.results.names import Artifacts, Tags
from skd_ray.results.store import MlflowStore
from skd_ray.search.cluster.connect import use_token_if_available
from skd_ray.search.state.live import hold_search
from skd_ray.search.state.study import StudyStorage
from skd_ray.selection.comparison.method_spaces import RECIPE_FILE, method_space, parse_methods
from skd_ray.selection.comparison.record import CompareState, comparison_folders
from skd_ray.selection.comparison.runner import (
    CompareOutcome,
    CompareRequest,
    check_comparison_names,
    load_comparison,
    resume_comparison,
    run_comparison,
    start_comparison,
    write_files,
)
from skd_ray.selection.comparison.table import MethodRow, format_text
from skd_ray.selection.final_summary import final_seeds

DEFAULT_EXPERIMENT = "skd-compare"


def recipe_path(config: str | None) -> Path:
    """--config as the shared recipe, else search_spaces/compare.yaml; the methods' own files
    are read from the recipe's folder."""
    name = config or f"search_spaces/{RECIPE_FILE}"
    for candidate in (Path(name), REPO_ROOT / name):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"comparison recipe {name} does not exist", "pass --config search_spaces/compare.yaml")


def run_compare(args: argparse.Namespace, store: MlflowStore, overrides: dict[str, Any], verbosity: int) -> int:
    """Check everything, then run a new comparison."""
    state, folder = begin_compare(args, store, overrides)
    print(f"comparison {state.name}: {', '.join(s.method for s in state.steps)}; {args.num_samples} trials each, "
          f"then the best configuration retrained with seeds {state.seeds}; state in {folder}")
    return finish(run_comparison(state, folder, args.address, verbosity), store, state.experiment)


def begin_compare(args: argparse.Namespace, store: MlflowStore, overrides: dict[str, Any]) -> tuple[CompareState, Path]:
    """Check the methods, the recipe, the data, the storage and the store (before Ray starts),
    then create the comparison's MLflow run and folder; shared with the Python API."""
    methods = parse_methods(args.compare)
    recipe = recipe_path(args.config)
    spaces = {m: method_space(recipe, m, overrides) for m in methods}
    for space in spaces.values():
        check_space_data(space, args.workers_per_trial)
    seeds = final_seeds(args.seeds, args.seed)
    storage = str(Path(args.storage).resolve())
    check_writable(storage)
    experiment = args.experiment or DEFAULT_EXPERIMENT
    check_comparison_names(storage, experiment, methods)
    store.check_usable(experiment)
    StudyStorage(args.optuna_storage, storage).check_usable(store.uri)
    settings = {"num_samples": args.num_samples, "workers": args.workers_per_trial,
                "cpus_per_worker": args.cpus_per_worker, "gpus_per_worker": args.gpus_per_worker,
                "max_concurrent": args.max_concurrent, "max_failures": args.max_failures,
                "seed": args.seed if args.seed is not None else 0, "grace_period": args.grace_period,
                "sampler": args.sampler, "early_stopping": not args.no_early_stopping,
                "start_from_defaults": not args.no_default_trial, "always_ray_train": args.always_ray_train,
                "ddp_pool": not args.train_run_per_trial, "keep_pools": args.keep_ddp_pools,
                "optuna_storage": args.optuna_storage,
                "resource_wait_s": args.resource_wait_timeout, "tracking_outage_s": args.tracking_outage_limit}
    use_token_if_available()  # before Ray is imported: its core reads the authentication mode once
    return start_comparison(CompareRequest(methods, spaces, storage, store.uri, experiment, seeds, settings))


def resumable_comparison(args: argparse.Namespace, experiment: str) -> Path | None:
    """The latest comparison folder of `experiment` under --storage, if there is one."""
    found = comparison_folders(str(Path(args.storage).resolve()), experiment)
    return found[-1] if found else None


def resume_compare(folder: Path, args: argparse.Namespace, verbosity: int) -> int:
    use_token_if_available()
    with hold_search(folder):  # one driver per comparison: a second resume is refused
        return resume_held_comparison(folder, args, verbosity)


def resume_held_comparison(folder: Path, args: argparse.Namespace, verbosity: int) -> int:
    state = resume_comparison(folder, args.mlflow_uri, args.optuna_storage)
    if state.finished:
        print(f"comparison {state.name} already ended; nothing to resume")
        show_comparison(state.store, state.parent_run_id)
        return 0
    done = [s.method for s in state.steps if s.final_done]
    searched = [s.method for s in state.steps if s.search_done]
    print(f"resuming comparison {state.name}: searches done: {', '.join(searched) or 'none'}; "
          f"final evaluations done: {', '.join(done) or 'none'}")
    return finish(run_comparison(state, folder, args.address, verbosity), state.store, state.experiment)


def finish(outcome: CompareOutcome, store: MlflowStore, experiment: str) -> int:
    if outcome.interrupted:
        print(f"interrupted: finished searches and final evaluations are kept ({outcome.folder}); "
              f"continue with --resume --experiment {experiment}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print()
    print(headline(outcome.state.name, outcome.rows))
    print(format_text(outcome.rows))
    print(f"table, CSV and plot on the comparison's MLflow run {outcome.state.parent_run_id}; "
          f"state in {outcome.folder}")
    print_browse_hint(store, experiment)
    return 0


def headline(name: str, rows: list[MethodRow]) -> str:
    return (f"comparison {name}: test accuracy of each method's best configuration (retrained on train+validation, "
            "mean ± std over seeds, 95% t interval; Δ and p: paired t-test against vanilla)")


def comparison_run_id(store: MlflowStore, experiment: str, search: str | None) -> str | None:
    """The comparison `--results` should show: the run named (or with the id) `search` when it
    is a comparison, else the comparison of the experiment's latest search; None otherwise."""
    exp = store.client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    if search:
        runs = store.client.search_runs([exp.experiment_id], filter_string=f"tags.`{Tags.KIND}` = 'compare'",
                                       max_results=1000)
        return next((r.info.run_id for r in runs if search in (r.info.run_name, r.info.run_id)), None)
    try:
        _, latest = find_search_run(store, experiment)
    except SkdError:
        return None
    return latest.data.tags.get(Tags.COMPARE_RUN_ID)


def show_comparison(store: MlflowStore, run_id: str, report_dir: str | None = None) -> int:
    """Print a finished comparison's table; with `report_dir`, also write its report page."""
    try:
        payload, rows = load_comparison(store, run_id)
    except Exception as err:  # noqa: BLE001 - an unfinished comparison has no table yet
        raise SkdError(f"comparison run {run_id} has no {Artifacts.COMPARE_JSON} ({type(err).__name__}); "
                       "it has not finished", "finish it with --resume --experiment NAME") from None
    print(headline(payload.get("name", run_id), rows))
    print(format_text(rows))
    if report_dir:
        files = ("report.md", Artifacts.COMPARE_MD, Artifacts.COMPARE_CSV, Artifacts.COMPARE_JSON,
                 Artifacts.COMPARE_PLOT)
        out = ensure_writable_directory(report_dir, "report directory", "--report", files)
        write_files(payload, rows, out)
        report = out / "report.md"
        report.write_text((out / Artifacts.COMPARE_MD).read_text(encoding="utf-8"), encoding="utf-8")
        print(f"report: {report} ({Artifacts.COMPARE_CSV}, {Artifacts.COMPARE_PLOT} beside it)")
    return 0
