"""MLflow adapter: one parent run per search, one child run per trial, rank 0 logs.

Everything goes through the store's `MlflowClient` (`skd_ray.results.store.MlflowStore`) with
explicit run ids (no global "active run"), so the driver, trial processes and rank-0 workers
can log to the same runs concurrently.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skd_ray.results.mlflow_ui import FIRST_METRICS, objective_first
from skd_ray.results.names import Artifacts, Tags
from skd_ray.results.statuses import REOPENED, Status, mlflow_run_status
from skd_ray.results.store import MlflowStore, param_text, retry
from skd_ray.training.metrics import SWEEP_COLUMNS, logged_name, sweep_rows

if TYPE_CHECKING:
    from skd_ray.training.hardware import RunSetup


CONSTANT_PARAM = "config."  # prefix of a search's constants on its parent run


@functools.cache
def git_commit() -> str:
    """Commit of the code being run (the package's checkout), or 'unknown'. Read once per
    process: the code a process runs is what it imported, and a trial process runs many trials."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def constants_of(parent_params: dict[str, str]) -> dict[str, str]:
    """The constants a search's parent run holds (`config.<key>`), by config key."""
    return {k.removeprefix(CONSTANT_PARAM): v for k, v in parent_params.items() if k.startswith(CONSTANT_PARAM)}


def trial_params(params: dict[str, str], constants: dict[str, str]) -> dict[str, str]:
    """A trial's whole flat config as params: the search's constants, then what the trial
    logged (its searched values; every value, for trials logged before the constants moved
    to the parent)."""
    return {**constants, **params}


class SearchRuns:
    """One search's MLflow runs: the tracking store, the experiment and the parent run. The
    driver, its Tune callbacks and every trial get this object instead of a store and two ids
    to pass on. Picklable: a trial process that receives it makes its own client on first use.
    """

    def __init__(self, store: MlflowStore, experiment_id: str = "", parent_run_id: str = "") -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        # Config values every trial shares, as logged on the parent (`config.<key>`): a trial
        # logs only the params that differ from them (its searched values).
        self.constants: dict[str, str] = {}

    @classmethod
    def start(cls, store: MlflowStore, experiment: str, run_name: str, tags: dict[str, str],
              params: dict[str, Any], constants: dict[str, Any] | None = None) -> SearchRuns:
        """Create the parent run of a new search (in `experiment`, made if new); `constants`
        (flat config values all its trials share) are logged on it once, not on every trial."""
        runs = cls(store, store.experiment_id(experiment, create=True) or "")
        run = runs.client.create_run(runs.experiment_id, run_name=run_name,
                                     tags={Tags.KIND: "search", Tags.GIT_COMMIT: git_commit(), **tags})
        runs.parent_run_id = run.info.run_id
        runs.constants = {k: param_text(v) for k, v in (constants or {}).items()}
        store.log_params(runs.parent_run_id, {**params, **{CONSTANT_PARAM + k: v for k, v in runs.constants.items()}})
        return runs

    def load_constants(self) -> None:
        """Read the constants back from the parent run (a resumed search)."""
        self.constants = constants_of(self.client.get_run(self.parent_run_id).data.params)

    @property
    def client(self) -> Any:
        return self.store.client

    def trial_run(self, trial_id: str) -> str | None:
        """The child run already created for Ray trial `trial_id` (a restarted trial reuses it)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{Tags.TRIAL_ID}` = '{trial_id}' and tags.`{Tags.PARENT_RUN_ID}` = "
                          f"'{self.parent_run_id}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def start_trial(self, trial_id: str, run_name: str, flat_config: dict[str, Any], tags: dict[str, str]) -> str:
        """Find or create the child run of a trial; params and the config artifact are logged once."""
        return self.open_trial(trial_id, run_name, flat_config, tags)[0]

    def open_trial(self, trial_id: str, run_name: str, flat_config: dict[str, Any],
                   tags: dict[str, str]) -> tuple[str, bool]:
        """`start_trial`, and whether the run existed (an earlier attempt of the trial made it)."""
        existing = self.trial_run(trial_id)
        if existing is not None:
            self.reopen(existing)
            # The earlier attempt may have ended between creating the run and logging its
            # config (killed, or stopped while the store was away): log it again. MLflow takes
            # a param logged twice with the same value, and the artifact is rewritten whole.
            self._log_config(existing, flat_config)
            return existing, True
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={
            Tags.PARENT_RUN_ID: self.parent_run_id, Tags.TRIAL_ID: trial_id, Tags.STATUS: Status.RUNNING,
            Tags.KIND: "trial", Tags.GIT_COMMIT: git_commit(), **tags})
        self._log_config(run.info.run_id, flat_config)
        return run.info.run_id, False

    def _log_config(self, run_id: str, flat_config: dict[str, Any]) -> None:
        """The trial's params (those that differ from the search's constants) and its whole
        config as the run's `config.json`."""
        self.store.log_params(run_id, {k: v for k, v in flat_config.items() if self.constants.get(k) != param_text(v)})
        self.client.log_text(run_id, json.dumps(flat_config, indent=2, sort_keys=True), Artifacts.CONFIG)

    def children(self) -> list[Any]:
        """Every child run (the trials of a search, the retrainings of a final evaluation)."""
        return self.store.search_all([self.experiment_id], f"tags.`{Tags.PARENT_RUN_ID}` = '{self.parent_run_id}'")

    def open_trials(self) -> list[str]:
        """Child runs that are not closed (running, or interrupted with their search)."""
        return [r.info.run_id for r in self.children() if r.data.tags.get(Tags.STATUS) in REOPENED]

    def tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def reopen(self, run_id: str | None = None) -> None:
        """Mark a run (default: the parent) of an interrupted search running again."""
        run_id = run_id or self.parent_run_id
        self.client.set_terminated(run_id, "RUNNING")
        self.client.set_tag(run_id, Tags.STATUS, Status.RUNNING)

    def close(self, run_id: str | None, status: str, reason: str | None = None) -> None:
        """Close a run (default: the parent): status is completed, early_stopped, failed (with
        the reason) or interrupted (its search stopped before it ended; `--resume` reopens it)."""
        from mlflow.entities import RunTag

        run_id = run_id or self.parent_run_id
        tags = [RunTag(Tags.STATUS, status)] + ([RunTag(Tags.FAILURE_REASON, reason[:5000])] if reason else [])
        self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, mlflow_run_status(status))


