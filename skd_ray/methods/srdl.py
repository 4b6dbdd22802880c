"""SRDL, Self-Referenced Deep Learning (Lan, Zhu, Gong, ACCV 2018, arXiv 1811.07598).

The network is its own teacher: stage 1 trains with CE for part of the epoch budget, then a
frozen snapshot of it supervises stage 2 through `CE(z, y) + a KL_T(sg(z_snapshot) || z)`.
The total budget equals vanilla training's.

No official code exists, so every detail the paper leaves open is an option: where the
snapshot is taken, whether stage 2 continues from it or restarts from a fresh
initialisation, whether the LR schedule restarts at stage 2, and whether the teacher runs
online on every augmented batch (one extra forward) or is cached once per training sample
(the paper's "negligible extra cost").

The snapshot module exists from construction (so state_dict keys never change) and only
receives weights at the snapshot epoch; it is frozen (requires_grad=False, always in eval
mode). Stage, snapshot and teacher cache are all in the state_dict, so a resumed run
continues exactly. Under torch.distributed the snapshot is rank 0's backbone on every rank
(BatchNorm running statistics included), the same state rank 0's checkpoint stores.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from skd_ray.errors import ConfigError
from skd_ray.methods import register_method
from skd_ray.methods.base import MethodContext, MethodOutput, SelfKDMethod
from skd_ray.methods.losses import kl_t
from skd_ray.methods.sample_memory import SampleMemory, distributed_ready
from skd_ray.models import StagedBackbone


@dataclass
class SrdlParams:
    snapshot_at: float = 0.5  # fraction of the epoch budget; paper: about half
    # Stage 2 continues from the snapshot's weights or restarts from a fresh initialisation.
    # Unpublished in code; "continue" keeps the stage-1 progress, our default.
    stage2_start: str = "continue"
    # Restart the LR schedule at stage 2 (each stage gets its own full cycle). Unpublished in
    # code; on by default so that stage 1 ends annealed, i.e. the teacher is a converged model.
    lr_restart: bool = True
    # KD weight and temperature: the authors' ONE (Lan et al. NeurIPS 2018) code uses
    # CE + T^2 KL with T=3 and unit weight; SRDL gives no code of its own.
    alpha: float = 1.0
    temperature: float = 3.0
    # "cached": snapshot logits stored once per sample (paper's negligible-cost claim);
    # "online": one extra snapshot forward per batch on the augmented input.
    teacher: str = "cached"


def _refresh_after_load(module: Srdl, incompatible_keys: object) -> None:
    module._refresh()


@register_method("srdl", params=SrdlParams)
class Srdl(SelfKDMethod):
    """Backbone + frozen snapshot copy + optional per-sample teacher-logit cache."""

    params: SrdlParams

    def __init__(self, backbone: StagedBackbone, params: SrdlParams, ctx: MethodContext | None = None) -> None:
        super().__init__(backbone, params, ctx)
        self.snapshot = copy.deepcopy(backbone)
        for p in self.snapshot.parameters():
            p.requires_grad_(False)
        self.snapshot.eval()
        self.register_buffer("stage", torch.tensor(1, dtype=torch.long))
        # Python mirrors of device state, refreshed once per epoch and after loading, so the
        # training step never waits on the GPU to branch.
        self._stage = 1
        self._cache_complete = False
        self.register_load_state_dict_post_hook(_refresh_after_load)
        self.cache = SampleMemory(self.ctx.num_train_samples if params.teacher == "cached" else 0,
                                  backbone.num_classes)
        # The snapshot is identical on every rank and the cache is merged explicitly
        # (SampleMemory.sync), so DDP must neither broadcast nor reduce them.
        self._ddp_params_and_buffers_to_ignore = (
            [f"snapshot.{n}" for n, _ in self.snapshot.named_parameters()]
            + [f"snapshot.{n}" for n, _ in self.snapshot.named_buffers()]
            + self.cache.ddp_ignore_names("cache"))

    @classmethod
    def validate_params(cls, params: SrdlParams, num_stages: int) -> None:
        if not 0.0 < params.snapshot_at < 1.0:
            raise ConfigError("method.snapshot_at must lie in (0, 1)", "use e.g. 0.5 (half the epochs)")
        if params.stage2_start not in ("continue", "reinit"):
            raise ConfigError(f"method.stage2_start {params.stage2_start!r} is unknown",
                              "use continue or reinit")
        if params.teacher not in ("online", "cached"):
            raise ConfigError(f"method.teacher {params.teacher!r} is unknown", "use online or cached")
        if params.alpha < 0:
            raise ConfigError("method.alpha must be >= 0", "use e.g. 1.0")
        if params.temperature <= 0:
            raise ConfigError("method.temperature must be > 0", "use e.g. 3")

    def snapshot_epoch(self, total_epochs: int) -> int:
        """First epoch of stage 2 (0-based): at least one epoch in each stage when the budget
        has two or more epochs (a one-epoch run is plain CE)."""
        return min(max(1, int(round(self.params.snapshot_at * total_epochs))), max(1, total_epochs - 1))

    def train(self, mode: bool = True) -> Srdl:
        super().train(mode)
        self.snapshot.eval()  # a frozen teacher: BN running statistics never move
        return self

    def _refresh(self) -> None:
        self._stage = int(self.stage)
        self._cache_complete = self.cache.num_samples > 0 and bool(self.cache.filled.all())

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        s = self.snapshot_epoch(total_epochs)
        self._refresh()
        if self._stage == 1 and epoch >= s:
            self.snapshot.load_state_dict(self.backbone.state_dict())
            if distributed_ready():
                # DDP gives every rank rank 0's BN buffers at the start of a forward, then each
                # rank moves them with its own batch: after the last step the ranks' running
                # statistics differ. Taking rank 0's copy gives every rank the same teacher,
                # the one rank 0's checkpoint holds, so a resumed run distils from it too.
                for t in self.snapshot.state_dict().values():
                    torch.distributed.broadcast(t, 0)
            if self.params.stage2_start == "reinit":
                for m in self.backbone.modules():
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
                if distributed_ready():  # ranks drew different weights: take rank 0's
                    for t in self.backbone.state_dict().values():
                        torch.distributed.broadcast(t, 0)
            self.stage.fill_(2)
        self._refresh()

    @torch.no_grad()
    def on_epoch_end(self, epoch: int, total_epochs: int) -> None:
        if self._stage == 2:
            self.cache.sync()  # entries filled on other ranks, merged before the checkpoint
            self._refresh()

    def lr_schedule_position(self, epoch: int, total_epochs: int) -> tuple[int, int]:
        if not self.params.lr_restart:
            return epoch, total_epochs
        s = self.snapshot_epoch(total_epochs)
        if s >= total_epochs:
            return epoch, total_epochs
        return (epoch, s) if epoch < s else (epoch - s, total_epochs - s)

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """Snapshot logits: from the cache where filled, filling missing rows on the way (a
        resumed or distributed run may lack some); online without sample indices."""
        if self.params.teacher == "online" or index is None or self.cache.num_samples == 0:
            return self.snapshot(x).float()
        rows, filled = self.cache.read(index)
        missing = ~filled
        if not self._cache_complete and bool(missing.any()):
            self.cache.write(index[missing], self.snapshot(x[missing]).float())
            rows[missing] = self.cache.read(index[missing])[0]  # as stored (half precision): the
            # filling step distils from the same teacher as every later epoch and a resumed run
        return rows

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> MethodOutput:
        p = self.params
        logits = self.backbone(x)
        ce = F.cross_entropy(logits, y)
        if self._stage == 1:
            kd = torch.zeros((), device=logits.device)
        else:
            kd = kl_t(self.teacher_logits(x, index), logits.float(), p.temperature)
        loss = ce + p.alpha * kd
        return MethodOutput(loss, logits, {"ce": ce, "kd": kd})
