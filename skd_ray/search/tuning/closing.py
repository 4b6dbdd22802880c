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
import shutil

from skd_ray.errors import DiskFull, is_disk_full
from skd_ray.results.statuses import Status
from skd_ray.results.tracking import SearchRuns
from skd_ray.search.state.study import StudyStorage


def ending_status(err: BaseException) -> str:
    """`interrupted` for what `--resume` can continue (Ctrl-C, full disk), else `failed`."""
    return Status.INTERRUPTED if isinstance(err, KeyboardInterrupt) or is_disk_full(err) else Status.FAILED


def storage_full(storage: str) -> bool:
    """Less than 1 MiB free where the search's files go: too little for Tune's next save."""
    try:
        return shutil.disk_usage(storage).free < 1024**2
    except OSError:
        return False


def blame_full_storage(err: BaseException, storage: str, search_name: str) -> BaseException:
    """`err`, or a `DiskFull` to raise in its place when the search's storage is full: Ray
    then fails reading back a file the full disk cut short (a trial's pickled error, Tune's
    state: EOFError, UnpicklingError, JSONDecodeError), and closing the search as failed on
    that would make a search that `--resume` can continue look finished."""
    if is_disk_full(err) or isinstance(err, KeyboardInterrupt) or not storage_full(storage):
        return err
    return DiskFull(f"search {search_name} stopped with its storage {storage} full (No space left on device; "
                    f"Ray then failed with {type(err).__name__}: {' '.join(str(err).split())[:200]}); "
                    "the search is interrupted")


def reason_of(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:2000] if text else type(err).__name__


def close_search(runs: SearchRuns, study: StudyStorage, study_name: str, err: BaseException) -> str:
    """Give the search's open child runs and its parent run the status `err` means, and fail
    the Optuna trials still running unless the search can be resumed; returns the status."""
    status = ending_status(err)
    reason = None if status == Status.INTERRUPTED else reason_of(err)
    with contextlib.suppress(Exception):
        for run_id in runs.open_trials():
            with contextlib.suppress(Exception):
                runs.close(run_id, status, reason)
    with contextlib.suppress(Exception):
        runs.close(None, status, reason)
    if status == Status.FAILED:
        with contextlib.suppress(Exception):
            fail_running_optuna_trials(study, study_name)
    return status


def fail_running_optuna_trials(study: StudyStorage, study_name: str) -> int:
    """Mark the study's RUNNING trials FAIL (nothing will ever tell their value); returns how many."""
    import optuna

    if not study.has_study(study_name):
        return 0
    loaded = optuna.load_study(study_name=study_name, storage=study.open())
    running = loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        loaded.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(running)
