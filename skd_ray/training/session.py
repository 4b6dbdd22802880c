"""Where `fit` sends what it produces: the metric sink, the device choice, the terminal line
of an epoch and `LocalSession`, which runs the loop in this process (no Ray). The Ray-backed
sessions live in `skd_ray.search.execution.sessions` and reuse these pieces."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from skd_ray.training.checkpoint import CHECKPOINT_FILE, load_state, save_state
from skd_ray.training.hardware import RunSetup
from skd_ray.training.metrics import EPOCH, TIME_EPOCH_S, TRAIN_LOSS, VAL_ACC, exit_accuracies


class MetricSink(Protocol):
    """Receives per-epoch metrics and the best state (implemented by tracking.TrialTracker)."""

    def log_epoch(self, step: int, metrics: dict[str, float]) -> None: ...

    def log_best_state(self, state: dict[str, Any], directory: Path) -> None: ...

    def log_tags(self, tags: dict[str, str]) -> None: ...

    def log_setup(self, setup: RunSetup) -> None: ...


def publish(sink: MetricSink | None, metrics: dict[str, float], state: dict[str, Any], is_best: bool) -> None:
    """Send an epoch's metrics, and the model state when it is the best so far, to `sink`."""
    if sink is None:
        return
    sink.log_epoch(int(metrics[EPOCH]), metrics)
    if is_best:
        with tempfile.TemporaryDirectory() as tmp:
            sink.log_best_state({"model": state["model"], "epoch": state["epoch"]}, Path(tmp))


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """cuda:<local rank> when a GPU is visible (or demanded), else cpu."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def format_epoch_line(metrics: dict[str, float], total_epochs: int) -> str:
    """One terminal line per epoch: loss, deployable and per-exit validation accuracy."""
    exits = [f"{answer}={v:.3f}" for answer, v in exit_accuracies(metrics, VAL_ACC).items()]
    return (f"epoch {int(metrics[EPOCH])}/{total_epochs} loss={metrics[TRAIN_LOSS]:.4f} "
            f"val_acc={metrics[VAL_ACC]:.4f} " + " ".join(exits)
            + f" ({metrics[TIME_EPOCH_S]:.1f}s)").rstrip()


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
        self.setup: RunSetup | None = None  # how the last `fit` trained (set by it)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def log_setup(self, setup: RunSetup) -> None:
        self.setup = setup
        if self.sink is not None:
            self.sink.log_setup(setup)

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
