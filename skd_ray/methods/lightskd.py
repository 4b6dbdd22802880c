"""LightSKD (Xu et al., arXiv 2305.09183): DRG and DSR.

Two cheap self-distillation signals for the deployable network:

- DRG, distillation with reverse guidance: one auxiliary head on an intermediate stage
  teaches the final output, `a KL_T(sg(z_aux) || z)`. The shallow head is a different,
  weaker view of the same input; its soft predictions regularise the deep one.
- DSR, shape-wise regularisation: each sample's logits sorted ascending lose their class
  identity and keep only the *shape* of the distribution; row i of this batch matches row i
  of the previous batch's sorted logits, `b KL_T(sg(sort(z_prev)) || sort(z))`.

Loss: CE(z, y) + CE(z_aux, y) + DRG + DSR. The aux head is dropped at inference.

The previous batch's sorted logits are method state (a buffer in the state_dict). The
published code only refreshes that buffer inside its DRG branch; here it is refreshed
after every step, the paper's intent.

The aux head is the one of the published code (backbone/adapter.py `Istr_2`): BYOT's
journal-code head, i.e. the full attention gate SepConv(C, C) -> BN -> ReLU -> upsample x2
-> sigmoid, then stride-2 SepConvs to the last stage's width, pool, linear. That adapter
upsamples with align_corners=True (BYOT's leaves it False), kept here. Its channel counts
come from a Bottleneck ResNet (the ResNet-18 mismatch); here they follow the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from skd_ray.errors import ConfigError
from skd_ray.methods import register_method
from skd_ray.methods.base import MethodContext, MethodOutput, SelfKDMethod
from skd_ray.methods.losses import kl_t
from skd_ray.models import StagedBackbone
from skd_ray.models.heads import ExitHead


@dataclass
class LightSkdParams:
    # Code: the adapter reads the second stage's output (mids[1]); attention + sepconv head.
    aux_stage: int = 2
    drg: bool = True  # train.py --DRG (default on)
    dsr: bool = True  # train.py --DSR (default on)
    alpha: float = 0.2  # train.py --alpha (DRG weight)
    beta: float = 1.0  # train.py --beta (DSR weight)
    temperature: float = 4.0  # train.py T=4, with the T^2 factor on both KL terms
    # train.py re-creates the previous-batch buffer at every epoch, so the first batch of
    # each epoch has no DSR term; false carries it across epochs.
    dsr_reset_each_epoch: bool = True


@register_method("lightskd", params=LightSkdParams)
class LightSkd(SelfKDMethod):
    """Backbone + one auxiliary ExitHead; DSR keeps the previous batch's sorted logits."""

    params: LightSkdParams

    def __init__(self, backbone: StagedBackbone, params: LightSkdParams,
                 ctx: MethodContext | None = None) -> None:
        super().__init__(backbone, params, ctx)
        s, layout = params.aux_stage, backbone.layout
        self.aux_head = ExitHead(list(layout.channels[s - 1:]), list(layout.strides[s - 1:]),
                                 backbone.num_classes, attention=True, gate_align_corners=True)
        self.register_buffer("dsr_prev", torch.zeros(0, backbone.num_classes))
        # Each rank keeps its own previous batch; DDP must not overwrite it with rank 0's.
        self._ddp_params_and_buffers_to_ignore = ["dsr_prev"]

    @classmethod
    def stage_defaults(cls, num_stages: int) -> dict[str, Any]:
        return {"aux_stage": min(2, num_stages - 1)}  # the code's head sits after stage 2

    @classmethod
    def validate_params(cls, params: LightSkdParams, num_stages: int) -> None:
        if params.aux_stage not in range(1, num_stages):
            raise ConfigError(f"method.aux_stage {params.aux_stage} is impossible with {num_stages} stages",
                              f"use a non-final stage in 1..{num_stages - 1}")
        if params.alpha < 0 or params.beta < 0:
            raise ConfigError("method.alpha and method.beta must be >= 0", "use e.g. 0.2 and 1")
        if params.temperature <= 0:
            raise ConfigError("method.temperature must be > 0", "use e.g. 4")

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # The buffer's row count is the last batch size (0 before any step): adopt the saved shape.
        saved = state_dict.get(prefix + "dsr_prev")
        if isinstance(saved, torch.Tensor):
            self.dsr_prev = torch.zeros(saved.shape, dtype=self.dsr_prev.dtype, device=self.dsr_prev.device)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        if self.params.dsr_reset_each_epoch:
            self.dsr_prev = self.dsr_prev.new_zeros(0, self.dsr_prev.shape[1])

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> MethodOutput:
        p = self.params
        feats, _, logits = self.backbone.forward_stages(x)
        _, aux_logits = self.aux_head(feats[p.aux_stage - 1])
        ce, ce_aux = F.cross_entropy(logits, y), F.cross_entropy(aux_logits, y)
        zero = torch.zeros((), device=logits.device)
        drg = kl_t(aux_logits.detach().float(), logits.float(), p.temperature) if p.drg else zero
        sorted_logits = torch.sort(logits.float(), dim=1).values
        dsr = zero
        if p.dsr and self.dsr_prev.shape == sorted_logits.shape:  # no previous batch, or sizes differ
            dsr = kl_t(self.dsr_prev, sorted_logits, p.temperature)
        self.dsr_prev = sorted_logits.detach()  # every step, whatever DRG/DSR compute
        loss = ce + ce_aux + p.alpha * drg + p.beta * dsr
        return MethodOutput(loss, logits, {"ce": ce, "ce_aux": ce_aux, "drg": drg, "dsr": dsr})
