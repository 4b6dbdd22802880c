"""What a search is asked to do and what it gives back (Ray-free: the CLI builds these before
Ray starts, and `--resume` rebuilds a request from the search's saved state)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from skd_ray.results.store import StoreOfRequest
from skd_ray.search.space.definition import SearchSpace


@dataclass(kw_only=True)
class Resources:
    """What one trial runs on, and how many trials and restarts the search allows: the one
    definition of these fields, shared by a search's request, every trial's settings, the
    DDP pools and the final evaluation (each of those dataclasses inherits it)."""

    workers: int = 1  # DDP workers per trial
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # a fraction packs several trials on one GPU
    max_concurrent: int | None = None  # cap on trials at once (None: what fits)
    max_failures: int = 2  # restarts of a crashed trial from its last checkpoint

    def worker_bundle(self) -> dict[str, float]:
        """One worker's Ray resources, as Ray Train and placement groups name them."""
        bundle = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker > 0:
            bundle["GPU"] = self.gpus_per_worker
        return bundle

    def resources(self) -> Resources:
        """Just these fields (a request or settings object is also a Resources)."""
        return Resources(**{f.name: getattr(self, f.name) for f in fields(Resources)})


@dataclass
class SearchRequest(Resources, StoreOfRequest):
    """Everything a search needs, as given on the command line (the resource fields come from
    `Resources`)."""

    space: SearchSpace
    storage: str
    tracking_uri: str
    experiment: str
    search_name: str
    num_samples: int = 8
    address: str | None = None
    # The database of the search's Optuna study (--optuna-storage); None: optuna.db in its folder
    # (see skd_ray.search.state.study).
    optuna_storage: str | None = None
    seed: int = 0
    grace_period: int = 2
    reduction_factor: int = 3
    always_ray_train: bool = False
    # Multi-worker trials train in persistent DDP pools (one Ray Train run per concurrent
    # trial for the whole search); off: a new Ray Train run per trial.
    ddp_pool: bool = True
    # Pools on an autoscaling cluster too (there the default is a Train run per trial: a pool
    # holds its nodes until the search ends; see skd_ray.search.cluster.autoscaler).
    keep_pools: bool = False
    sampler: str = "tpe"  # tpe | random (a baseline; multi-objective searches use NSGA-II)
    early_stopping: bool = True  # ASHA; off: every trial runs its full epoch budget
    start_from_defaults: bool = True  # the first trial is the space's defaults (published settings)
    resume: bool = False
    # Seconds the search may wait for resources without any progress before it gives up
    # (interrupted, resumable); see skd_ray.search.cluster.waiting.
    resource_wait_s: float = 900.0
    # How long the search waits for its tracking store (an MLflow server or database that went
    # away) before it stops as on Ctrl-C (skd_ray.search.tuning.store_watch).
    tracking_outage_s: float = 900.0
    extra_tags: dict[str, str] = field(default_factory=dict)
    # Two or more (metric, mode) pairs make a Pareto search (see build_search_algorithm).
    objectives: list[tuple[str, str]] = field(default_factory=list)
    # Trial configs to run once each instead of sampling (final evaluation of chosen configs).
    points: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[Any] = field(default_factory=list)  # extra Tune callbacks (benchmarks, tools)
    # Console: 0 only the final summary (-q), 1 one line per trial event (default), 2 also
    # Ray Tune's tables and Ray's logs (-v); see skd_ray.search.console.ray_logs.
    verbosity: int = 1



@dataclass
class SearchOutcome:
    experiment_id: str
    parent_run_id: str
    experiment_dir: str
    num_trials: int
    num_errors: int
    interrupted: bool = False  # stopped before every trial ended (Ctrl-C); --resume continues it
