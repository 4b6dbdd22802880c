"""What one trial attempt trains, and how its training ends: the types shared by the trial
function (`skd_ray.search.execution.trial`) and the three ways it trains (`skd_ray.search.execution.executors`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skd_ray.config import TrainConfig
from skd_ray.results.tracking import SearchRuns
from skd_ray.search.request import Resources
from skd_ray.search.space.definition import SearchSpace

# The field of every result a trial hands Tune that names its MLflow run: the driver's callbacks
# and searcher read the run from the result instead of searching the store for it.
RUN_ID_RESULT = "mlflow_run_id"


@dataclass
class TrialSettings(Resources):
    """What every trial of a search shares (picklable; shipped to the trial actors)."""

    space: SearchSpace
    runs: SearchRuns  # the search's MLflow runs
    storage_path: str
    always_ray_train: bool = False  # run one-worker trials through Ray Train too
    pool: str | None = None  # PoolMailbox actor name: multi-worker trials train in persistent DDP pools

    @property
    def trains_in_trial_process(self) -> bool:
        """One-worker trials train inside the Tune trial process (see module docstring)."""
        return self.workers == 1 and not self.always_ray_train


@dataclass(frozen=True)
class TrialJob:
    """One attempt of one trial: its resolved config (also as flat keys, for other processes),
    its MLflow run and Ray trial, and when the attempt started (for `time_startup_s`)."""

    cfg: TrainConfig
    flat: dict[str, Any]
    run_id: str
    trial_id: str
    started_at: float
    settings: TrialSettings


@dataclass(frozen=True)
class Trained:
    """How an attempt's training ended: its final metrics, and whether this attempt reported
    any epoch to Tune. An attempt that resumed from its final checkpoint reports nothing; the
    trial then hands Tune the stored final metrics once more, so Tune records the trial."""

    metrics: dict[str, float]
    reported: bool


class DeterministicFailure(Exception):
    """Training failed in a way a retry would repeat (NaN loss, bad data, a bad config)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
