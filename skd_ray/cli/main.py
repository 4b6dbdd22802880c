"""Command line: `python run_search.py ...` / `python -m skd_ray ...`.

Three modes: a search on Ray (default), `--debug` (one configuration in this process, no
Ray, breakpoints work) and `--results` (leaderboard from MLflow, runs nothing). Any problem
the user can fix ends with one `error:` line naming it and the fix, and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from skd_ray.cli.after import add_arguments, check_combination, run_finished_search, wants_finished_search
from skd_ray.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    REPO_ROOT,
    show_results,
    write_search_report,
)
from skd_ray.cli.compare import comparison_run_id, resumable_comparison, resume_compare, run_compare, show_comparison
from skd_ray.cli.failure import FailureLog, as_user_error
from skd_ray.cli.flags import check_flags
from skd_ray.cli.preflight import check_space_data
from skd_ray.cli.search import resume_search, run_debug, run_ray_search, verbosity_of
from skd_ray.data import dataset_names
from skd_ray.errors import ConfigError, SkdError, is_disk_full
from skd_ray.methods import get_method_spec, method_names
from skd_ray.models import backbone_names
from skd_ray.results.leaderboard import search_run_id
from skd_ray.results.tracking import check_store_usable, default_tracking_uri
from skd_ray.search.space import SearchSpace, load_space, load_yaml


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_search.py",
        description="Search self-knowledge-distillation hyperparameters with Ray Tune + Optuna, tracked in MLflow.",
    )
    p.add_argument("--config", help="search-space file (default: search_spaces/<method>.yaml)")
    p.add_argument("--method", help=f"self-KD method: {', '.join(method_names())} (default: the space's; byot "
                                    "without --config)")
    p.add_argument("--compare", metavar="METHODS",
                   help="compare methods, e.g. vanilla,byot,tfd: one search each on a shared recipe "
                        "(--config, default search_spaces/compare.yaml), the best configuration of each "
                        "retrained with --seeds seeds and tested; vanilla is always the reference")
    p.add_argument("--dataset", help=f"{' | '.join(dataset_names())} | package.module:factory (your own data: "
                                     "factory(data_dir=...) returns (train, test) as (images, labels) or Datasets)")
    p.add_argument("--data-dir", help="where the dataset's files are")
    p.add_argument("--backbone", help=f"{' | '.join(backbone_names())} | wrn_<depth>_<k> (e.g. wrn_16_2) | "
                                      "timm:<model> (e.g. timm:convnext_atto) | package.module:factory (your own "
                                      "network; see --set model.stages=...)")
    p.add_argument("--num-samples", type=int, default=8, help="number of trials (default 8)")
    p.add_argument("--max-epochs", type=int, help="epoch budget of a full trial (ASHA's max_t)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train (DDP) workers per trial")
    p.add_argument("--always-ray-train", action="store_true",
                   help="run 1-worker trials through Ray Train too (default: in the Tune trial process, "
                        "which starts in under a second)")
    p.add_argument("--train-run-per-trial", action="store_true",
                   help="start a new Ray Train run for every multi-worker trial (default: persistent DDP "
                        "worker pools, one per concurrent trial, reused by every trial)")
    p.add_argument("--keep-ddp-pools", action="store_true",
                   help="train multi-worker trials in DDP pools on an autoscaling cluster too (default there: "
                        "a Train run per trial, since a pool keeps its nodes up until the search ends)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="fractions pack trials on one GPU")
    p.add_argument("--max-concurrent", type=int, help="cap on trials running at once (default: what fits, or "
                   "on an autoscaling cluster what its node types can grow to)")
    p.add_argument("--max-failures", type=int, default=2, metavar="N",
                   help="times a trial is restarted from its last checkpoint after a crash (default 2; "
                        "deterministic errors such as a NaN loss or bad data are not retried)")
    p.add_argument("--resource-wait-timeout", type=float, default=900.0, metavar="SECONDS",
                   help="give up (interrupted, --resume continues) when trials have waited this long for "
                        "resources without any progress (default 900)")
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
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true", help="print only the search's final summary")
    loud.add_argument("-v", "--verbose", action="store_true",
                      help="also print Ray Tune's status tables and Ray's logs (default: one line per trial event)")
    add_arguments(p)  # --final-top, --export-best, --multi-objective and their options
    return p


def resolve_space_path(args: argparse.Namespace) -> Path:
    """--config as given (relative to cwd or the checkout), else search_spaces/<method>.yaml, else
    the space file the method's class names (methods from plugins)."""
    name = args.config or f"search_spaces/{args.method or 'byot'}.yaml"
    for candidate in (Path(name), REPO_ROOT / name):
        if candidate.is_file():
            return candidate
    if not args.config:
        own = get_method_spec(args.method).cls.search_space  # unknown method: name the choices
        if own and Path(own).is_file():  # a plugin method's own default space
            return Path(own)
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
    FailureLog.use(None)
    try:
        return run(args)
    except SkdError as err:
        return print_error(err, EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept in MLflow; continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - one line and a log file instead of a bare traceback
        return print_error(as_user_error(err), EXIT_USER_ERROR if is_disk_full(err) else EXIT_FAILED)


def print_error(err: SkdError, code: int) -> int:
    """The one `error: <problem> -- fix: <fix>` line of a command that cannot go on."""
    fix = f" -- fix: {err.fix}" if err.fix else ""
    print(f"error: {err.problem}{fix}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    uri = args.mlflow_uri or default_tracking_uri()
    check_flags(args, build_parser().get_default)
    check_combination(args)
    searched = searched_experiment(args)
    if args.report and not args.results:
        raise SkdError("--report DIR writes the report of a finished search", "add --results")
    if args.results:
        compared = comparison_run_id(uri, searched, args.search)
        if compared is not None:
            return show_comparison(uri, compared, args.report)
        parent_run_id = search_run_id(uri, searched, args.search)
        code = show_results(uri, searched, parent_run_id)
        if args.report:
            write_search_report(uri, searched, args.report, parent_run_id)
        return code
    if wants_finished_search(args):
        return run_finished_search(args, uri, searched)
    if args.compare:
        return run_compare(args, uri, parse_overrides(args), verbosity_of(args))
    if args.resume:
        compared_folder = resumable_comparison(args, searched)
        if compared_folder is not None:
            return resume_compare(compared_folder, args, verbosity_of(args))
        return resume_search(args, searched)
    space, experiment = checked_space(args)
    if args.debug:
        check_store_usable(uri, experiment, multi_process=False)
        return run_debug(space, uri, experiment)
    return run_ray_search(args, space, uri, experiment)


def searched_experiment(args: argparse.Namespace) -> str:
    """--experiment, else the experiment a search of --config / --method writes to (`skd-<space
    file name>`, `skd-byot` without either): where `--results` and the commands acting on a
    finished search look."""
    return args.experiment or f"skd-{Path(args.config or (args.method or 'byot')).stem}"


def checked_space(args: argparse.Namespace, extra: Mapping[str, Any] | None = None) -> tuple[SearchSpace, str]:
    """The space a search (or --debug run) trains and its MLflow experiment: the space file,
    then the flag values and --set pairs, then `extra` (the Python API's overrides) fixed in it;
    the method, the space and its data checked, all before Ray starts."""
    path = resolve_space_path(args)
    overrides = {**parse_overrides(args), **(extra or {})}
    check_method_matches(space_method_of(path), args, path)
    space = load_space(path, overrides)
    experiment = args.experiment or f"skd-{path.stem}"
    check_space_data(space, 1 if args.debug else args.workers_per_trial)
    return space, experiment


def space_method_of(path: Path) -> Any:
    """The method a space file fixes (`fixed: method:`), or None for a cross-method space."""
    fixed = load_yaml(path).get("fixed")
    return fixed.get("method") if isinstance(fixed, dict) else None  # a wrong shape: load_space names it


if __name__ == "__main__":
    sys.exit(main())
