"""Command line: `skd-ray COMMAND ...`, `python run_search.py ...`, `python -m skd_ray ...`.

Eight jobs, one `skd-ray` subcommand each: `search` (on Ray; `run_search.py` alone), `debug`
(one configuration in this process, no Ray, breakpoints work), `results` (a search's
leaderboard or a comparison's table from MLflow, runs nothing; `--report DIR` writes a page),
`resume`, `final` (retrain the best configurations over seeds, tested), `compare` (methods
against vanilla), `export` (the best model for plain PyTorch) and `pareto` (multi-objective
search). `run_search.py` keeps the combined form of before, the job chosen by a mode flag
(`--debug`, `--results`, `--resume`, `--final-top`, `--compare`, `--export-best`,
`--multi-objective`); both spellings parse to one Namespace (`skd_ray.cli.commands`) that
`run` dispatches. Any problem the user can fix ends with one `error:` line naming it and the
fix, and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from skd_ray.cli.after import check_combination, run_finished_search, wants_finished_search
from skd_ray.cli.commands import SEARCH_SCRIPT, TOOL, build_command_parser, build_parser, parse_command_line
from skd_ray.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    REPO_ROOT,
    show_results,
)
from skd_ray.cli.compare_command import (
    comparison_run_id,
    resumable_comparison,
    resume_compare,
    run_compare,
    show_comparison,
)
from skd_ray.cli.failure import FailureLog, as_user_error
from skd_ray.cli.flags import check_flags
from skd_ray.cli.preflight import check_space_data
from skd_ray.cli.train_commands import resume_search, run_debug, run_ray_search, verbosity_of
from skd_ray.errors import ConfigError, SkdError, is_disk_full
from skd_ray.methods import get_method_spec
from skd_ray.results.leaderboard import search_run_id
from skd_ray.results.store import MlflowStore
from skd_ray.search.space.definition import SearchSpace, load_space, load_yaml


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
    """`run_search.py` and `python -m skd_ray`: either spelling; no arguments run the default search."""
    return execute(sys.argv[1:] if argv is None else list(argv), SEARCH_SCRIPT)


def tool_main(argv: list[str] | None = None) -> int:
    """`skd-ray`: with no arguments (or only --help) an overview of the commands, since a bare
    `skd-ray` starting a search would surprise; otherwise as `main`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        build_command_parser().print_help()
        return 0
    return execute(argv, TOOL)


def execute(argv: list[str], prog: str) -> int:
    """Parse either spelling, print the combined form's note line, run, and end as `main` says."""
    parsed = parse_command_line(argv, prog)
    if parsed.note:
        print(parsed.note, file=sys.stderr)
    FailureLog.use(None)
    try:
        return run(parsed.args, parsed.flag_names)
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


def run(args: argparse.Namespace, flag_names: Mapping[str, str] | None = None) -> int:
    """Run the job `args` (the combined form's Namespace) asks for; `flag_names`: the options
    its subcommand spells differently, for the errors that name them."""
    store = MlflowStore.of(args.mlflow_uri)
    check_flags(args, build_parser().get_default, flag_names)
    check_combination(args)
    searched = searched_experiment(args)
    if args.report and not args.results:
        raise SkdError("--report DIR writes the report of a finished search", "add --results")
    if args.results:
        compared = comparison_run_id(store, searched, args.search)
        if compared is not None:
            return show_comparison(store, compared, args.report)
        parent_run_id = search_run_id(store, searched, args.search)
        return show_results(store, searched, parent_run_id, args.report)
    if wants_finished_search(args):
        return run_finished_search(args, store, searched)
    if args.compare:
        return run_compare(args, store, parse_overrides(args), verbosity_of(args))
    if args.resume:
        compared_folder = resumable_comparison(args, searched)
        if compared_folder is not None:
            return resume_compare(compared_folder, args, verbosity_of(args))
        return resume_search(args, searched)
    space, experiment = checked_space(args)
    if args.debug:
        store.check_usable(experiment, multi_process=False)
        return run_debug(space, store, experiment)
    return run_ray_search(args, space, store, experiment)


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
