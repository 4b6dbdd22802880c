"""Ray Tune callbacks of a search (driver side)."""

from __future__ import annotations

from typing import Any

from ray import tune

from skd_ray.results.names import Tags
from skd_ray.results.tracking import client, find_trial_run, finish_trial_run
from skd_ray.training.metrics import EPOCH


class ChildRunStatus(tune.Callback):
    """Driver-side callback: closes the child run of a trial whose function never returned
    (stopped by ASHA: early_stopped; crashed: failed with the reason)."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, max_epochs: int) -> None:
        self.uri = uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.max_epochs = max_epochs

    def _close(self, trial: Any, status: str, reason: str | None) -> None:
        run_id = find_trial_run(self.uri, self.experiment_id, self.parent_run_id, trial.trial_id)
        if run_id is None:
            return
        tags = client(self.uri).get_run(run_id).data.tags
        if tags.get(Tags.STATUS) == "running":
            if status == "failed":
                reason = tags.get(Tags.LAST_ERROR) or reason
            finish_trial_run(self.uri, run_id, status, reason)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epoch = (trial.last_result or {}).get(EPOCH, 0)
        self._close(trial, "completed" if epoch >= self.max_epochs else "early_stopped", None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, "failed", str(getattr(trial, "error_msg", "") or "trial raised"))
