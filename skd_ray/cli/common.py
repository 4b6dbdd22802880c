"""What every command of the CLI shares: exit codes, the checkout's root, the writable-output
check, the leaderboard printout and the MLflow browse hint."""

from __future__ import annotations

from pathlib import Path

from skd_ray.errors import ensure_writable_directory
from skd_ray.results.artifacts import write_report
from skd_ray.results.leaderboard import find_search_run, format_leaderboard, trial_rows

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
EXIT_FAILED = 1  # an unexpected failure (its traceback is in a log file)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def check_writable(directory: str) -> None:
    """The results directory must be creatable and writable before Ray starts."""
    ensure_writable_directory(directory, "storage", "--storage")


def show_results(uri: str, experiment: str, parent_run_id: str | None = None) -> int:
    exp_id, parent = find_search_run(uri, experiment, parent_run_id)
    rows = trial_rows(uri, exp_id, parent.info.run_id)
    print(f"leaderboard of {parent.info.run_name} (MLflow experiment {experiment!r}, best validation accuracy):")
    print(format_leaderboard(rows))
    print_browse_hint(uri, experiment)
    return 0


def write_search_report(uri: str, experiment: str, report_dir: str, parent_run_id: str | None = None) -> None:
    """--results --report DIR: the search as a Markdown page with its plots, viewable without MLflow."""
    path = write_report(uri, experiment, report_dir, parent_run_id)
    print(f"report: {path} (plots beside it)")


def print_browse_hint(uri: str, experiment: str) -> None:
    print(f"browse: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000  "
          f"(then open http://127.0.0.1:5000, experiment {experiment!r})")
