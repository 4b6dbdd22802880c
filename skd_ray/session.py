"""Where `engine.fit` runs: in this process (`LocalSession`), as a Ray Train worker
(`RaySession`) or inside a one-worker Ray Tune trial (`TuneTrialSession`).

This is the only module that touches the Ray Train/Tune reporting API, and it imports Ray
lazily, so the single-process debugging mode and most tests never load Ray. Every session
sends per-epoch metrics to an optional tracker (MLflow, from `skd_ray.tracking`) on rank 0 only.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import torch
from torch import nn

CHECKPOINT_FILE = "state.pt"


class MetricSink(Protocol):
    """Receives per-epoch metrics and the best state (implemented by tracking.TrialTracker)."""

    def log_epoch(self, step: int, metrics: dict[str, float]) -> None: ...

    def log_best_state(self, state: dict[str, Any], directory: Path) -> None: ...

    def log_tags(self, tags: dict[str, str]) -> None: ...


def publish(sink: MetricSink | None, metrics: dict[str, float], state: dict[str, Any], is_best: bool) -> None:
    """Send an epoch's metrics, and the model state when it is the best so far, to `sink`."""
    if sink is None:
        return
    sink.log_epoch(int(metrics["epoch"]), metrics)
    if is_best:
        with tempfile.TemporaryDirectory() as tmp:
            sink.log_best_state({"model": state["model"], "epoch": state["epoch"]}, Path(tmp))


def state_from_checkpoint(checkpoint: Any) -> dict[str, Any] | None:
    """The training state inside a Ray (Train or Tune) checkpoint, or None without one."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return load_state(Path(directory) / CHECKPOINT_FILE)


def report_with_state(report: Callable[..., None], checkpoint_cls: Any, metrics: dict[str, float],
                      state: dict[str, Any]) -> None:
    """Report `metrics` with `state` as a checkpoint through Ray Train's or Tune's `report`
    (they take the same arguments; Ray copies the directory before it is removed)."""
    with tempfile.TemporaryDirectory() as tmp:
        save_state(state, Path(tmp))
        report(metrics, checkpoint=checkpoint_cls.from_directory(tmp))


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """cuda:<local rank> when a GPU is visible (or demanded), else cpu."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def save_state(state: dict[str, Any], directory: Path) -> Path:
    """Write a checkpoint atomically (tmp file + rename) so a kill never leaves half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state(source: Path | BinaryIO) -> dict[str, Any]:
    """Load a checkpoint (a file, or its bytes as a stream) with `weights_only=True`: no
    pickled code runs on load."""
    return torch.load(source, map_location="cpu", weights_only=True)


def format_epoch_line(metrics: dict[str, float], total_epochs: int) -> str:
    """One terminal line per epoch: loss, deployable and per-exit validation accuracy."""
    exits = [f"{k.removeprefix('val_acc.')}={v:.3f}" for k, v in metrics.items()
             if k.startswith("val_acc.") and "dynamic" not in k]
    return (f"epoch {int(metrics['epoch'])}/{total_epochs} loss={metrics['train_loss']:.4f} "
            f"val_acc={metrics['val_acc']:.4f} " + " ".join(exits)
            + f" ({metrics['time_epoch_s']:.1f}s)").rstrip()


class LocalSession:
    """Runs the loop in this process: no Ray, breakpoints work, one line per epoch."""

    rank = 0
    world_size = 1

    def __init__(self, device: str = "auto", sink: MetricSink | None = None,
                 checkpoint_dir: str | Path | None = None, echo: bool = True,
                 total_epochs: int = 0) -> None:
        self.device = pick_device(device)
        self.sink = sink
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.echo = echo
        self.total_epochs = total_epochs
        self.best_state: dict[str, Any] | None = None
        self.history: list[dict[str, float]] = []

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def load_checkpoint(self) -> dict[str, Any] | None:
        if self.checkpoint_dir and (self.checkpoint_dir / CHECKPOINT_FILE).exists():
            return load_state(self.checkpoint_dir / CHECKPOINT_FILE)
        return None

    def report(self, metrics: dict[str, float], state: dict[str, Any], is_best: bool) -> None:
        self.history.append(metrics)
        if self.echo:
            print(format_epoch_line(metrics, self.total_epochs), flush=True)
        publish(self.sink, metrics, state, is_best)
        if self.checkpoint_dir is not None:
            save_state(state, self.checkpoint_dir)
        if is_best:
            # Copies: state_dict tensors alias the live weights, which keep training.
            self.best_state = {"model": {k: v.detach().clone() for k, v in state["model"].items()},
                               "epoch": state["epoch"]}


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
                 started_at: float | None = None) -> None:
        import ray.train

        self.started_at = started_at
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = pick_device(device, ctx.get_local_rank())
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.sink = sink if self.rank == 0 else None
        self.node_ids = self._gather_node_ids()
        if self.sink is not None:
            self.sink.log_tags({"skd.worker_nodes": ",".join(self.node_ids),
                                "skd.world_size": str(self.world_size), "skd.executor": self.executor})

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

        metrics = {**metrics, "is_best": float(is_best)}
        if self.rank != 0:
            ray.train.report(metrics)
            return
        publish(self.sink, metrics, state, is_best)
        report_with_state(ray.train.report, ray.train.Checkpoint, metrics, state)


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
                 started_at: float | None = None) -> None:
        self.device = pick_device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.sink = sink
        self.started_at = started_at
        self.reports = 0
        if sink is not None:
            import ray

            sink.log_tags({"skd.worker_nodes": ray.get_runtime_context().get_node_id(), "skd.world_size": "1",
                           "skd.executor": "trial_process"})

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def load_checkpoint(self) -> dict[str, Any] | None:
        from ray import tune

        return state_from_checkpoint(tune.get_checkpoint())

    def report(self, metrics: dict[str, float], state: dict[str, Any], is_best: bool) -> None:
        from ray import tune

        publish(self.sink, metrics, state, is_best)
        report_with_state(tune.report, tune.Checkpoint, {**metrics, "is_best": float(is_best)}, state)
        self.reports += 1
