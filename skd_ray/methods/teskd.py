"""TESKD, Teacher Evolution via Self-Knowledge Distillation (Li et al., arXiv 2110.00329).

The deployable backbone is the teacher. Hierarchical students branch off it through an
FPN-like top-down path (`skd_ray.models.fpn`): student i sees the fused stages i..L. The
students learn from the labels, from the teacher's soft predictions and from its pooled
feature; because the official code does not stop the KL gradient at the teacher, and the
students share the teacher's stages, their feedback also shapes ("evolves") the teacher.

Loss: w_ce [CE(z_T, y) + sum_i CE(z_Si, y)] + w_kd sum_i KL_T(z_T || z_Si)
      + w_fea sum_i fea_i,  fea_i = (B_ref / B) sum_b ||(f_Si - sg(f_T)) * [f_Si > 0 or f_T > 0]||^2
Students are dropped at inference.

The official feature loss is summed over the batch, so its weight against the mean-reduced
CE and KL grows with the batch: under DDP (per-rank batch B, gradients averaged over ranks)
the same w_fea would mean a different loss at every world size. Here the sum is divided by
the per-rank batch B and multiplied by the official batch B_ref = 128 (`reference_batch`):
a per-sample mean, equal to the official value at the official batch size, so w_fea = 1e-7
keeps its published meaning at any batch size and world size. `fea_reduction: sum` restores
the official batch sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from skd_ray.errors import ConfigError
from skd_ray.methods import register_method
from skd_ray.methods.base import MethodContext, MethodOutput, SelfKDMethod
from skd_ray.methods.losses import kl_t
from skd_ray.models import StagedBackbone
from skd_ray.models.fpn import BranchHead, TopDownFPN


@dataclass
class TeskdParams:
    # Official code: three students (fed by stages 3-4, 2-4, 1-4). Fewer students keep the
    # deepest ones, which need the shortest top-down path.
    num_students: int = 3
    w_ce: float = 0.2  # main.py --ce_weight
    w_kd: float = 0.8  # main.py --kd_weight
    w_fea: float = 1e-7  # main.py --fea_weight (on a sum-reduced feature loss)
    temperature: float = 3.0  # main.py: KL_Loss(temperature=3)
    # Official code feeds the teacher logits to the KL term without detaching them.
    detach_teacher: bool = False
    # "per_sample": the batch sum of the feature loss divided by the per-rank batch and scaled
    # to `reference_batch` (world-size independent); "sum": the official batch sum.
    fea_reduction: str = "per_sample"
    reference_batch: int = 128  # main.py --batch_size: the batch w_fea was tuned at


def partial_l2(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences where either feature is positive (sum-reduced)."""
    mask = ((student > 0) | (teacher > 0)).to(student.dtype)
    return ((student - teacher) ** 2 * mask).sum()


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, reduction: str, reference_batch: int) -> torch.Tensor:
    """`partial_l2` as the official batch sum, or per sample scaled to `reference_batch`."""
    total = partial_l2(student, teacher)
    return total if reduction == "sum" else total * (reference_batch / student.shape[0])


def student_name(level: int) -> str:
    return f"student{level}"


@register_method("teskd", params=TeskdParams)
class Teskd(SelfKDMethod):
    """Backbone (teacher) + top-down FPN + one BranchHead per student."""

    params: TeskdParams

    def __init__(self, backbone: StagedBackbone, params: TeskdParams, ctx: MethodContext | None = None) -> None:
        super().__init__(backbone, params, ctx)
        layout = backbone.layout
        n = layout.num_stages
        width = layout.channels[-1]  # official: 512 * expansion, the last stage's width
        self.levels = list(range(n - params.num_students, n))  # 1-based stage numbers
        self.fpn = TopDownFPN(list(layout.channels), width, self.levels[0])
        self.heads = nn.ModuleDict()
        for level in self.levels:
            # Students end at the pooled teacher feature's width for the feature loss: the last
            # stage's width on ResNets, wider where a head conv follows it (EfficientNet, MobileNet).
            self.heads[student_name(level)] = BranchHead(width, layout.reduction_between(level - 1, n - 1),
                                                         backbone.num_classes, layout.pooled_dim)

    @classmethod
    def stage_defaults(cls, num_stages: int) -> dict[str, Any]:
        return {"num_students": min(3, num_stages - 1)}  # official: 3 students on a 4-stage ResNet

    @classmethod
    def validate_params(cls, params: TeskdParams, num_stages: int) -> None:
        if not 1 <= params.num_students <= num_stages - 1:
            raise ConfigError(f"method.num_students {params.num_students} is impossible with {num_stages} stages",
                              f"use 1..{num_stages - 1}")
        if min(params.w_ce, params.w_kd, params.w_fea) < 0:
            raise ConfigError("method.w_ce, method.w_kd and method.w_fea must be >= 0", "use e.g. 0.2, 0.8, 1e-7")
        if params.temperature <= 0:
            raise ConfigError("method.temperature must be > 0", "use e.g. 3")
        if params.fea_reduction not in ("per_sample", "sum"):
            raise ConfigError(f"method.fea_reduction {params.fea_reduction!r} is unknown", "use per_sample or sum")
        if params.reference_batch < 1:
            raise ConfigError("method.reference_batch must be >= 1", "use 128 (the official batch size)")

    def students(self, feats: list[torch.Tensor]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """(pooled feature, logits) of every student, by level."""
        fused = self.fpn(feats)
        return {level: self.heads[student_name(level)](fused[level]) for level in self.levels}

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> MethodOutput:
        p = self.params
        feats, t_feat, logits = self.backbone.forward_stages(x)
        teacher = logits.detach() if p.detach_teacher else logits
        ce_t = F.cross_entropy(logits, y)
        terms = {"ce": ce_t}
        ce_sum, kd_sum, fea_sum = ce_t, 0.0, 0.0
        for level, (s_feat, s_logits) in self.students(feats).items():
            ce = F.cross_entropy(s_logits, y)
            kd = kl_t(teacher.float(), s_logits.float(), p.temperature)
            fea = feature_loss(s_feat.float(), t_feat.detach().float(), p.fea_reduction, p.reference_batch)
            ce_sum, kd_sum, fea_sum = ce_sum + ce, kd_sum + kd, fea_sum + fea
            name = student_name(level)
            terms.update({f"ce_{name}": ce, f"kd_{name}": kd, f"fea_{name}": fea})
        loss = p.w_ce * ce_sum + p.w_kd * kd_sum + p.w_fea * fea_sum
        return MethodOutput(loss, logits, terms)
