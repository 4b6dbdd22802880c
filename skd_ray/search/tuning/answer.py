"""The search's answer in MLflow: trial runs named by their number while the search runs,
and the parent run's summary when it ends (`skd_ray.results.summary` writes it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from skd_ray.results.names import Tags
from skd_ray.results.statuses import Status
from skd_ray.results.summary import SearchSummary, short_name, show, summarise_search, trial_run_name
from skd_ray.results.tracking import SearchRuns
from skd_ray.search.request import SearchRequest
from skd_ray.search.space.definition import SearchSpace
from skd_ray.search.state.study import StudyStorage
from skd_ray.search.tuning.callbacks import trial_run_id
from skd_ray.search.tuning.numbering import NUMBERS, label


class TrialRunLabels(tune.Callback):
    """Names a trial's MLflow run `t03 byot lr=0.05 ...` (and its `skd.trial_name` tag `t03`,
    what the leaderboard shows) at its first result, for a search saved before Tune named its
    trials by their number: such a search resumes with this callback, and its trials' processes
    only know Tune's default names. A trial that Tune named (`numbering.trial_name`) named its
    run itself, and is left alone. The final name (with `[ASHA@2]` for a stopped trial) is set
    by the summary."""

    def __init__(self, runs: SearchRuns, space: SearchSpace | None = None) -> None:
        self.runs = runs
        self.space = space
        self.named: set[str] = set()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if trial.trial_id in self.named or getattr(trial, "custom_trial_name", None):
            return
        self.named.add(trial.trial_id)
        from mlflow.entities import RunTag

        try:
            run_id = trial_run_id(self.runs, trial.trial_id, result)
            if run_id is None:
                return
            values, method = {}, ""
            if self.space is not None:
                flat = self.space.to_flat(trial.config)
                values = {p.key: flat[p.key] for p in self.space.params if p.key in flat}
                method = str(flat.get("method", ""))
            name = trial_run_name(label(trial.trial_id), method, values, Status.RUNNING, 0)
            # One request: the run name as its tag (MLflow renames the run) beside the trial's number.
            self.runs.client.log_batch(run_id, tags=[RunTag(Tags.RUN_NAME, name),
                                                     RunTag(Tags.TRIAL_NAME, label(trial.trial_id))])
        except Exception:  # noqa: BLE001 - a name is cosmetic; the summary sets it again at the end
            pass


def write_summary(req: SearchRequest, exp_dir: Path, name: str, runs: SearchRuns,
                  max_epochs: int) -> SearchSummary | None:
    """Summarise the search on its parent run and print its answer in one or two lines. Never
    raises: the results are safe in MLflow, a summary problem is one warning line."""
    try:
        labels = {trial_id: label(trial_id) for trial_id in list(NUMBERS)}
        summary = summarise_search(runs.store, runs.experiment_id, runs.parent_run_id, name, max_epochs,
                                   [p.key for p in req.space.params], labels,
                                   StudyStorage(req.optuna_storage, exp_dir).describe(name))
    except Exception as err:  # noqa: BLE001
        first = (str(err).strip().splitlines() or [""])[0][:300]
        print(f"warning: the search's MLflow summary is incomplete ({type(err).__name__}: {first})")
        return None
    if summary.best is not None:
        values = " ".join(f"{short_name(k)}={show(v)}" for k, v in summary.searched.items())
        best = summary.best
        print(f"best: {best.name} {best.objective.metric} {best.value:.4f} ({values})")
    if summary.epochs_full:
        print(f"epochs trained: {summary.epochs_trained} of {summary.epochs_full} without early stopping "
              f"({summary.saved_fraction:.0%} saved)")
    return summary
