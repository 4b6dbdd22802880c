"""The three ways a trial trains, behind one interface (`TrialExecutor.train`).

- `InTrialProcess`: a one-worker trial trains inside its Tune trial process
  (`TuneTrialSession`). Tune reuses that process for the next trial, so a trial starts in
  well under a second instead of paying for a Train controller and worker actors.
- `InPool`: a multi-worker (DDP) trial trains in one of the search's DDP pools
  (`skd_ray.search.execution.pool`: long-lived Ray Train runs) and hands rank 0's per-epoch reports to
  Tune itself.
- `TrainRunPerTrial`: a multi-worker trial launches its own Ray Train run (the Ray-standard
  pattern; the default on autoscaling clusters, whose pools would hold nodes the autoscaler
  should release). Ray 2.60 runs Train V2, where a trainer cannot be handed to `Tuner`
  directly, so the trial builds a `TorchTrainer` with the resolved config, runs it, and
  `TuneReportCallback` forwards rank 0's per-epoch reports to Tune (so ASHA sees them).

Each returns `Trained` or raises `DeterministicFailure`; what every path shares (the MLflow
run, replaying a deterministic failure, re-reporting a finished attempt's result) is written
once, in `skd_ray.search.execution.trial.run_trial`.
"""

from __future__ import annotations

from typing import Any, Protocol

from skd_ray.errors import GpuShareExceeded, SkdError
from skd_ray.results.names import Tags
from skd_ray.results.tracking import TrialTracker
from skd_ray.search.execution.job import DeterministicFailure, Trained, TrialJob, TrialSettings
from skd_ray.search.execution.pool.link import PoolLink
from skd_ray.search.execution.pool.messages import Done, PoolJob, Report
from skd_ray.search.execution.sessions import RaySession, TuneTrialSession
from skd_ray.training.engine import fit
from skd_ray.training.metrics import EPOCH
from skd_ray.training.resolve import resolve_config

# Checkpoint retention per trial: the latest (for restarts) and the best (for the artifact).
CHECKPOINTS_KEPT = 2


class TrialExecutor(Protocol):
    def train(self, job: TrialJob) -> Trained: ...


def executor_for(settings: TrialSettings) -> TrialExecutor:
    """The way trials of this search train (see the module docstring)."""
    if settings.trains_in_trial_process:
        return InTrialProcess()
    if settings.pool is not None:
        return InPool()
    return TrainRunPerTrial()


def deterministic(err: SkdError) -> DeterministicFailure:
    return DeterministicFailure(f"{type(err).__name__}: {err}")


class InTrialProcess:
    """Train a one-worker trial right here; Tune restarts it from its checkpoint on failure."""

    def train(self, job: TrialJob) -> Trained:
        tracker = TrialTracker(job.settings.runs.store, job.run_id, chart_threshold=job.cfg.eval.charted_threshold())
        session = TuneTrialSession(job.cfg.train.device, tracker, job.started_at, job.settings.gpus_per_worker)
        try:
            metrics = fit(job.cfg, session)
        except SkdError as err:
            raise deterministic(err) from None
        return Trained(metrics, reported=session.reports > 0)


class PoolJobFailed(RuntimeError):
    """The trial's DDP pool lost a worker (or the trial raised there): Tune retries the trial."""


class InPool:
    """Post the job to the search's DDP pools, hand every epoch's metrics and checkpoint to
    Tune, answer whether to go on."""

    def train(self, job: TrialJob) -> Trained:
        import ray
        from ray import tune

        pool_job = PoolJob(job.flat, job.run_id, job.settings.runs.store, job.started_at)
        with PoolLink(ray.get_actor(job.settings.pool), job.trial_id, pool_job, tune.get_checkpoint()) as link:
            for event in link.events():
                if isinstance(event, Report):
                    link.report_to_tune(event)
                elif isinstance(event, Done):
                    return Trained(event.metrics, reported=event.reported > 0)
                elif event.deterministic:
                    raise DeterministicFailure(event.message)
                else:
                    raise PoolJobFailed(event.message)
        raise PoolJobFailed("the pool's mailbox closed before the job ended")


def train_worker(loop_config: dict[str, Any]) -> dict[str, str] | None:
    """Ray Train loop on every worker: resolve the config and run the generic engine."""
    cfg = resolve_config(loop_config["flat"])
    sink = TrialTracker(loop_config["store"], loop_config["run_id"],
                        chart_threshold=cfg.eval.charted_threshold())
    session = None
    try:
        session = RaySession(cfg.train.device, sink, loop_config.get("started_at"),
                             loop_config.get("gpus_per_worker", 0.0))
        fit(cfg, session)
    except GpuShareExceeded as err:
        if session is None or session.world_size == 1:
            return {"error": deterministic(err).message}
        # Unlike a NaN loss (every rank sees the same mean), only this rank may have run out:
        # the others may be waiting in a collective it will never join. Its reason goes on the
        # run, where the trial's retry finds it and fails at once with it, and the error ends
        # this worker, so Ray Train stops the others instead of leaving them waiting.
        sink.log_tags({Tags.DETERMINISTIC_ERROR: deterministic(err).message})
        raise
    except SkdError as err:
        # Deterministic (divergence, bad data): restarting the workers would fail the same
        # way, so it is returned to the trial function instead of triggering Train's retries.
        return {"error": f"{type(err).__name__}: {err}"}
    return None


class TrainRunPerTrial:
    """Train a multi-worker trial as its own Ray Train (DDP) run that reports through to Tune."""

    def train(self, job: TrialJob) -> Trained:
        import ray.train
        from ray.train.torch import TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        settings = job.settings
        train_run = f"train_{job.trial_id}"
        finished = finished_train_metrics(f"{settings.storage_path.rstrip('/')}/{train_run}", job.cfg.train.epochs)
        if finished is not None:
            # Training ended but the search was interrupted before Tune recorded it.
            return Trained(finished, reported=False)
        use_gpu = settings.gpus_per_worker > 0
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"flat": job.flat, "run_id": job.run_id, "store": settings.runs.store,
                               "started_at": job.started_at, "gpus_per_worker": settings.gpus_per_worker},
            scaling_config=ray.train.ScalingConfig(num_workers=settings.workers, use_gpu=use_gpu,
                                                   resources_per_worker=settings.worker_bundle()),
            run_config=ray.train.RunConfig(
                name=train_run,
                storage_path=settings.storage_path,
                callbacks=[TuneReportCallback()],
                failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(
                    num_to_keep=CHECKPOINTS_KEPT, checkpoint_score_attribute=settings.space.metric,
                    checkpoint_score_order=settings.space.mode),
            ),
        )
        result = trainer.fit()
        error = (result.return_value or {}).get("error")
        if error:
            raise DeterministicFailure(error)
        return Trained(dict(result.metrics or {}), reported=True)


def finished_train_metrics(run_path: str, epochs: int) -> dict[str, Any] | None:
    """Final metrics of the trial's Ray Train run when it already trained all `epochs`
    (every epoch is checkpointed with its metrics), else None (no run yet, or unfinished)."""
    import ray.train

    try:
        result = ray.train.Result.from_path(run_path)
    except RuntimeError:  # no such run, or it never registered a checkpoint
        return None
    metrics = dict(result.metrics or {})
    return metrics if metrics.get(EPOCH, 0) >= epochs else None
