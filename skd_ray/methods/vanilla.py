"""Vanilla cross-entropy training: the baseline every self-KD method must beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from skd_ray.errors import ConfigError
from skd_ray.methods import register_method
from skd_ray.methods.base import MethodOutput, SelfKDMethod


@dataclass
class VanillaParams:
    # Szegedy et al. 2016 label smoothing; 0 is plain CE, 0.1 the usual strong baseline.
    label_smoothing: float = 0.0


@register_method("vanilla", params=VanillaParams)
class Vanilla(SelfKDMethod):
    """CE on the backbone's logits, optionally with label smoothing."""

    @classmethod
    def validate_params(cls, params: VanillaParams, num_stages: int) -> None:
        if not 0.0 <= params.label_smoothing < 1.0:
            raise ConfigError("method.label_smoothing must lie in [0, 1)", "use e.g. 0.1")

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> MethodOutput:
        logits = self.backbone(x)
        ce = F.cross_entropy(logits, y, label_smoothing=self.params.label_smoothing)
        return MethodOutput(ce, logits, {"ce": ce})
