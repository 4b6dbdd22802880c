"""Command line: `python run_search.py ...` / `python -m skd_ray ...`.

Three modes: a search on Ray (default), `--debug` (one configuration in this process, no
Ray, breakpoints work) and `--results` (leaderboard from MLflow, runs nothing). Any problem
the user can fix ends with one `error:` line naming it and the fix, and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from skd_ray.errors import ConfigError, SkdError, ensure_writable_directory

REPO_ROOT = Path(__file__).resolve().parent.parent
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_search.py",
        description="Search self-knowledge-distillation hyperparameters with Ray Tune + Optuna, tracked in MLflow.",
    )
    p.add_argument("--config", help="search-space file (default: search_spaces/<method>.yaml)")
    p.add_argument("--method", help="self-KD method (default: the space's; byot without --config)")
    p.add_argument("--dataset", help="digits | fashion-mnist | cifar10 | cifar100 | imagefolder")
    p.add_argument("--data-dir", help="where the dataset's files are")
    p.add_argument("--backbone", help="resnet_small | resnet18")
    p.add_argument("--num-samples", type=int, default=8, help="number of trials (default 8)")
    p.add_argument("--max-epochs", type=int, help="epoch budget of a full trial (ASHA's max_t)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train (DDP) workers per trial")
    p.add_argument("--always-ray-train", action="store_true",
                   help="run 1-worker trials through Ray Train too (default: in the Tune trial process, "
                        "which starts in under a second)")
    p.add_argument("--train-run-per-trial", action="store_true",
                   help="start a new Ray Train run for every multi-worker trial (default: persistent DDP "
                        "worker pools, one per concurrent trial, reused by every trial)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="fractions pack trials on one GPU")
    p.add_argument("--max-concurrent", type=int, help="cap on trials running at once (default: what fits)")
    p.add_argument("--grace-period", type=int, default=2,
                   help="epochs before ASHA may stop a trial (1 pays off in wide spaces, where bad "
                        "configurations show in the first epoch; see README, Performance)")
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe",
                   help="Optuna sampler of a single-objective search (random: a baseline)")
    p.add_argument("--no-early-stopping", action="store_true", help="run every trial to --max-epochs (no ASHA)")
    p.add_argument("--no-default-trial", action="store_true",
                   help="do not start with the space's defaults (the published settings) as the first trial")
    p.add_argument("--address", help="Ray cluster address (e.g. auto); default: start a local Ray")
    p.add_argument("--storage", default="skd_results", help="Ray results and checkpoints (shared on clusters)")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment name (default: skd-<space name>)")
    p.add_argument("--seed", type=int, help="training seed (train.seed) and Optuna sampler seed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a config value, e.g. --set optim.lr=0.1 (repeatable)")
    p.add_argument("--debug", action="store_true", help="run one configuration in-process, no Ray")
    p.add_argument("--results", action="store_true", help="print the latest search's leaderboard")
    p.add_argument("--report", metavar="DIR", help="with --results: also write report.md (settings, leaderboard, "
                   "best config, early exit) and its PNG plots to DIR")
    p.add_argument("--resume", action="store_true", help="continue the latest search of --experiment")
    from skd_ray.after_search import add_arguments

    add_arguments(p)  # --final-top, --export-best, --multi-objective and their options
    return p


def resolve_space_path(args: argparse.Namespace) -> Path:
    """--config as given (relative to cwd or the checkout), else search_spaces/<method>.yaml."""
    name = args.config or f"search_spaces/{args.method or 'byot'}.yaml"
    for candidate in (Path(name), REPO_ROOT / name):
        if candidate.is_file():
            return candidate
    if not args.config:
        from skd_ray.methods import get_method_spec

        get_method_spec(args.method)  # unknown method: name the choices
    raise ConfigError(f"search-space file {name} does not exist", "pass --config with a file from search_spaces/")


def parse_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flag values and --set pairs as flat config keys."""
    out: dict[str, Any] = {}
    flags = {"method": args.method, "data.name": args.dataset, "data.dir": args.data_dir,
             "model.backbone": args.backbone, "train.epochs": args.max_epochs, "train.seed": args.seed}
    out.update({k: v for k, v in flags.items() if v is not None})
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not KEY=VALUE", "write e.g. --set optim.lr=0.1")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise SkdError(f"data directory {args.data_dir} does not exist", "pass an existing --data-dir")
    return out


