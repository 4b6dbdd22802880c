"""PS-KD, Progressive Self-Knowledge Distillation (Kim et al., ICCV 2021).

The model of the previous epoch is the teacher: each sample's target becomes
`(1 - a_t) onehot(y) + a_t p_prev(x)`, where p_prev is the softmax the model gave that
sample when it last saw it, and a_t grows linearly over training (the teacher is trusted
more as it improves). Loss: soft-target CE.

The per-sample predictions are a memory of N x K values (`SampleMemory`: host memory, half
precision, 2.4 GiB for ImageNet-1k instead of 4.8 GiB of every rank's accelerator), in the
state_dict for exact resumes at any world size. Under torch.distributed every rank only sees
its shard, so the rows each rank wrote are exchanged at the end of each epoch. A sample never seen yet (first epoch,
or dropped with the loader's last partial batch) gets the one-hot target, as the official
code does by storing one-hot vectors during the first epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from skd_ray.errors import ConfigError
from skd_ray.methods import register_method
from skd_ray.methods.base import MethodContext, MethodOutput, SelfKDMethod
from skd_ray.methods.losses import soft_ce
from skd_ray.methods.sample_memory import SampleMemory
from skd_ray.models import StagedBackbone


@dataclass
class PskdParams:
    # Paper (CIFAR-100, ImageNet) and official code (--alpha_T 0.8).
    alpha_T: float = 0.8
    # Official main.py: alpha_t = alpha_T * ((epoch + 1) / end_epoch), i.e. the paper's
    # a_T * t / T with t counted from 1; it reaches alpha_T in the last epoch.


@register_method("pskd", params=PskdParams)
class Pskd(SelfKDMethod):
    """Backbone + per-sample memory of last epoch's softmax predictions."""

    params: PskdParams

    def __init__(self, backbone: StagedBackbone, params: PskdParams, ctx: MethodContext | None = None) -> None:
        super().__init__(backbone, params, ctx)
        self.memory = SampleMemory(self.ctx.num_train_samples, backbone.num_classes)
        self._ddp_params_and_buffers_to_ignore = self.memory.ddp_ignore_names("memory")
        self.alpha_t = 0.0

    @classmethod
    def validate_params(cls, params: PskdParams, num_stages: int) -> None:
        if not 0.0 <= params.alpha_T <= 1.0:
            raise ConfigError("method.alpha_T must lie in [0, 1]", "use e.g. 0.8")

    def alpha_at(self, epoch: int, total_epochs: int) -> float:
        return self.params.alpha_T * (epoch + 1) / total_epochs

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        self.alpha_t = self.alpha_at(epoch, total_epochs)

    def on_epoch_end(self, epoch: int, total_epochs: int) -> None:
        self.memory.sync()  # merge what other ranks wrote (no-op when not distributed)

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> MethodOutput:
        if index is None or self.memory.num_samples == 0:
            raise ValueError("pskd needs the samples' dataset indices and MethodContext.num_train_samples")
        logits = self.backbone(x)
        onehot = F.one_hot(y, logits.shape[1]).float()
        prev, filled = self.memory.read(index)
        a = self.alpha_t * filled.float()[:, None]  # unseen samples keep the one-hot target
        targets = (1 - a) * onehot + a * prev
        loss = soft_ce(targets, logits.float())
        self.memory.write(index, torch.softmax(logits.detach().float(), dim=1))
        return MethodOutput(loss, logits, {"soft_ce": loss})
