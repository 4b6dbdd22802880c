"""Persistent DDP worker pools: multi-worker trials without a new Ray Train run each.

A Ray Train run costs seconds before its first step (controller and worker processes start,
import torch and Ray Train, form the process group): 9 s on 2 CPU cores even for an empty
training function. A search pays that once per pool instead of once per trial: each pool is
one long Ray Train `TorchTrainer` run whose workers loop over jobs taken from the
`PoolMailbox`, train each with DDP exactly like a per-trial run (same engine, same
`prepare_model`, every rank's datasets cached in its process) and report every epoch back to
the Tune trial that posted the job. The trial then hands metrics and checkpoint to Tune, so
ASHA, checkpoints and `--resume` work as for any trial.

Failures: a worker that dies takes its pool down; Ray Train restarts the pool's workers
(`FailureConfig`), the running trial fails as retryable and Tune restarts it from its last
checkpoint (the trial's own `max_failures`). An error of the trial itself (NaN loss, bad
data: `SkdError`) fails just that trial and the pool takes the next job.
"""

from __future__ import annotations

import gc
import io
import os
from typing import Any

import torch

from skd_ray.errors import GpuShareExceeded, SkdError
from skd_ray.results.names import Tags
from skd_ray.results.tracking import TrialTracker
from skd_ray.search.execution.pool.mailbox import SHUTDOWN
from skd_ray.search.execution.pool.messages import Done, Failed, PoolEvent, PoolJob, Report
from skd_ray.search.execution.sessions import RaySession
from skd_ray.training.checkpoint import load_state
from skd_ray.training.engine import fit
from skd_ray.training.metrics import IS_BEST
from skd_ray.training.resolve import resolve_config
from skd_ray.training.session import publish

# How long rank 0 waits on the mailbox before the ranks check in with each other again.
POLL_S = 1.0


class TrialStopped(Exception):
    """Tune stopped the trial (ASHA) or its process is gone: the pool moves on."""


def broadcast_from_rank0(value: Any) -> Any:
    """Rank 0's `value` on every rank (a collective: every rank calls it)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def state_to_ref(state: dict[str, Any]) -> Any:
    """A checkpoint state as bytes in Ray's object store (travels to the trial process)."""
    import ray

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return ray.put(buffer.getvalue())


def state_from_ref(ref: Any) -> dict[str, Any]:
    import ray

    return load_state(io.BytesIO(ray.get(ref)))


class PoolSession(RaySession):
    """A Ray Train worker of a pool, training one trial's job.

    Like `RaySession` (DDP, rank 0 logs to MLflow) but checkpoints go to the trial process
    through the mailbox, and after each epoch every rank learns whether the trial goes on.
    """

    executor = "ddp_pool"

    def __init__(self, device: str, sink: Any, job: PoolJob, mailbox: Any, key: str, gpu_share: float = 0.0) -> None:
        super().__init__(device, sink, job.started_at, gpu_share)
        self.job = job
        self.mailbox = mailbox
        self.key = key
        self.reports = 0
        pids = self._gather_from_ranks(str(os.getpid()))
        # The same pids across trials show the pool's processes being reused.
        self.run_tags[Tags.WORKER_PIDS] = ",".join(pids)

    def load_checkpoint(self) -> dict[str, Any] | None:
        refs = self.job.state
        return state_from_ref(refs[0]) if refs else None

    def report(self, metrics: dict[str, float], state: dict[str, Any], is_best: bool) -> None:
        import ray

        metrics = {**metrics, IS_BEST: float(is_best)}
        self.reports += 1
        decision = "proceed"
        if self.rank == 0:
            publish(self.sink, metrics, state, is_best)
            ray.get(self.mailbox.post.remote(self.key, Report(metrics, [state_to_ref(state)])))
            decision = None
            while decision is None:
                decision = ray.get(self.mailbox.await_decision.remote(self.key, POLL_S))
        if broadcast_from_rank0(decision) != "proceed":
            raise TrialStopped(self.key)


def pool_worker_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train loop of every pool worker: take a job, train it, repeat until shutdown."""
    import ray
    import ray.train

    mailbox, pool_id = loop_config["mailbox"], loop_config["pool_id"]
    gpu_share = loop_config.get("gpus_per_worker", 0.0)
    rank = ray.train.get_context().get_world_rank()
    if rank == 0:
        ray.get(mailbox.pool_started.remote(pool_id))
    while True:
        taken = ray.get(mailbox.take.remote(pool_id, POLL_S)) if rank == 0 else None
        # Only the key goes over the process group; the job (it may hold an object ref to a
        # checkpoint) reaches the other ranks through Ray, which tracks the ref's borrowers.
        key = broadcast_from_rank0(taken if taken in (None, SHUTDOWN) else taken[0])
        if key == SHUTDOWN:
            return
        if key is not None:
            job = taken[1] if rank == 0 else ray.get(mailbox.job.remote(key))
            try:
                run_job(key, job, mailbox, rank, gpu_share)
            finally:
                if rank == 0:
                    mailbox.done_with.remote(key)


def run_job(key: str, job: PoolJob, mailbox: Any, rank: int, gpu_share: float = 0.0) -> None:
    """Train one trial's job on this rank and tell the trial how it ended. `gpu_share` is the
    pool's `--gpus-per-worker`: a fraction caps each worker's GPU memory at it."""
    import ray

    cfg = resolve_config(job.flat)
    sink = TrialTracker(job.store, job.run_id, chart_threshold=cfg.eval.charted_threshold()) \
        if rank == 0 else None
    event: PoolEvent | None = None
    session = None
    try:
        session = PoolSession(cfg.train.device, sink, job, mailbox, key, gpu_share)
        metrics = fit(cfg, session)
        # No report at all: the job resumed from its final checkpoint; the trial hands
        # Tune these stored final metrics once more.
        event = Done(metrics, session.reports)
    except TrialStopped:
        event = None
    except GpuShareExceeded as err:
        failed = Failed(f"{type(err).__name__}: {err}", deterministic=True)
        if session is None or session.world_size == 1:
            event = failed
        else:
            # Only this rank may have run out of its share, the others may be waiting in a
            # collective: the trial fails with the reason (not retried), and the error restarts
            # the pool's workers (Ray Train) rather than leave ranks waiting.
            ray.get(mailbox.post.remote(key, failed))
            raise
    except SkdError as err:
        # Deterministic (NaN loss, bad data), and every rank sees it: the pool carries on.
        event = Failed(f"{type(err).__name__}: {err}", deterministic=True)
    except Exception as err:
        # Anything else may have left the other ranks inside a collective: tell the trial
        # (so it fails with the real reason) and let Ray Train restart the pool's workers.
        ray.get(mailbox.post.remote(key, Failed(f"{type(err).__name__}: {err}", deterministic=False)))
        raise
    finally:
        del session
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if rank == 0 and event is not None:
        ray.get(mailbox.post.remote(key, event))
