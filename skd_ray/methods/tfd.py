"""TFD, Teacher-free Distillation via Regularizing Intermediate Representation (Li et al.,
IJCNN 2022), with the intra-layer term of the authors' Tf-FD code (ECCV 2022).

The network's own deeper stage outputs act as the teacher of its shallower ones, so there
are no extra parameters at all:

- inter-layer: for each (shallow s, deep d) stage pair, average-pool f_s to f_d's spatial
  size and regress it onto the first C_s channels of sg(f_d) with mean-reduced MSE;
- intra-layer (on by default, as in the authors' code; `intra: false` is the paper's
  inter-layer-only loss): within a stage, sort channels by saliency (batch and spatial mean
  of the spatially L2-normalised map) and pull the top half and the bottom half together.

Loss: CE + w(epoch) * (l_inter * inter + l_intra * intra), with w a linear warm-up to 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from torch.nn import functional as F

from skd_ray.errors import ConfigError
from skd_ray.methods import register_method
from skd_ray.methods.base import MethodContext, MethodOutput, SelfKDMethod
from skd_ray.models import StagedBackbone


@dataclass
class TfdParams:
    # Stage pairs of the inter-layer term. The authors' code uses all pairs of its 3-stage
    # net (f1-f2, f2-f3, f1-f3); "adjacent" keeps only consecutive stages.
    pairs: str = "all"
    # Inter-layer weight: run.sh of lilujunai/Teacher-free-Distillation (lambda_kd 5e-3;
    # its other runs span 5e-4 to 1e-2). Each term is averaged over pairs/stages as in
    # train.py (train_kd.py sums them, i.e. 3x the weight for 3 pairs).
    l_inter: float = 5e-3
    # The IJCNN paper describes the inter-layer term; the authors' code (run.sh: lambda_kd1
    # 4e-4 beside lambda_kd 5e-3) trains with the intra term as well, so it is on by default;
    # false gives the paper's inter-layer-only loss.
    intra: bool = True
    l_intra: float = 4e-4  # run.sh (lambda_kd1 4e-4); README uses 8e-4
    # Tf-FD code applies MSE between the two halves with no stop-gradient; the paper's
    # "salient features teach redundant ones" reading detaches the salient half.
    intra_detach_salient: bool = False
    # train.py: loss weight min(1, epoch / kd_warm_up) with 1-based epochs, kd_warm_up 20.
    warmup_epochs: int = 20


def inter_layer(shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    """MSE(pool(f_s), sg(f_d)) on the channels both have, at f_d's (possibly odd) size."""
    c = min(shallow.shape[1], deep.shape[1])
    pooled = F.adaptive_avg_pool2d(shallow[:, :c], deep.shape[-2:])
    return F.mse_loss(pooled.float(), deep[:, :c].detach().float())


def intra_layer(feat: torch.Tensor, detach_salient: bool) -> torch.Tensor:
    """MSE between the more and the less salient half of a stage's channels."""
    saliency = F.normalize(feat.float(), p=2, dim=(2, 3)).mean(dim=(0, 2, 3))
    order = torch.argsort(saliency, descending=True)
    half = feat.shape[1] // 2
    ranked = feat[:, order].float()
    top, bottom = ranked[:, :half], ranked[:, half:2 * half]  # odd C: the last channel sits out
    return F.mse_loss(bottom, top.detach() if detach_salient else top)


@register_method("tfd", params=TfdParams)
class Tfd(SelfKDMethod):
    """Backbone only; the loss adds inter- (and optionally intra-) layer feature terms."""

    params: TfdParams

    def __init__(self, backbone: StagedBackbone, params: TfdParams, ctx: MethodContext | None = None) -> None:
        super().__init__(backbone, params, ctx)
        channels = backbone.layout.channels
        n = len(channels)
        self.pairs = list(combinations(range(n), 2)) if params.pairs == "all" else \
            [(i, i + 1) for i in range(n - 1)]
        narrow = [(s + 1, d + 1) for s, d in self.pairs if channels[d] < channels[s]]
        if narrow:  # the deep map's first C_s channels are the target: it needs that many
            raise ConfigError(f"tfd pairs stage {narrow[0][0]} ({channels[narrow[0][0] - 1]} channels) with the "
                              f"narrower stage {narrow[0][1]} ({channels[narrow[0][1] - 1]} channels)",
                              "use method.pairs=adjacent or a backbone whose deeper stages are at least as wide")
        self.reg_weight = self.warmup_factor(0)

    @classmethod
    def validate_params(cls, params: TfdParams, num_stages: int) -> None:
        if params.pairs not in ("all", "adjacent"):
            raise ConfigError(f"method.pairs {params.pairs!r} is unknown", "use all or adjacent")
        if params.l_inter < 0 or params.l_intra < 0:
            raise ConfigError("method.l_inter and method.l_intra must be >= 0", "use e.g. 5e-3 and 4e-4")
        if params.warmup_epochs < 0:
            raise ConfigError("method.warmup_epochs must be >= 0", "use e.g. 20 (0 disables the warm-up)")
        if num_stages < 2:
            raise ConfigError("tfd needs a backbone with at least 2 stages", "choose another backbone")

    def warmup_factor(self, epoch: int) -> float:
        w = self.params.warmup_epochs
        return 1.0 if w <= 0 else min(1.0, (epoch + 1) / w)

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        self.reg_weight = self.warmup_factor(epoch)

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> MethodOutput:
        p = self.params
        feats, _, logits = self.backbone.forward_stages(x)
        ce = F.cross_entropy(logits, y)
        inter = torch.stack([inter_layer(feats[s], feats[d]) for s, d in self.pairs]).mean()
        reg = p.l_inter * inter
        terms = {"ce": ce, "inter": inter}
        if p.intra:
            intra = torch.stack([intra_layer(f, p.intra_detach_salient) for f in feats]).mean()
            reg = reg + p.l_intra * intra
            terms["intra"] = intra
        return MethodOutput(ce + self.reg_weight * reg, logits, terms)
