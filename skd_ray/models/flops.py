"""Multiply-accumulate counting for conv and linear layers.

Early-exit results are only meaningful with their cost: "exit 2 reaches 95% at 40% of the
compute". Counting MACs of convolutions and linear layers with forward hooks is enough for
that ratio (BN, ReLU and pooling are a rounding error) and needs no extra dependency.
"""

from __future__ import annotations

import torch
from torch import nn


def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """MACs of the conv/linear layers inside `module` for `module(*inputs)` (batch 1 assumed)."""
    total = 0

    def conv_hook(mod: nn.Conv2d, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += int(out[0].numel() * k)

    def linear_hook(mod: nn.Linear, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += int(mod.in_features * mod.out_features)

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total
