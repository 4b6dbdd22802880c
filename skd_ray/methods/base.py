"""What every self-KD method provides to the generic training loop.

A method is one `nn.Module` that owns the backbone and every trainable part it adds, so
DDP wraps one module and checkpoints hold everything. The loop only calls `forward` (loss
and its named terms), `predict` (logits of every exit, deployable last) and the hooks; it
never asks which method it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from skd_ray.models import StagedBackbone
from skd_ray.models.flops import count_macs, stage_prefix_macs


class MethodOutput(NamedTuple):
    """Total loss to back-propagate, deployable logits, and every loss term by name."""

    loss: torch.Tensor
    logits: torch.Tensor
    terms: dict[str, torch.Tensor]


@dataclass(frozen=True)
class ExitCost:
    """Relative compute of an exit: on its own, and as reached by the sequential early-exit
    policy (which has also evaluated every shallower exit's head on the way)."""

    standalone: float
    cumulative: float


FINAL = "final"  # name of the deployable exit (the backbone's own classifier)


@dataclass(frozen=True)
class ExitPolicy:
    """How a multi-exit method answers at inference besides its single exits.

    `ensemble`: "logits" averages the exits' logits (the BYOT journal code's ensemble),
    "softmax" averages their probabilities. `threshold_offsets`: one per exit, in `predict`'s
    order, added to each swept confidence threshold t of the dynamic early-exit policy and
    clipped to [0, 1], so every exit may have its own threshold while the sweep (and its
    metric names, keyed by t) stays; empty means one shared threshold.
    """

    ensemble: str = "logits"
    threshold_offsets: tuple[float, ...] = ()


@dataclass(frozen=True)
class MethodContext:
    """Facts about the run a method may size its state by (per-sample caches need N)."""

    num_train_samples: int = 0


class SelfKDMethod(nn.Module):
    """Base class: vanilla behaviour for everything a method does not override."""

    # True when `predict` returns several exits at inference, so the dynamic early-exit
    # policy and its `compute.dynamic_*` metrics exist (a compute/accuracy trade-off can be
    # searched). Methods whose extra heads only help training keep False.
    multi_exit: ClassVar[bool] = False
    # The search-space file `--method NAME` searches when no --config is given, for methods that
    # live outside this package (plugins ship their own); None: search_spaces/<name>.yaml.
    search_space: ClassVar[str | None] = None

    def __init__(self, backbone: StagedBackbone, params: Any, ctx: MethodContext | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.params = params
        self.ctx = ctx or MethodContext()
        self._costs: dict[str, ExitCost] | None = None

    @classmethod
    def stage_defaults(cls, num_stages: int) -> dict[str, Any]:
        """Parameter defaults that depend on the backbone's stage count (applied where the
        configuration leaves them unset)."""
        return {}

    @classmethod
    def validate_params(cls, params: Any, num_stages: int) -> None:
        """Raise ConfigError when `params` cannot work with a backbone of `num_stages`."""

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> MethodOutput:
        """Training step: `index` holds the samples' dataset positions (for per-sample caches)."""
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every exit, shallow to deep; the last entry is the deployable `final`."""
        return {FINAL: self.backbone(x)}

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        """Hook for schedules (snapshots, warm-ups, per-epoch buffers)."""

    def on_epoch_end(self, epoch: int, total_epochs: int) -> None:
        """Hook called on every rank after an epoch's last step, before it is checkpointed
        (e.g. to merge per-sample state written on other ranks, so checkpoints are whole)."""

    def on_train_batch_end(self, output: MethodOutput) -> None:
        """Hook called after the optimiser step (e.g. to store this batch's logits)."""

    def lr_schedule_position(self, epoch: int, total_epochs: int) -> tuple[int, int]:
        """(epoch within the current LR cycle, cycle length); methods that restart the LR
        (SRDL stage 2) return a shorter cycle."""
        return epoch, total_epochs

    def exit_costs(self, sample: torch.Tensor) -> dict[str, ExitCost]:
        """Relative MACs of each exit versus the plain backbone, for one input like `sample`."""
        if self._costs is None:
            one = sample[:1]
            was_training = self.training
            self.eval()  # BN running statistics must not move while counting
            try:
                with torch.no_grad():
                    full = count_macs(self.backbone, one)
                    costs = self._exit_costs(one, full)
                    missing = [n for n in self.predict(one) if n not in costs]
            finally:
                self.train(was_training)
            if missing:  # a method written outside this package that forgot its exits' costs
                raise NotImplementedError(f"{type(self).__name__} predicts exits {missing} without their cost: "
                                          "override _exit_costs (SelfKDMethod.head_exit_costs does it for heads "
                                          "on backbone stages)")
            self._costs = costs
        return self._costs

    def _exit_costs(self, one: torch.Tensor, full_macs: int) -> dict[str, ExitCost]:
        return {FINAL: ExitCost(1.0, 1.0)}

    def head_exit_costs(self, one: torch.Tensor, full_macs: int,
                        heads: dict[str, tuple[int, nn.Module]]) -> dict[str, ExitCost]:
        """Costs of exits that are heads on backbone stages, `{name: (1-based stage, head)}` in
        the order the early-exit policy tries them: the backbone up to the stage plus the head
        alone, and plus every head tried before it (the sequential policy's cost)."""
        prefix, _ = stage_prefix_macs(self.backbone, self.backbone.stage_modules(), one)
        maps = self.backbone.forward_stages(one).maps
        costs: dict[str, ExitCost] = {}
        heads_so_far = 0
        for name, (stage, head) in heads.items():
            head_macs = count_macs(head, maps[stage - 1])
            heads_so_far += head_macs
            costs[name] = ExitCost((prefix[stage - 1] + head_macs) / full_macs,
                                   (prefix[stage - 1] + heads_so_far) / full_macs)
        costs[FINAL] = ExitCost(1.0, (full_macs + heads_so_far) / full_macs)
        return costs

    def exit_policy(self) -> ExitPolicy:
        """Ensemble and per-exit thresholds of the early-exit evaluation (multi-exit methods)."""
        return ExitPolicy()

    def deployable(self) -> nn.Module:
        """The network kept at inference (exits and students stripped)."""
        return self.backbone