class TrialTracker:
    """Per-epoch metric sink for one child run (used by rank 0 and the debugging mode).

    Metrics are logged under their grouped MLflow names (`skd_ray.training.metrics.logged_name`),
    the dynamic early-exit policy only at `chart_threshold`; every epoch's whole threshold sweep
    is appended to the run's table `early_exit_sweep.json`."""

    def __init__(self, store: MlflowStore, run_id: str, artifact_every_best: bool = True,
                 chart_threshold: float | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.artifact_every_best = artifact_every_best
        self.chart_threshold = chart_threshold

    def log_epoch(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        named = {name: v for k, v in metrics.items() if (name := logged_name(k, self.chart_threshold)) is not None}
        # The objective first: MLflow lists a run's metrics in the order they were first logged.
        items = [Metric(name, float(named[name]), now, step) for name in objective_first(named, FIRST_METRICS)]
        c = self.store.client
        for i in range(0, len(items), 500):
            retry(lambda batch=items[i:i + 500]: c.log_batch(self.run_id, metrics=batch))
        rows = sweep_rows(metrics, step)
        if rows:
            columns = {key: [row.get(key, float("nan")) for row in rows] for key in SWEEP_COLUMNS}
            with warnings.catch_warnings():  # pandas 3 deprecation inside MLflow's table check
                warnings.simplefilter("ignore")
                retry(lambda: c.log_table(self.run_id, columns, Artifacts.EARLY_EXIT_SWEEP))

    def log_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, v) for k, v in tags.items()]
        retry(lambda: self.store.client.log_batch(self.run_id, tags=batch))

    def log_setup(self, setup: RunSetup) -> None:
        """Tag the run with how it trained on its device (`setup_tags`)."""
        self.log_tags(setup_tags(setup))

    def log_best_state(self, state: dict[str, Any], directory: Path) -> None:
        """Store the best checkpoint (deployable + method state) as the run's artifact."""
        import torch

        directory.mkdir(parents=True, exist_ok=True)
        path = directory / Artifacts.BEST_CHECKPOINT
        torch.save(state, path)
        retry(lambda: self.store.client.log_artifact(self.run_id, str(path)))


def setup_tags(setup: RunSetup) -> dict[str, str]:
    """A run's device, autocast dtype, memory layout, cuDNN autotuning and GPU memory share as
    `skd.*` tags: what ran, whatever the config said (`auto` is settled by the worker)."""
    tags = {Tags.DEVICE: setup.device, Tags.AMP: setup.amp, Tags.CHANNELS_LAST: str(setup.channels_last).lower(),
            Tags.CUDNN_BENCHMARK: str(setup.cudnn_benchmark).lower()}
    if setup.gpu_share is not None:
        tags[Tags.GPU_SHARE] = f"{setup.gpu_share:g}"
    return tags
