"""Ray Tune's OptunaSearch, made to agree with the leaderboard.

Ray's searcher tells Optuna the value of its metric in a trial's *last* report, and marks
every trial that ended without an error COMPLETE, ASHA-stopped ones included. skd-ray ranks
trials by their best epoch (`best_val_acc`: the epoch whose checkpoint is kept, exported and
retrained), so the study learns from, and names as best, that same value: the searcher's
metric is `best_<metric>` (see `objective_metric`). Each Optuna trial also carries what
links it to the rest of the search, as user attributes:

- `ray_trial_id` and `mlflow_run_id`: the Tune trial and its MLflow child run;
- `skd_status`: completed, early_stopped (ASHA stopped it; its value is still a measured
  validation accuracy, so TPE keeps learning from it and the state stays COMPLETE) or failed;
- `epochs`: how many epochs it trained.

The study's objective carries its name (`study.set_metric_names`), so optuna-dashboard shows
`best_val_acc` instead of "Objective 0".
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from skd_ray.results.statuses import trial_outcome
from skd_ray.results.tracking import SearchRuns
from skd_ray.search.tuning.callbacks import trial_run_id
from skd_ray.search.tuning.numbering import register
from skd_ray.training.metrics import EPOCH
from skd_ray.training.objective import Objective


def objective_metric(metric: str, mode: str) -> str:
    """What Optuna learns from: the best epoch's value of the objective, `best_<metric>` in the
    objective's own direction (the engine reports it every epoch), the value the leaderboard,
    export and final evaluation rank by."""
    return Objective(metric, mode).best_key


class SkdOptunaSearch(OptunaSearch):
    """OptunaSearch that numbers trials, names the objective and annotates finished trials."""

    def __init__(self, *args: Any, runs: SearchRuns | None = None, max_epochs: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runs = runs  # the search's MLflow runs
        self.max_epochs = max_epochs
        names = self.metric if isinstance(self.metric, list) else [self.metric]
        study = getattr(self, "_ot_study", None)
        if study is not None and all(isinstance(n, str) for n in names):
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what the dashboard reads
                warnings.simplefilter("ignore")
                study.set_metric_names(list(names))

    def restore(self, checkpoint_path: str) -> None:
        """A resumed search: its earlier trials keep their numbers on the console and in MLflow."""
        super().restore(checkpoint_path)
        for trial_id, ot_trial in self._ot_trials.items():
            register(trial_id, ot_trial.number)

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            register(trial_id, ot_trial.number)
            ot_trial.set_user_attr("ray_trial_id", trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials:
            register(trial_id, self._ot_trials[trial_id].number)  # a resumed search's earlier trials
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and trial_id not in self._completed_trials:
            epochs = int((result or {}).get(EPOCH, 0) or 0)
            status = trial_outcome(error, epochs, self.max_epochs)
            try:
                ot_trial.set_user_attr("skd_status", status)
                ot_trial.set_user_attr("epochs", epochs)
                run_id = self._run_id(trial_id, result)
                if run_id:
                    ot_trial.set_user_attr("mlflow_run_id", run_id)
            except Exception:  # noqa: BLE001 - annotations must never lose the trial's result
                pass
        super().on_trial_complete(trial_id, result, error)

    def _run_id(self, trial_id: str, result: dict | None) -> str | None:
        return trial_run_id(self.runs, trial_id, result) if self.runs is not None else None


LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class PicklableNSGAII(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II sampler in a form Ray Tune can pickle: Optuna 5.1's genetic samplers
    keep a thread lock (around their population cache), which pickle refuses, and Ray Tune
    pickles the searcher with its sampler when it saves the search. The locks are left out of
    the pickle and made anew when it is read."""

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if not isinstance(v, LOCK_TYPES)}
        state["_skd_locks"] = {k: isinstance(v, LOCK_TYPES[1]) for k, v in self.__dict__.items()
                               if isinstance(v, LOCK_TYPES)}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        locks = state.pop("_skd_locks", {})
        self.__dict__.update(state)
        for name, reentrant in locks.items():
            setattr(self, name, threading.RLock() if reentrant else threading.Lock())
