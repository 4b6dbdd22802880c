"""One search trial on Ray: the Tune function trainable and what every trial does the same way
whichever executor trains it (`skd_ray.search.execution.executors`): it owns the trial's MLflow child run
(rank 0 logs into it), counts restarts from a checkpoint, fails at once with the same reason
when an earlier attempt failed deterministically, and hands Tune the stored final result of an
attempt that resumed after its last epoch.
"""

from __future__ import annotations

import time
import traceback
from typing import Any, NoReturn

from skd_ray.results.names import Tags
from skd_ray.results.statuses import Status
from skd_ray.results.summary import trial_run_name
from skd_ray.results.tracking import SearchRuns
from skd_ray.search.execution.executors import executor_for
from skd_ray.search.execution.job import RUN_ID_RESULT, DeterministicFailure, TrialJob, TrialSettings
from skd_ray.training.resolve import resolve_config


class TrialFailed(RuntimeError):
    """A trial ended with a deterministic error (e.g. NaN loss): Tune does not retry it."""


def run_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """Tune function trainable: one trial, tracked as an MLflow child run, trained by the
    search's executor (`skd_ray.search.execution.executors`)."""
    from ray import tune

    started_at = time.time()
    ctx = tune.get_context()
    flat = settings.space.to_flat(config)
    cfg = resolve_config(flat)
    runs = settings.runs
    # Tune names a search's trials by their number (`t03`); the run is named for it at once.
    label = ctx.get_trial_name()
    values = {p.key: flat[p.key] for p in settings.space.params if p.key in flat}
    run_id, earlier = runs.open_trial(
        ctx.get_trial_id(), trial_run_name(label, cfg.method, values, Status.RUNNING, 0), cfg.to_flat(),
        {Tags.METHOD: cfg.method, Tags.SEED: str(cfg.train.seed), Tags.TRIAL_NAME: label},
    )
    # Only a run an earlier attempt made can hold a restart count or that attempt's failure.
    tags = runs.tags(run_id) if earlier else {}
    if tune.get_checkpoint() is not None:
        record_restart(runs, run_id, tags)
    job = TrialJob(cfg, flat, run_id, ctx.get_trial_id(), started_at, settings)
    try:
        raise_if_failed_before(tags)
        try:
            trained = executor_for(settings).train(job)
        except DeterministicFailure as failure:
            fail_deterministically(runs, run_id, failure.message)
        if not trained.reported and trained.metrics:
            # Restored from its final checkpoint (the search was interrupted after the last
            # epoch): hand Tune the stored final result once more.
            tune.report({**trained.metrics, RUN_ID_RESULT: run_id})
    except Exception as err:
        # Whether this is a failure or Tune stopping the trial (ASHA) only the driver knows:
        # record the error and let its ChildRunStatus callback set the final status.
        runs.set_tag(run_id, Tags.LAST_ERROR, failure_reason(err))
        raise
    runs.close(run_id, Status.COMPLETED)


def record_restart(runs: SearchRuns, run_id: str, tags: dict[str, str]) -> None:
    """Count on the trial's run (whose `tags` these are) each start from a checkpoint (Tune's
    retry after a lost node or process, or `--resume`): the run shows that the trial was
    restarted, and how often."""
    restarts = int(tags.get(Tags.RESTARTS, "0")) + 1
    runs.set_tag(run_id, Tags.RESTARTS, str(restarts))


def raise_if_failed_before(tags: dict[str, str]) -> None:
    """A trial restarted by Tune after a deterministic error (recorded in its run's `tags`)
    fails again at once, same reason."""
    earlier = tags.get(Tags.DETERMINISTIC_ERROR)
    if earlier:
        raise TrialFailed(earlier)


def fail_deterministically(runs: SearchRuns, run_id: str, reason: str) -> NoReturn:
    """Record `reason` on the run (for `raise_if_failed_before`) and fail the trial with it."""
    runs.set_tag(run_id, Tags.DETERMINISTIC_ERROR, reason)
    raise TrialFailed(reason) from None


def failure_reason(err: BaseException) -> str:
    """The innermost error message of a (possibly Ray-wrapped) exception, for MLflow."""
    text = "".join(traceback.format_exception_only(type(err), err)).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Diverged" in line:
            return line.strip()[:2000]
    return (lines[-1] if lines else repr(err))[:2000]
