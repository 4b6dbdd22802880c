"""BYOT / Self-Distillation (Zhang et al. ICCV 2019; TPAMI 2021).

Shallow exit classifiers after chosen backbone stages learn from the labels, from the
deepest exit's softened predictions and from its pooled feature (hint). At inference every
exit gives logits, which the dynamic early-exit policy in `skd_ray.early_exit` uses.

Loss: CE(z_deep, y) + sum_i [(1-a) CE(z_i, y) + a KL_T(sg(z_deep) || z_i)
                             + b ||W_i f_i - sg(f_deep)||_2]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from skd_ray.errors import ConfigError
from skd_ray.methods import register_method
from skd_ray.methods.base import FINAL, ExitCost, MethodContext, MethodOutput, SelfKDMethod
from skd_ray.methods.losses import kl_t
from skd_ray.models import StagedResNet
from skd_ray.models.flops import count_macs
from skd_ray.models.heads import ExitHead


@dataclass
class ByotParams:
    # Exits after stages 1-3 of a 4-stage ResNet, as in both papers; any non-empty subset
    # of the non-final stages is allowed.
    exits: list[int] = field(default_factory=lambda: [1, 2, 3])
    # Journal code (pytorch-self-distillation-final) uses attention heads; the popular
    # ICCV re-implementation uses plain conv heads: attention=false.
    attention: bool = True
    alpha: float = 0.3  # journal code; the ICCV version used 0.5
    temperature: float = 3.0  # journal code
    hint_weight: float = 0.03  # beta in the journal code
    # The journal code omits T^2 in the KL term; ICCV re-implementations multiply by it.
    kd_t_squared: bool = False


def exit_name(stage: int) -> str:
    return f"exit{stage}"


@register_method("byot", params=ByotParams)
class Byot(SelfKDMethod):
    """Backbone plus one ExitHead (and one hint projection) per chosen stage."""

    params: ByotParams
    multi_exit = True  # every exit answers at inference (dynamic early exit)

    def __init__(self, backbone: StagedResNet, params: ByotParams, ctx: MethodContext | None = None) -> None:
        super().__init__(backbone, params, ctx)
        self.stages = sorted(params.exits)
        last = len(backbone.stage_channels)
        self.heads = nn.ModuleDict()
        self.hint_proj = nn.ModuleDict()
        for s in self.stages:
            head = ExitHead(backbone.stage_channels[s - 1:last], backbone.stage_strides[s - 1:last],
                            backbone.num_classes, params.attention)
            self.heads[exit_name(s)] = head
            self.hint_proj[exit_name(s)] = nn.Linear(head.feature_dim, backbone.stage_channels[-1])

    @classmethod
    def validate_params(cls, params: ByotParams, num_stages: int) -> None:
        allowed = list(range(1, num_stages))
        if not params.exits or len(set(params.exits)) != len(params.exits) or \
                any(s not in allowed for s in params.exits):
            raise ConfigError(
                f"method.exits {params.exits} is impossible for a backbone with {num_stages} stages",
                f"use a non-empty subset of the non-final stages {allowed}",
            )
        if not 0.0 <= params.alpha <= 1.0:
            raise ConfigError("method.alpha must lie in [0, 1]", "use e.g. 0.3")
        if params.temperature <= 0:
            raise ConfigError("method.temperature must be > 0", "use e.g. 3")
        if params.hint_weight < 0:
            raise ConfigError("method.hint_weight must be >= 0", "use e.g. 0.03")

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> MethodOutput:
        p = self.params
        feats = self.backbone.forward_stages(x)
        deep_feat = self.backbone.pool(feats[-1])
        z_deep = self.backbone.fc(deep_feat)
        ce_final = F.cross_entropy(z_deep, y)
        terms = {"ce_final": ce_final}
        loss = ce_final
        teacher_logits, teacher_feat = z_deep.detach(), deep_feat.detach()
        for s in self.stages:
            name = exit_name(s)
            pooled, z = self.heads[name](feats[s - 1])
            ce = F.cross_entropy(z, y)
            kd = kl_t(teacher_logits, z, p.temperature, p.kd_t_squared)
            hint = torch.dist(self.hint_proj[name](pooled), teacher_feat)
            loss = loss + (1 - p.alpha) * ce + p.alpha * kd + p.hint_weight * hint
            terms.update({f"ce_{name}": ce, f"kd_{name}": kd, f"hint_{name}": hint})
        return MethodOutput(loss, z_deep, terms)

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone.forward_stages(x)
        out = {exit_name(s): self.heads[exit_name(s)](feats[s - 1])[1] for s in self.stages}
        out[FINAL] = self.backbone.classify(feats[-1])
        return out

    def _exit_costs(self, one: torch.Tensor, full_macs: int) -> dict[str, ExitCost]:
        bb = self.backbone
        prefix, feats = [], []
        macs = count_macs(bb.stem, one)
        out = bb.stem(one)
        for stage in bb.stages:
            macs += count_macs(stage, out)
            out = stage(out)
            prefix.append(macs)
            feats.append(out)
        costs: dict[str, ExitCost] = {}
        heads_so_far = 0
        for s in self.stages:
            head = self.heads[exit_name(s)]
            head_macs = count_macs(head, feats[s - 1])
            heads_so_far += head_macs
            costs[exit_name(s)] = ExitCost((prefix[s - 1] + head_macs) / full_macs,
                                           (prefix[s - 1] + heads_so_far) / full_macs)
        costs[FINAL] = ExitCost(1.0, (full_macs + heads_so_far) / full_macs)
        return costs
