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
    return stage_prefix_macs(module, [], *inputs)[1]


def stage_prefix_macs(module: nn.Module, marks: list[nn.Module], *inputs: torch.Tensor) -> tuple[list[int], int]:
    """MACs spent when each module of `marks` has finished, and in all, for `module(*inputs)`.

    With the backbone's stage modules as marks this is the cost of reaching each stage, read in
    one forward pass of any network whose stages run one after the other.
    """
    total = 0
    reached: dict[int, int] = {}

    def conv_hook(mod: nn.Conv2d, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += int(out[0].numel() * k)

    def linear_hook(mod: nn.Linear, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += int(out[0].numel() * mod.in_features)  # per position: a token-wise MLP counts each

    def mark_hook(i: int):
        def hook(_mod: nn.Module, _inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            reached[i] = total
        return hook

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    # After the counting hooks, so a stage that is itself a conv counts its own MACs first.
    handles += [m.register_forward_hook(mark_hook(i)) for i, m in enumerate(marks)]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return [reached.get(i, 0) for i in range(len(marks))], total