def check_method_matches(space_method: Any, args: argparse.Namespace, path: Path) -> None:
    if args.method and args.config and space_method not in (None, args.method):
        raise ConfigError(f"--method {args.method} conflicts with {path}, a {space_method} space",
                          f"pass --config search_spaces/{args.method}.yaml or drop --method")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except SkdError as err:
        fix = f" -- fix: {err.fix}" if err.fix else ""
        print(f"error: {err.problem}{fix}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept in MLflow; continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def run(args: argparse.Namespace) -> int:
    from skd_ray.after_search import check_combination, run_finished_search, wants_finished_search
    from skd_ray.tracking import check_reachable, default_tracking_uri

    uri = args.mlflow_uri or default_tracking_uri()
    check_combination(args)
    searched = args.experiment or f"skd-{Path(args.config or (args.method or 'byot')).stem}"
    if args.report and not args.results:
        raise SkdError("--report DIR writes the report of a finished search", "add --results")
    if args.results:
        from skd_ray.report import search_run_id

        parent_run_id = search_run_id(uri, searched, args.search)
        code = show_results(uri, searched, parent_run_id)
        if args.report:
            write_search_report(uri, searched, args.report, parent_run_id)
        return code
    if wants_finished_search(args):
        return run_finished_search(args, uri, searched)
    if args.resume:
        return resume_search(args, searched)
    from skd_ray.space import load_space

    path = resolve_space_path(args)
    overrides = parse_overrides(args)
    space_method = load_yamlish_method(path)
    check_method_matches(space_method, args, path)
    space = load_space(path, overrides)
    experiment = args.experiment or f"skd-{path.stem}"
    check_reachable(uri)
    if args.debug:
        return run_debug(space, uri, experiment)
    return run_ray_search(args, space, uri, experiment)


def load_yamlish_method(path: Path) -> Any:
    from skd_ray.space import load_yaml

    return (load_yaml(path).get("fixed") or {}).get("method")


def run_debug(space: Any, uri: str, experiment: str) -> int:
    """One configuration (the space's defaults + overrides) in this process, logged to MLflow."""
    from skd_ray.engine import fit
    from skd_ray.tracking import TrialTracker, finish_trial_run, start_search_run, start_trial_run
    from skd_ray.training.resolve import resolve_config
    from skd_ray.training.session import LocalSession

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
    from skd_ray.after_search import objective_tags, search_objectives
    from skd_ray.search import SearchRequest

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
    from skd_ray.search import latest_search_name, saved_request
    from skd_ray.tracking import check_reachable

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
    from skd_ray.after_search import report_pareto_front
    from skd_ray.search import run_search

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


def check_writable(directory: str) -> None:
    """The results directory must be creatable and writable before Ray starts."""
    ensure_writable_directory(directory, "storage", "--storage")


def show_results(uri: str, experiment: str, parent_run_id: str | None = None) -> int:
    from skd_ray.report import find_search_run, format_leaderboard, trial_rows

    exp_id, parent = find_search_run(uri, experiment, parent_run_id)
    rows = trial_rows(uri, exp_id, parent.info.run_id)
    print(f"leaderboard of {parent.info.run_name} (MLflow experiment {experiment!r}, best validation accuracy):")
    print(format_leaderboard(rows))
    print_browse_hint(uri, experiment)
    return 0


def write_search_report(uri: str, experiment: str, report_dir: str, parent_run_id: str | None = None) -> None:
    """--results --report DIR: the search as a Markdown page with its plots, viewable without MLflow."""
    from skd_ray.search_report import write_report

    path = write_report(uri, experiment, report_dir, parent_run_id)
    print(f"report: {path} (plots beside it)")


def print_browse_hint(uri: str, experiment: str) -> None:
    print(f"browse: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000  "
          f"(then open http://127.0.0.1:5000, experiment {experiment!r})")


if __name__ == "__main__":
    sys.exit(main())
