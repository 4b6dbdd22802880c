"""Where `fit` runs on Ray: as a Ray Train worker (`RaySession`) or inside a one-worker Ray
Tune trial (`TuneTrialSession`). Ray is imported lazily, so importing this module is cheap.

Both take the trial's `gpu_share` (`--gpus-per-worker`): a fraction of a GPU caps the process's
CUDA allocator at that fraction as soon as the device is picked, before anything is allocated
(`skd_ray.training.hardware.cap_gpu_share`), so trials packed on one GPU cannot take each
other's memory."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skd_ray.results.names import Tags
from skd_ray.results.tracking import setup_tags
from skd_ray.search.execution.job import RUN_ID_RESULT
from skd_ray.training.checkpoint import CHECKPOINT_FILE, load_state, save_state
from skd_ray.training.hardware import RunSetup, cap_gpu_share
from skd_ray.training.metrics import IS_BEST
from skd_ray.training.session import MetricSink, pick_device, publish


def state_from_checkpoint(checkpoint: Any) -> dict[str, Any] | None:
    """The training state inside a Ray (Train or Tune) checkpoint, or None without one."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return load_state(Path(directory) / CHECKPOINT_FILE)


def run_tags_with_setup(sink: MetricSink | None, run_tags: dict[str, str], setup: RunSetup) -> None:
    """Tag the run with where it runs (`run_tags`) and how it trains (`setup_tags`), in one request."""
    if sink is not None:
        sink.log_tags({**run_tags, **setup_tags(setup)})


def with_run_id(metrics: dict[str, Any], sink: MetricSink | None) -> dict[str, Any]:
    """`metrics` for Tune, naming the trial's MLflow run (`RUN_ID_RESULT`) when this process logs to it."""
    run_id = getattr(sink, "run_id", None)
    return {**metrics, RUN_ID_RESULT: run_id} if run_id else metrics


def report_with_state(report: Callable[..., None], checkpoint_cls: Any, metrics: dict[str, float],
                      state: dict[str, Any]) -> None:
    """Report `metrics` with `state` as a checkpoint through Ray Train's or Tune's `report`
    (they take the same arguments; Ray copies the directory before it is removed)."""
    with tempfile.TemporaryDirectory() as tmp:
        save_state(state, Path(tmp))
        report(metrics, checkpoint=checkpoint_cls.from_directory(tmp))


class RaySession:
    """A Ray Train worker: DDP through `prepare_model`, checkpoints through `ray.train.report`.

    Every rank reports (Train requires it); only rank 0 attaches the checkpoint and writes
    to the metric sink, so a trial has one MLflow run whatever its worker count. The
    checkpoint carries `is_best` so the driver can pick the best one after the run.
    Rank 0 also tags the run with the Ray node id of every rank (`skd.worker_nodes`, in
    rank order), which shows where a multi-node trial really ran.
    """

    executor = "ray_train"  # the `skd.executor` tag of the trial's MLflow run

    def __init__(self, device: str = "auto", sink: MetricSink | None = None,
                 started_at: float | None = None, gpu_share: float = 0.0) -> None:
        import ray.train

        self.started_at = started_at
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = pick_device(device, ctx.get_local_rank())
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.gpu_share = cap_gpu_share(gpu_share, self.device)
        self.sink = sink if self.rank == 0 else None
        self.node_ids = self._gather_node_ids()
        # Logged with the setup tags (`log_setup`, the first thing `fit` does): one request.
        self.run_tags = {Tags.WORKER_NODES: ",".join(self.node_ids), Tags.WORLD_SIZE: str(self.world_size),
                         Tags.EXECUTOR: self.executor}

    def _gather_node_ids(self) -> list[str]:
        """The Ray node id of every rank, in rank order (a collective: all ranks call it)."""
        import ray

        return self._gather_from_ranks(ray.get_runtime_context().get_node_id())

    def _gather_from_ranks(self, value: str) -> list[str]:
        """Every rank's `value`, in rank order (a collective: all ranks call it)."""
        import torch.distributed as dist

        if self.world_size == 1 or not dist.is_initialized():
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return [str(v) for v in gathered]

    def log_setup(self, setup: RunSetup) -> None:
        run_tags_with_setup(self.sink, self.run_tags, setup)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def load_checkpoint(self) -> dict[str, Any] | None:
        import ray.train

        return state_from_checkpoint(ray.train.get_checkpoint())

    def report(self, metrics: dict[str, float], state: dict[str, Any], is_best: bool) -> None:
        import ray.train

        metrics = {**metrics, IS_BEST: float(is_best)}
        if self.rank != 0:
            ray.train.report(metrics)
            return
        publish(self.sink, metrics, state, is_best)
        report_with_state(ray.train.report, ray.train.Checkpoint, with_run_id(metrics, self.sink), state)


class TuneTrialSession:
    """A one-worker trial trained inside its Ray Tune trial process, without Ray Train.

    A Train run costs a controller and a worker actor per trial (seconds of process start-up
    and imports); a one-worker trial needs neither. Tune reuses the trial process for the next
    trial, so imports and the in-process dataset cache survive. Checkpoints go through
    `ray.tune.report`, so Tune restarts a failed trial from its last epoch
    (`FailureConfig.max_failures`) and `--resume` continues it.
    """

    rank = 0
    world_size = 1

    def __init__(self, device: str = "auto", sink: MetricSink | None = None,
                 started_at: float | None = None, gpu_share: float = 0.0) -> None:
        self.device = pick_device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.gpu_share = cap_gpu_share(gpu_share, self.device)
        self.sink = sink
        self.started_at = started_at
        self.reports = 0
        self.run_tags: dict[str, str] = {}
        if sink is not None:  # logged with the setup tags (`log_setup`, the first thing `fit` does)
            import ray

            self.run_tags = {Tags.WORKER_NODES: ray.get_runtime_context().get_node_id(), Tags.WORLD_SIZE: "1",
                             Tags.EXECUTOR: "trial_process"}

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def log_setup(self, setup: RunSetup) -> None:
        run_tags_with_setup(self.sink, self.run_tags, setup)

    def load_checkpoint(self) -> dict[str, Any] | None:
        from ray import tune

        return state_from_checkpoint(tune.get_checkpoint())

    def report(self, metrics: dict[str, float], state: dict[str, Any], is_best: bool) -> None:
        from ray import tune

        publish(self.sink, metrics, state, is_best)
        report_with_state(tune.report, tune.Checkpoint, with_run_id({**metrics, IS_BEST: float(is_best)}, self.sink),
                          state)
        self.reports += 1
