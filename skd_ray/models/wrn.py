"""Wide ResNets (Zagoruyko & Komodakis, BMVC 2016), the `wrn_<depth>_<k>` family of the
self-KD papers' CIFAR tables (WRN-16-2, WRN-28-10, ...).

Three stages of (depth - 4) / 6 pre-activation blocks at widths 16k, 32k, 64k after a 3x3
stem to 16 channels; BN-ReLU after the last stage, global average pool, linear. The layout
and initialisation follow the authors' code and its common PyTorch ports (xternalz's
WideResNet-pytorch, RepDistiller's wrn.py). Stage maps are the blocks' residual sums, as those
ports return them; the last stage includes the final BN-ReLU, so the pooled feature is
post-activation like a ResNet's.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from skd_ray.errors import ConfigError
from skd_ray.models.contract import StageLayout, StemStagesClassifier


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3; a 1x1 projection of the activated input
    when the shape changes (the authors' `convShortcut`)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = None if in_ch == out_ch and stride == 1 else nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        if self.dropout > 0:
            out = F.dropout(out, self.dropout, self.training)
        out = self.conv2(out)
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(StemStagesClassifier):
    """WRN-`depth`-`k`: 3 stages of (depth-4)/6 wide blocks (see module docstring)."""

    def __init__(self, depth: int, k: int, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0 or k < 1:
            raise ConfigError(f"wrn_{depth}_{k} is not a Wide ResNet: depth must be 6n+4 (10, 16, 22, 28, 40) "
                              "and k >= 1", "use e.g. wrn_16_2, wrn_28_10 or wrn_40_2")
        n = (depth - 4) // 6
        widths = [16 * k, 32 * k, 64 * k]
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        stages: list[nn.Module] = []
        in_ch = 16
        for i, (out_ch, stride) in enumerate(zip(widths, (1, 2, 2))):
            blocks: list[nn.Module] = [WideBlock(in_ch if j == 0 else out_ch, out_ch, stride if j == 0 else 1,
                                                 dropout) for j in range(n)]
            if i == len(widths) - 1:
                blocks += [nn.BatchNorm2d(out_ch), nn.ReLU()]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(in_ch, num_classes)
        self.num_classes = num_classes
        self.layout = StageLayout(tuple(widths), (1, 2, 2), in_ch)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
