"""One number per trial, shared by the console, the MLflow run names and the Optuna study.

A trial is `t<NN>` where NN is its Optuna trial number (what optuna-dashboard shows), so the
console line `t03 finished`, the MLflow run `t03 ...` and Optuna's trial 3 are the same
trial. The searcher registers the number when it asks Optuna for the trial; searches
without Optuna (the final evaluation's fixed points) number trials in start order.
Everything here lives in the driver process, where Tune runs its searcher and callbacks.
"""

from __future__ import annotations

import os
import time
from typing import Any

# Ray trial id -> number, for every trial this driver has seen.
NUMBERS: dict[str, int] = {}


def reset() -> None:
    """A new search (or a resumed one, whose searcher registers its trials again) in this process."""
    NUMBERS.clear()


def register(trial_id: str, number: int) -> None:
    NUMBERS[trial_id] = number


def number_of(trial_id: str) -> int:
    """The trial's number; a trial the searcher did not number gets the next free one."""
    if trial_id not in NUMBERS:
        NUMBERS[trial_id] = max(NUMBERS.values(), default=-1) + 1
    return NUMBERS[trial_id]


def label(trial_id: str) -> str:
    """`t00`, `t01`, ...: what the console and the MLflow run names call the trial."""
    return f"t{number_of(trial_id):02d}"


def trial_name(trial: Any) -> str:
    """Ray Tune's name of a trial (its `trial_name_creator`): its label. Tune names a trial when
    it creates it, right after the searcher numbered it, and hands the name to the trial's
    process, which so names its MLflow run itself (`ray.tune.get_context().get_trial_name()`)."""
    return label(trial.trial_id)


def trial_dirname(trial: Any) -> str:
    """The trial's folder (its `trial_dirname_creator`), named as Ray Tune names it without a
    trial name: `run_trial_<trial id>_<number>_<config>_<date>` (Tune would otherwise take the
    name, `t03_...`, and the folder would no longer say which Ray trial it holds)."""
    longest = int(os.environ.get("TUNE_MAX_LEN_IDENTIFIER", "130"))  # Tune's own bound
    name = f"{trial.trainable_name}_{trial.trial_id}_{trial.experiment_tag}"[:longest]
    return f"{name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
