"""What trials and pools say to each other through the mailbox, as types.

A `PoolJob` goes from a trial to a pool; `Report`, `Done` and `Failed` come back to the
trial. They are plain dataclasses (picklable, Ray-free) so the mailbox, the pool workers and
the trial side agree on one shape, and the mailbox's unit tests build them without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from skd_ray.results.store import MlflowStore


@dataclass(frozen=True)
class PoolJob:
    """One trial attempt for a pool: its flat config, its MLflow run and where to resume."""

    flat: dict[str, Any]
    run_id: str
    store: MlflowStore  # the trial's MLflow store (pickles as its URI)
    started_at: float
    # The trial's last checkpoint as bytes in Ray's object store, in a one-element list so
    # Ray passes the reference rather than the bytes; None for a fresh start.
    state: list[Any] | None = None

    def with_state(self, state: list[Any] | None) -> PoolJob:
        return replace(self, state=state)


@dataclass(frozen=True)
class Report:
    """One epoch of the job: rank 0's metrics and its checkpoint (object reference, in a list)."""

    metrics: dict[str, float]
    state: list[Any]


@dataclass(frozen=True)
class Done:
    """The job trained to its last epoch. `reported == 0` means it resumed from its final
    checkpoint and reported nothing: the trial hands Tune these stored metrics once more."""

    metrics: dict[str, float]
    reported: int


@dataclass(frozen=True)
class Failed:
    """The job failed. Deterministic failures (NaN loss, bad data) end the trial; others (a
    pool worker died) let Tune retry it from its checkpoint."""

    message: str
    deterministic: bool


PoolEvent = Report | Done | Failed
