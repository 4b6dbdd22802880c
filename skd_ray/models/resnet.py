"""CIFAR-style ResNets that expose every stage's output.

Self-KD methods tap the backbone between stages (exits, students, feature hints), so the
backbone is a stem, a list of stages and a classifier instead of one opaque forward.
"""

from __future__ import annotations

import torch
from torch import nn

from skd_ray.models.contract import StageLayout, StemStagesClassifier


class BasicBlock(nn.Module):
    """The two-conv residual block of ResNet-18/34 (He et al. 2016)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class StagedResNet(StemStagesClassifier):
    """ResNet with a 3x3 stem (CIFAR style, no max-pool) and `len(blocks)` stages.

    Stage i>0 halves the resolution and doubles the width. `forward_stages` returns the
    post-activation output of every stage, `classify` maps the last one to logits. With
    `blocks=[n, n, n]` and width 16 it is He et al. 2016's CIFAR ResNet-(6n+2) (ResNet-20,
    -32, -56, -110), with projection shortcuts (option B) where the shape changes.
    """

    def __init__(
        self, blocks: list[int], width: int, in_channels: int, num_classes: int
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.stage_channels = [width * 2**i for i in range(len(blocks))]
        self.stage_strides = [1] + [2] * (len(blocks) - 1)
        stages = []
        in_ch = width
        for n, out_ch, stride in zip(blocks, self.stage_channels, self.stage_strides):
            layers = [BasicBlock(in_ch, out_ch, stride)]
            layers += [BasicBlock(out_ch, out_ch, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(in_ch, num_classes)
        self.num_classes = num_classes
        self.layout = StageLayout(tuple(self.stage_channels), tuple(self.stage_strides), in_ch)
