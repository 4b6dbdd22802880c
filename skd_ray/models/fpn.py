"""FPN-like top-down path and student branch heads of TESKD (Li et al., arXiv 2110.00329).

Layout follows the official code (zhengli427/TESKD, classification/models/resnet_our.py):
every stage gets a 1x1 conv-BN-ReLU lateral to a common width; going down from the last
stage, the coarser map is upsampled (bilinear, align_corners=True) and passed through a
1x1 conv-BN-ReLU, added to the lateral, concatenated with the upsampled map and fused by a
1x1 conv-BN-ReLU. The fused map at level i therefore carries stages i..L. Upsampling goes
to the lateral's exact size instead of a fixed x2 so odd sizes (7x7 -> 14x14) work.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, bias=bias), nn.BatchNorm2d(out_ch), nn.ReLU())


class TopDownFPN(nn.Module):
    """Stage outputs -> fused maps for levels `lowest`..L-1 (1-based), all at `width` channels.

    Only the levels a student needs are built: level i needs every level above it.
    """

    def __init__(self, channels: list[int], width: int, lowest: int) -> None:
        super().__init__()
        self.num_stages = len(channels)
        self.lowest = lowest
        levels = range(lowest, self.num_stages + 1)
        self.laterals = nn.ModuleDict({str(i): conv_bn_relu(channels[i - 1], width) for i in levels})
        below = range(lowest, self.num_stages)
        self.upsample = nn.ModuleDict({str(i): conv_bn_relu(width, width) for i in below})
        self.fuse = nn.ModuleDict({str(i): conv_bn_relu(2 * width, width) for i in below})

    def forward(self, feats: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        """Fused map per level (1-based stage numbers, excluding the last stage)."""
        top = self.laterals[str(self.num_stages)](feats[-1])
        out: dict[int, torch.Tensor] = {}
        for i in range(self.num_stages - 1, self.lowest - 1, -1):
            lateral = self.laterals[str(i)](feats[i - 1])
            up = F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True)
            up = self.upsample[str(i)](up)
            top = self.fuse[str(i)](torch.cat([up + lateral, up], dim=1))
            out[i] = top
        return out


class BranchHead(nn.Module):
    """Official `auxiliary_branch`: kxk stride-k conv-BN-ReLU -> 1x1 conv-BN-ReLU -> GAP -> fc.

    k is the total stride between the branch's level and the last stage, so the pooled
    feature comes from a map at the last stage's resolution and width.
    """

    def __init__(self, width: int, kernel: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(width, width, kernel, kernel, bias=True),
                                  conv_bn_relu(width, width, 1, 1, bias=True))
        self.fc = nn.Linear(width, num_classes)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.flatten(F.adaptive_avg_pool2d(self.body(feat), 1), 1)
        return pooled, self.fc(pooled)
