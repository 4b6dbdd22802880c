"""What every command of the CLI shares: exit codes, the checkout's root, the writable-output
check, the leaderboard printout and the MLflow browse hint."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from skd_ray.errors import ensure_writable_directory
from skd_ray.results.artifacts import write_report
from skd_ray.results.leaderboard import TrialRow, find_search_run, format_leaderboard, trial_rows
from skd_ray.results.mlflow_ui import BEST_FIRST_VIEW, VIEW_TAG_PREFIX
from skd_ray.results.store import BROWSE_PORT, MlflowStore
from skd_ray.search.console.ray_logs import NORMAL, QUIET, VERBOSE

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
EXIT_FAILED = 1  # an unexpected failure (its traceback is in a log file)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def check_writable(directory: str) -> None:
    """The results directory must be creatable and writable before Ray starts."""
    ensure_writable_directory(directory, "storage", "--storage")


def show_results(store: MlflowStore, experiment: str, parent_run_id: str | None = None,
                 report_dir: str | None = None) -> int:
    """The search's leaderboard; with `report_dir`, also its report, from the same rows (a
    large search's runs are read once)."""
    exp_id, parent = find_search_run(store, experiment, parent_run_id)
    rows = trial_rows(store, exp_id, parent.info.run_id)
    ranked_by = rows[0].objective.describe() if rows else "val_acc (max)"
    print(f"leaderboard of {parent.info.run_name} (MLflow experiment {experiment!r}, ranked by best {ranked_by}):")
    print(format_leaderboard(rows))
    print_browse_hint(store, experiment)
    if report_dir:
        write_search_report(store, experiment, report_dir, parent.info.run_id, rows)
    return 0


def write_search_report(store: MlflowStore, experiment: str, report_dir: str, parent_run_id: str | None = None,
                        rows: list[TrialRow] | None = None) -> None:
    """--results --report DIR: the search as a Markdown page with its plots, viewable without MLflow
    (`rows`: its leaderboard rows, when already read)."""
    path = write_report(store, experiment, report_dir, parent_run_id, rows)
    print(f"report: {path} (plots beside it)")


def print_browse_hint(store: MlflowStore, experiment: str) -> None:
    """Where to look at the search: an MLflow server's own address; for a database or a file,
    the command that serves it, runnable as printed (this Python, no activated venv), and the
    address of the experiment's runs table in MLflow's training view (MLflow 3 opens an
    experiment on its GenAI pages, where a training search looks empty)."""
    if store.is_server:
        print(f"browse: {runs_table_url(store, experiment)}")
        return
    print(f"browse: {browse_command(store)}")
    print(f"        then open {runs_table_url(store, experiment)}")


def browse_command(store: MlflowStore, port: int = BROWSE_PORT) -> str:
    return f"{shlex.quote(sys.executable)} -m mlflow ui --backend-store-uri {shlex.quote(str(store))} " \
        f"--host 127.0.0.1 --port {port}"


def runs_table_url(store: MlflowStore, experiment: str, port: int = BROWSE_PORT) -> str:
    """`<server or http://127.0.0.1:<port>>/#/experiments/<id>/runs?workflowType=machine_learning`,
    in the search's best-first view when its experiment has one."""
    try:
        found = store.client.get_experiment_by_name(experiment)
    except Exception:  # noqa: BLE001 - a hint: the experiment list is one click away
        found = None
    if found is None:
        return f"{store.browse_url(None, port=port)} (experiment {experiment!r})"
    view = BEST_FIRST_VIEW if VIEW_TAG_PREFIX + BEST_FIRST_VIEW in found.tags else None
    return store.browse_url(found.experiment_id, view, port)


def verbosity_of(args: argparse.Namespace) -> int:
    """-q: only the final summary; default: one line per trial event; -v: Ray Tune's own output too."""
    return QUIET if getattr(args, "quiet", False) else VERBOSE if getattr(args, "verbose", False) else NORMAL
