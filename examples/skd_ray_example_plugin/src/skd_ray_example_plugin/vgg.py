"""A 3-stage VGG-style network that lists its own stages, timm-style, in `feature_info`: skd-ray
taps them with hooks, so the module stays plain PyTorch and exports as written."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class VggTiny(nn.Module):
    """Two 3x3 convolutions per stage, max-pooling between stages (widths w, 2w, 4w)."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 16) -> None:
        super().__init__()
        self.stage1 = conv_block(in_channels, width)
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), conv_block(width, 2 * width))
        self.stage3 = nn.Sequential(nn.MaxPool2d(2), conv_block(2 * width, 4 * width))
        self.classifier = nn.Linear(4 * width, num_classes)
        self.feature_info = [{"module": f"stage{i}"} for i in (1, 2, 3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def vgg_tiny(num_classes: int, in_channels: int) -> nn.Module:
    """3-stage VGG-style network, width 16 (example plugin)."""
    return VggTiny(num_classes, in_channels)
