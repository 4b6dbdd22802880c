"""Tf-KD "reg", the manually designed virtual teacher (Yuan et al., CVPR 2020, "Revisiting
Knowledge Distillation via Label Smoothing Regularization").

KD works partly as learned label smoothing, so a hand-made teacher with 100% accuracy can
stand in for a trained one: p_d(k) = a for the true class and (1 - a)/(K - 1) otherwise.
Loss: (1 - alpha) CE(z, y) + alpha KL(soften(p_d, T) || p_student).

The official code (my_loss_function.py, loss_kd_regularization) differs from a literal
reading of the paper in three ways, each an option defaulting to the code:
- it softens the teacher as softmax(p_d / T), treating probabilities as logits
  (`virtual_teacher: code`); `tempered` uses softmax(log(p_d) / T), i.e. p_d^(1/T)
  renormalised, the temperature-scaled distribution of the paper's equation;
- the student is not softened (log_softmax(z)); `soften_student` divides it by T;
- no T^2 factor (`kd_t_squared`).
Its KL is element-mean-reduced and scaled by a `multiplier` (100 for CIFAR-100 ResNet-18),
which equals the batch-mean KL used here when K = 100.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from skd_ray.errors import ConfigError
from skd_ray.methods import register_method
from skd_ray.methods.base import MethodOutput, SelfKDMethod


@dataclass
class TfkdRegParams:
    # Paper: correct-class probability a = 0.9 of the virtual teacher (the code hard-codes 0.99).
    correct_prob: float = 0.9
    # experiments/base_experiments/base_resnet18/params.json: reg_temperature 20, reg_alpha 0.1.
    temperature: float = 20.0
    alpha: float = 0.1
    virtual_teacher: str = "code"  # code | tempered (see module docstring)
    soften_student: bool = False  # code: student at T=1
    kd_t_squared: bool = False  # code: no T^2


def virtual_teacher(y: torch.Tensor, num_classes: int, p: TfkdRegParams) -> torch.Tensor:
    """Softened virtual-teacher distribution, one row per label."""
    off = (1.0 - p.correct_prob) / (num_classes - 1)
    probs = torch.full((y.shape[0], num_classes), off, device=y.device)
    probs[torch.arange(y.shape[0], device=y.device), y] = p.correct_prob
    scores = probs if p.virtual_teacher == "code" else probs.clamp_min(1e-12).log()
    return torch.softmax(scores / p.temperature, dim=1)


@register_method("tfkd_reg", params=TfkdRegParams)
class TfkdReg(SelfKDMethod):
    """Backbone trained with CE plus KL to a label-derived virtual teacher."""

    params: TfkdRegParams

    @classmethod
    def validate_params(cls, params: TfkdRegParams, num_stages: int) -> None:
        if not 0.0 < params.correct_prob <= 1.0:
            raise ConfigError("method.correct_prob must lie in (0, 1]", "use e.g. 0.9")
        if not 0.0 <= params.alpha <= 1.0:
            raise ConfigError("method.alpha must lie in [0, 1]", "use e.g. 0.1")
        if params.temperature <= 0:
            raise ConfigError("method.temperature must be > 0", "use e.g. 20")
        if params.virtual_teacher not in ("code", "tempered"):
            raise ConfigError(f"method.virtual_teacher {params.virtual_teacher!r} is unknown",
                              "use code or tempered")

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> MethodOutput:
        p = self.params
        logits = self.backbone(x)
        ce = F.cross_entropy(logits, y)
        teacher = virtual_teacher(y, logits.shape[1], p)
        t_student = p.temperature if p.soften_student else 1.0
        log_student = F.log_softmax(logits.float() / t_student, dim=1)
        kd = F.kl_div(log_student, teacher, reduction="batchmean")
        if p.kd_t_squared:
            kd = kd * p.temperature**2
        loss = (1 - p.alpha) * ce + p.alpha * kd
        return MethodOutput(loss, logits, {"ce": ce, "kd": kd})

