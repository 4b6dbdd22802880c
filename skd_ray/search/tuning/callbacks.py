"""Ray Tune callbacks of a search (driver side)."""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.logger import TBXLoggerCallback

from skd_ray.results.names import Tags
from skd_ray.results.statuses import Status, trial_outcome
from skd_ray.results.tracking import SearchRuns
from skd_ray.search.execution.job import RUN_ID_RESULT
from skd_ray.training.metrics import EPOCH


def trial_run_id(runs: SearchRuns, trial_id: str, result: dict | None) -> str | None:
    """The MLflow run of trial `trial_id`: as its latest result names it, else (a trial that
    failed before its first result) found in the store."""
    return (result or {}).get(RUN_ID_RESULT) or runs.trial_run(trial_id)


class ChildRunStatus(tune.Callback):
    """Driver-side callback: closes the child run of a trial whose function never returned
    (stopped by ASHA: early_stopped; crashed: failed with the reason)."""

    def __init__(self, runs: SearchRuns, max_epochs: int) -> None:
        self.runs = runs
        self.max_epochs = max_epochs

    def _close(self, trial: Any, status: str, reason: str | None) -> None:
        run_id = trial_run_id(self.runs, trial.trial_id, trial.last_result)
        if run_id is None:
            return
        tags = self.runs.tags(run_id)
        if tags.get(Tags.STATUS) == Status.RUNNING:
            if status == Status.FAILED:
                reason = tags.get(Tags.LAST_ERROR) or reason
            self.runs.close(run_id, status, reason)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epoch = (trial.last_result or {}).get(EPOCH, 0)
        self._close(trial, trial_outcome(False, epoch, self.max_epochs), None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, Status.FAILED, str(getattr(trial, "error_msg", "") or "trial raised"))


class NoTensorBoardEvents(TBXLoggerCallback):
    """Stands in for Tune's TensorBoard logger, which Tune adds to every run that lacks one: a
    search writes no TensorBoard events (every epoch's metrics are in MLflow). Profiled on a
    120-trial search, that logger and its writer thread took about 6% of the driver's CPU,
    which sits on every trial's path from one trial to the next. Tune's CSV and JSON results
    (what its ExperimentAnalysis reads) are still written."""

    def __init__(self) -> None:  # noqa: D107 - no TensorBoard writer to open
        pass

    def log_trial_start(self, trial: Any) -> None:
        pass

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        pass

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        pass
