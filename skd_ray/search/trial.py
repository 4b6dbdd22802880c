"""One search trial on Ray: a Tune function trainable, training in place or through Ray Train.

A one-worker trial trains inside the Tune trial process itself (`TuneTrialSession`): Tune
reuses that process for the next trial, so a trial starts in well under a second instead
of paying for a Train controller and worker actors. A multi-worker (DDP) trial trains in one
of the search's DDP pools (`skd_ray.search.pool`: long-lived Ray Train runs) and hands rank 0's
per-epoch reports to Tune itself. With `--train-run-per-trial` it launches its own Ray Train
run instead: Ray 2.60 runs Train V2, where a trainer cannot be handed to `Tuner` directly, so
the trial function builds a `TorchTrainer` with the trial's resolved config, runs it, and lets
`TuneReportCallback` forward rank 0's per-epoch reports to Tune (so ASHA sees them).
Either way the trial function owns the trial's MLflow child run; rank 0 logs into it.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any, NoReturn

from skd_ray.errors import SkdError
from skd_ray.results.names import Tags
from skd_ray.results.tracking import TrialTracker, client, finish_trial_run, start_trial_run
from skd_ray.search.pool.link import PoolLink
from skd_ray.search.pool.messages import Done, PoolJob, Report
from skd_ray.search.sessions import RaySession, TuneTrialSession
from skd_ray.search.space import SearchSpace
from skd_ray.training.engine import fit
from skd_ray.training.metrics import EPOCH
from skd_ray.training.resolve import resolve_config

# Checkpoint retention per trial: the latest (for restarts) and the best (for the artifact).
CHECKPOINTS_KEPT = 2
# Starts of a trial from a checkpoint (see record_restart).
RESTARTS_TAG = "skd.restarts"
# Set on a child run whose training failed deterministically (NaN loss, bad data): a restart
# of that trial by Tune would fail the same way, so it ends at once with the same reason.


class TrialFailed(RuntimeError):
    """A trial ended with a deterministic error (e.g. NaN loss) reported by rank 0."""


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a search shares (picklable; shipped to the trial actors)."""

    space: SearchSpace
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    storage_path: str
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 2
    always_ray_train: bool = False  # run one-worker trials through Ray Train too
    pool: str | None = None  # PoolMailbox actor name: multi-worker trials train in persistent DDP pools

    @property
    def trains_in_trial_process(self) -> bool:
        """One-worker trials train inside the Tune trial process (see module docstring)."""
        return self.workers == 1 and not self.always_ray_train


def train_worker(loop_config: dict[str, Any]) -> dict[str, str] | None:
    """Ray Train loop on every worker: resolve the config and run the generic engine."""
    cfg = resolve_config(loop_config["flat"])
    sink = TrialTracker(loop_config["tracking_uri"], loop_config["run_id"])
    try:
        fit(cfg, RaySession(cfg.train.device, sink, loop_config.get("started_at")))
    except SkdError as err:
        # Deterministic (divergence, bad data): restarting the workers would fail the same
        # way, so it is returned to the trial function instead of triggering Train's retries.
        return {"error": f"{type(err).__name__}: {err}"}
    return None


def run_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """Tune function trainable: one trial, tracked as an MLflow child run."""
    from ray import tune

    started_at = time.time()
    ctx = tune.get_context()
    flat = settings.space.to_flat(config)
    cfg = resolve_config(flat)
    run_id = start_trial_run(
        settings.tracking_uri, settings.experiment_id, settings.parent_run_id, ctx.get_trial_id(),
        ctx.get_trial_name(), cfg.to_flat(),
        {Tags.METHOD: cfg.method, Tags.SEED: str(cfg.train.seed), Tags.TRIAL_NAME: ctx.get_trial_name()},
    )
    if tune.get_checkpoint() is not None:
        record_restart(settings.tracking_uri, run_id)
    try:
        if settings.trains_in_trial_process:
            train_in_trial_process(cfg, run_id, settings.tracking_uri, started_at)
        elif settings.pool is not None:
            train_in_pool(flat, run_id, settings, ctx.get_trial_id(), started_at)
        else:
            train_with_ray_train(flat, cfg.train.epochs, run_id, settings, ctx.get_trial_id(), started_at)
    except Exception as err:
        # Whether this is a failure or Tune stopping the trial (ASHA) only the driver knows:
        # record the error and let its ChildRunStatus callback set the final status.
        client(settings.tracking_uri).set_tag(run_id, Tags.LAST_ERROR, failure_reason(err))
        raise
    finish_trial_run(settings.tracking_uri, run_id, "completed")


