"""A seeded two-exit BYOT on a 4-stage, width-2 ResNet and an evaluation loader over random
8x8 images: small enough to check `evaluate`'s metrics by hand."""

from __future__ import annotations

import torch

from skd_ray.data.batches import InMemoryLoader, TensorSplit
from skd_ray.methods import build_method
from skd_ray.methods.base import SelfKDMethod
from skd_ray.methods.byot import ByotParams
from skd_ray.models import StagedResNet


def tiny_byot_eval(samples: int, batch_size: int) -> tuple[SelfKDMethod, TensorSplit, InMemoryLoader]:
    """(BYOT with exits after stages 1 and 3 in eval mode, its data, an unshuffled loader)."""
    torch.manual_seed(0)
    method = build_method("byot", StagedResNet([1, 1, 1, 1], 2, 1, 3), ByotParams(exits=[1, 3])).eval()
    g = torch.Generator().manual_seed(0)
    split = TensorSplit(torch.rand(samples, 1, 8, 8, generator=g), torch.randint(0, 3, (samples,), generator=g))
    return method, split, InMemoryLoader(split, batch_size, torch.zeros(1), torch.ones(1), train=False)
