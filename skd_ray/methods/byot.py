"""BYOT / Self-Distillation (Zhang et al. ICCV 2019; TPAMI 2021).

Shallow exit classifiers after chosen backbone stages learn from the labels, from the
deepest exit's softened predictions and from its pooled feature (hint). At inference every
exit gives logits, which the dynamic early-exit policy in `skd_ray.training.early_exit` uses.

Loss: CE(z_deep, y) + sum_i [(1-a) CE(z_i, y) + a KL_T(sg(z_deep) || z_i)]
      + b sum_{i in hint exits} hint(W_i f_i, sg(f_deep))

Built as the journal code (ArchipLab-LinfengZhang/pytorch-self-distillation-final, resnet.py
and train.py) builds it:
- exit heads: attention gate SepConv(C, C) -> BN -> ReLU -> upsample x2 -> sigmoid on the
  stage output, then one stride-2 SepConv per remaining stage, pool, linear;
- hint: W_i a linear adaptation layer; train.py skips the exit right below the final stage
  (`if index != 1` on the deep-to-shallow list: the stage-3 exit of a ResNet), so that exit
  has no hint and no adaptation layer (`hint_exits: all` gives it one);
- ensemble at inference: the mean of the exits' logits (`ensemble: softmax` averages
  probabilities instead).

Where this differs from the code:
- hint reduction: the code's `torch.dist` is one L2 norm over the whole batch, which grows
  like sqrt(batch): under DDP (per-rank batch, gradients averaged) the same hint weight would
  train differently at every world size. The default `per_sample` is the mean of the
  per-sample L2 distances times sqrt(reference_batch) (128, train.py --batchsize):
  decomposable over ranks, and equal to the code's value at batch 128 when the samples'
  distances are equal (below it otherwise, by Cauchy-Schwarz). `hint_reduction: batch` is
  the code's;
- the KD term is KL_T (optionally times T^2); the code's soft cross-entropy differs from it
  by the teacher's entropy, a constant for the gradient, so training is the same and only
  the logged value differs;
- the code evaluates no dynamic policy; the one here (first exit whose confidence reaches
  its threshold, else the ensemble) takes one threshold per exit as offsets to the swept
  threshold (`threshold_offsets`, one per stage; none published, so 0 by default: one
  shared threshold);
- the gate upsamples to the stage's exact size (odd sizes work; the code's x2 otherwise) and
  the heads pool globally (the code's AvgPool2d(4) is global at 32x32 inputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from skd_ray.errors import ConfigError
from skd_ray.methods import register_method
from skd_ray.methods.base import FINAL, ExitCost, ExitPolicy, MethodContext, MethodOutput, SelfKDMethod
from skd_ray.methods.losses import kl_t
from skd_ray.models import StagedBackbone
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
    # "code": every exit but the one right below the final stage (train.py); "all": every exit.
    hint_exits: str = "code"
    # "per_sample" (world-size independent) or "batch" (the code's torch.dist); see above.
    hint_reduction: str = "per_sample"
    reference_batch: int = 128  # train.py --batchsize: the batch hint_weight was tuned at
    ensemble: str = "logits"  # train.py: sum(outputs) / len(outputs); or "softmax"
    # Dynamic early exit: per-stage offsets to the swept threshold (last = the final exit).
    threshold_offsets: list[float] = field(default_factory=list)


def exit_name(stage: int) -> str:
    return f"exit{stage}"


def hint_distance(projected: torch.Tensor, target: torch.Tensor, reduction: str,
                  reference_batch: int) -> torch.Tensor:
    """L2 distance of the projected exit feature to the deepest one: over the whole batch
    (`batch`, the code's torch.dist) or per sample, averaged, times sqrt(reference_batch)."""
    if reduction == "batch":
        return torch.dist(projected, target)
    per_sample = torch.linalg.vector_norm(projected - target, dim=1)
    return per_sample.mean() * reference_batch**0.5


@register_method("byot", params=ByotParams)
class Byot(SelfKDMethod):
    """Backbone plus one ExitHead per chosen stage and a hint projection per hinted exit."""

    params: ByotParams
    multi_exit = True  # every exit answers at inference (dynamic early exit)

    def __init__(self, backbone: StagedBackbone, params: ByotParams, ctx: MethodContext | None = None) -> None:
        super().__init__(backbone, params, ctx)
        self.stages = sorted(params.exits)
        layout = backbone.layout
        last = layout.num_stages
        self.hint_stages = [s for s in self.stages if params.hint_exits == "all" or s != last - 1]
        self.heads = nn.ModuleDict()
        self.hint_proj = nn.ModuleDict()
        for s in self.stages:
            head = ExitHead(list(layout.channels[s - 1:last]), list(layout.strides[s - 1:last]),
                            backbone.num_classes, params.attention)
            self.heads[exit_name(s)] = head
            if s in self.hint_stages:  # no unused parameters: DDP runs without find_unused_parameters
                # to the pooled deepest feature (wider than the last stage where a head conv follows it)
                self.hint_proj[exit_name(s)] = nn.Linear(head.feature_dim, layout.pooled_dim)

    @classmethod
    def stage_defaults(cls, num_stages: int) -> dict[str, Any]:
        return {"exits": list(range(1, num_stages))}  # the papers: an exit after every non-final stage

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
        for key, value, choices in (("hint_exits", params.hint_exits, ("code", "all")),
                                    ("hint_reduction", params.hint_reduction, ("per_sample", "batch")),
                                    ("ensemble", params.ensemble, ("logits", "softmax"))):
            if value not in choices:
                raise ConfigError(f"method.{key} {value!r} is unknown", f"use {' or '.join(choices)}")
        if params.reference_batch < 1:
            raise ConfigError("method.reference_batch must be >= 1", "use 128 (the journal code's batch size)")
        if params.threshold_offsets and len(params.threshold_offsets) != num_stages:
            raise ConfigError(f"method.threshold_offsets needs one offset per stage ({num_stages})",
                              f"use e.g. {[0.0] * num_stages}, or [] for one shared threshold")

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> MethodOutput:
        p = self.params
        feats, deep_feat, z_deep = self.backbone.forward_stages(x)
        ce_final = F.cross_entropy(z_deep, y)
        terms = {"ce_final": ce_final}
        loss = ce_final
        teacher_logits, teacher_feat = z_deep.detach(), deep_feat.detach()
        for s in self.stages:
            name = exit_name(s)
            pooled, z = self.heads[name](feats[s - 1])
            ce = F.cross_entropy(z, y)
            kd = kl_t(teacher_logits, z, p.temperature, p.kd_t_squared)
            loss = loss + (1 - p.alpha) * ce + p.alpha * kd
            terms.update({f"ce_{name}": ce, f"kd_{name}": kd})
            if s in self.hint_stages:
                hint = hint_distance(self.hint_proj[name](pooled), teacher_feat, p.hint_reduction,
                                     p.reference_batch)
                loss = loss + p.hint_weight * hint
                terms[f"hint_{name}"] = hint
        return MethodOutput(loss, z_deep, terms)

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats, _, logits = self.backbone.forward_stages(x)
        out = {exit_name(s): self.heads[exit_name(s)](feats[s - 1])[1] for s in self.stages}
        out[FINAL] = logits
        return out

    def exit_policy(self) -> ExitPolicy:
        offsets = self.params.threshold_offsets
        per_exit = tuple(offsets[s - 1] for s in self.stages) + (offsets[-1],) if offsets else ()
        return ExitPolicy(self.params.ensemble, per_exit)

    def _exit_costs(self, one: torch.Tensor, full_macs: int) -> dict[str, ExitCost]:
        return self.head_exit_costs(one, full_macs, {exit_name(s): (s, self.heads[exit_name(s)]) for s in self.stages})
