"""Closing what a search opened when it ends on an exception instead of returning.

A search opens (or reopens) its MLflow parent run before Ray Tune starts, its trials open
child runs and Optuna trials while it runs. Whatever ends the driver early (a bug, a value
only Optuna checks, Ctrl-C, a full disk) must not leave them `running` forever: this module
gives each a final status. A Ctrl-C or a full disk is an interruption (`--resume` continues
the search, so its Optuna trials stay open for the resumed Tune to finish); anything else is
a failure, and the Optuna trials it started are failed too. Closing never raises: the store
may sit on the very disk that just filled up, and the original error is what the user must see.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from skd_ray.errors import is_disk_full
from skd_ray.results.tracking import SearchRuns


def ending_status(err: BaseException) -> str:
    """`interrupted` for what `--resume` can continue (Ctrl-C, full disk), else `failed`."""
    return "interrupted" if isinstance(err, KeyboardInterrupt) or is_disk_full(err) else "failed"


def reason_of(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:2000] if text else type(err).__name__


def close_search(runs: SearchRuns, study_db: Path, study_name: str, err: BaseException) -> str:
    """Give the search's open child runs and its parent run the status `err` means, and fail
    the Optuna trials still running unless the search can be resumed; returns the status."""
    status = ending_status(err)
    reason = None if status == "interrupted" else reason_of(err)
    with contextlib.suppress(Exception):
        for run_id in runs.open_trials():
            with contextlib.suppress(Exception):
                runs.close(run_id, status, reason)
    with contextlib.suppress(Exception):
        runs.close(None, status, reason)
    if status == "failed":
        with contextlib.suppress(Exception):
            fail_running_optuna_trials(study_db, study_name)
    return status


def fail_running_optuna_trials(study_db: Path, study_name: str) -> int:
    """Mark the study's RUNNING trials FAIL (nothing will ever tell their value); returns how many."""
    import optuna

    if not study_db.exists():
        return 0
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{study_db}")
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(running)