def record_restart(tracking_uri: str, run_id: str) -> None:
    """Count on the trial's run each start from a checkpoint (Tune's retry after a lost node
    or process, or `--resume`): the run shows that the trial was restarted, and how often."""
    mlflow = client(tracking_uri)
    restarts = int(mlflow.get_run(run_id).data.tags.get(RESTARTS_TAG, "0")) + 1
    mlflow.set_tag(run_id, RESTARTS_TAG, str(restarts))


def raise_if_failed_before(tracking_uri: str, run_id: str) -> None:
    """A trial restarted by Tune after a deterministic error fails again at once, same reason."""
    earlier = client(tracking_uri).get_run(run_id).data.tags.get(Tags.DETERMINISTIC_ERROR)
    if earlier:
        raise TrialFailed(earlier)


def fail_deterministically(tracking_uri: str, run_id: str, reason: str) -> NoReturn:
    """Record `reason` on the run (for `raise_if_failed_before`) and fail the trial with it."""
    client(tracking_uri).set_tag(run_id, Tags.DETERMINISTIC_ERROR, reason)
    raise TrialFailed(reason) from None


def train_in_trial_process(cfg: Any, run_id: str, tracking_uri: str, started_at: float) -> None:
    """Train a one-worker trial right here; Tune restarts it from its checkpoint on failure."""
    from ray import tune

    raise_if_failed_before(tracking_uri, run_id)
    session = TuneTrialSession(cfg.train.device, TrialTracker(tracking_uri, run_id), started_at)
    try:
        metrics = fit(cfg, session)
    except SkdError as err:
        fail_deterministically(tracking_uri, run_id, f"{type(err).__name__}: {err}")
    if session.reports == 0 and metrics:
        # Restored from its final checkpoint (the search was interrupted after the last
        # epoch): hand Tune the stored final result once more.
        tune.report(metrics)


def train_in_pool(flat: dict[str, Any], run_id: str, settings: TrialSettings, trial_id: str,
                  started_at: float) -> None:
    """Train a multi-worker trial in one of the search's DDP pools (`skd_ray.search.pool`): post
    the job, hand every epoch's metrics and checkpoint to Tune, answer whether to go on."""
    import ray
    from ray import tune

    raise_if_failed_before(settings.tracking_uri, run_id)
    job = PoolJob(flat, run_id, settings.tracking_uri, started_at)
    with PoolLink(ray.get_actor(settings.pool), trial_id, job, tune.get_checkpoint()) as link:
        for event in link.events():
            if isinstance(event, Report):
                link.report_to_tune(event)
            elif isinstance(event, Done):
                if not event.reported and event.metrics:
                    tune.report(event.metrics)  # resumed after its last epoch: the stored result
                return
            elif event.deterministic:
                fail_deterministically(settings.tracking_uri, run_id, event.message)
            else:
                raise PoolJobFailed(event.message)


class PoolJobFailed(RuntimeError):
    """The trial's DDP pool lost a worker (or the trial raised there): Tune retries the trial."""


def train_with_ray_train(flat: dict[str, Any], epochs: int, run_id: str, settings: TrialSettings,
                         trial_id: str, started_at: float) -> None:
    """Train a multi-worker trial as a Ray Train (DDP) run that reports through to Tune."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    train_run = f"train_{trial_id}"
    finished = finished_train_metrics(f"{settings.storage_path.rstrip('/')}/{train_run}", epochs)
    if finished is not None:
        # Training ended but the search was interrupted before Tune recorded it: hand Tune
        # the stored final result instead of a Train run with nothing left to report.
        tune.report(finished)
        return
    use_gpu = settings.gpus_per_worker > 0
    resources = {"CPU": settings.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = settings.gpus_per_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"flat": flat, "run_id": run_id, "tracking_uri": settings.tracking_uri,
                           "started_at": started_at},
        scaling_config=ray.train.ScalingConfig(num_workers=settings.workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
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
        raise TrialFailed(error)


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


def failure_reason(err: BaseException) -> str:
    """The innermost error message of a (possibly Ray-wrapped) exception, for MLflow."""
    text = "".join(traceback.format_exception_only(type(err), err)).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Diverged" in line:
            return line.strip()[:2000]
    return (lines[-1] if lines else repr(err))[:2000]
