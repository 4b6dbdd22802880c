"""Driver side of the DDP pools: the mailbox actor, one Ray Train run per pool, their shutdown
and the Tune callback that ends a trial's job when Tune ends the trial."""

from __future__ import annotations

from typing import Any

from skd_ray.search.execution.pool.mailbox import MAILBOX_OPTIONS, PoolMailbox
from skd_ray.search.execution.pool.worker import pool_worker_loop
from skd_ray.search.request import Resources

# Seconds the driver waits for the pools to stop at the end of a search before killing them.
SHUTDOWN_GRACE_S = 60.0


def mailbox_name(search_name: str) -> str:
    """The mailbox is a named actor: trials and Tune callbacks find it by name, so nothing
    Tune pickles into its saved state (callbacks, trainable) holds an actor handle that a
    resumed search could not restore."""
    return f"skd_pool_mailbox:{search_name}"


class DDPPools:
    """Driver side: the mailbox and `count` pool runs, each `resources.workers` Ray Train workers."""

    def __init__(self, search_name: str, count: int, resources: Resources, storage_path: str,
                 max_restarts: int = -1) -> None:
        import ray

        self.name = mailbox_name(search_name)
        self.mailbox = ray.remote(PoolMailbox).options(name=self.name, **MAILBOX_OPTIONS).remote()
        ray.get(self.mailbox.expect_pools.remote(count))
        run_pool = ray.remote(num_cpus=0)(run_pool_trainer)
        self.runs = [run_pool.remote(i, self.mailbox, resources, storage_path, f"ddp_pool{i}", max_restarts)
                     for i in range(count)]

    def callback(self) -> Any:
        """A Tune callback ending a trial's job the moment Tune ends the trial."""
        return release_callback(self.name)

    def shutdown(self) -> None:
        """Stop every pool; pools that do not stop in SHUTDOWN_GRACE_S are killed."""
        import ray

        stuck = self.runs
        try:
            ray.get(self.mailbox.shutdown.remote(), timeout=10)
            _, stuck = ray.wait(self.runs, num_returns=len(self.runs), timeout=SHUTDOWN_GRACE_S)
        finally:
            # Only runs still going: cancelling a task that has just finished trips a fatal
            # check in Ray's core worker (the driver would die).
            for run in stuck:
                ray.cancel(run, force=True)
            ray.kill(self.mailbox)


def run_pool_trainer(pool_id: int, mailbox: Any, resources: Resources, storage_path: str, name: str,
                     max_restarts: int) -> None:
    """One pool: a Ray Train run of `pool_worker_loop` (runs as a zero-CPU Ray task)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        pool_worker_loop,
        train_loop_config={"mailbox": mailbox, "pool_id": pool_id, "gpus_per_worker": resources.gpus_per_worker},
        scaling_config=ray.train.ScalingConfig(num_workers=resources.workers, use_gpu=resources.gpus_per_worker > 0,
                                               resources_per_worker=resources.worker_bundle()),
        run_config=ray.train.RunConfig(name=name, storage_path=storage_path,
                                       failure_config=ray.train.FailureConfig(max_failures=max_restarts)),
    )
    try:
        trainer.fit()
    except Exception as err:
        ray.get(mailbox.pool_failed.remote(pool_id, str(err).strip().splitlines()[-1][:500]))
        raise


def release_callback(name: str) -> Any:
    from ray import tune

    class ReleaseEndedTrials(tune.Callback):
        """Tune ended a trial (ASHA stop, error, completion): its pool job ends too."""

        def __init__(self) -> None:
            self.name = name

        def _release(self, trial_id: str) -> None:
            import ray

            try:
                ray.get_actor(self.name).release_trial.remote(trial_id)
            except ValueError:  # no pools running (the search is ending)
                pass

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._release(trial.trial_id)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._release(trial.trial_id)

    return ReleaseEndedTrials()
