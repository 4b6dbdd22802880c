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
    The maps run in channels-last memory layout: every convolution here is a 1x1 at `width`
    channels (or a patch GEMM), which CPU backends run faster on NHWC data (a ResNet-18
    TESKD training step at 32x32: 6.6 s -> 5.4 s on one thread). Only the layout changes,
    not the values.
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
        feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
        top = self.laterals[str(self.num_stages)](feats[-1])
        out: dict[int, torch.Tensor] = {}
        for i in range(self.num_stages - 1, self.lowest - 1, -1):
            lateral = self.laterals[str(i)](feats[i - 1])
            conv, bn, relu = self.upsample[str(i)]
            # The official order is upsample -> 1x1 conv -> BN -> ReLU. A 1x1 conv (no bias) and
            # bilinear interpolation are both linear, one across channels, the other across
            # pixels, so they commute exactly: running the conv before upsampling computes the
            # same map with a quarter of the multiply-adds.
            up = F.interpolate(conv(top), size=lateral.shape[-2:], mode="bilinear", align_corners=True)
            up = relu(bn(up))
            top = self.fuse[str(i)](torch.cat([up + lateral, up], dim=1))
            out[i] = top
        return out


def patch_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv(x)` for a kxk convolution with stride k and no padding, as one matrix product.

    Non-overlapping windows make the convolution a linear map of each k x k patch: cutting
    the map into patches (a reshape) turns it into a GEMM, which CPU backends run several
    times faster than their strided large-kernel convolution, forward and backward. Rows and
    columns the convolution would not reach (sizes not divisible by k) are dropped the same way.
    """
    k = conv.kernel_size[0]
    b, c, h, w = x.shape
    oh, ow = h // k, w // k
    # Patches as (row, col, channel) vectors: a view of channels-last data until the one copy
    # into GEMM rows; the weight's (out, c, k, k) is reordered to match.
    nhwc = x[:, :, :oh * k, :ow * k].permute(0, 2, 3, 1)
    patches = nhwc.reshape(b, oh, k, ow, k, c).permute(0, 1, 3, 2, 4, 5).reshape(b * oh * ow, k * k * c)
    weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)
    out = F.linear(patches, weight, conv.bias)
    return out.reshape(b, oh, ow, conv.out_channels).permute(0, 3, 1, 2)  # NCHW shape, channels-last


class PatchConv2d(nn.Conv2d):
    """A kxk stride-k convolution (no padding) that runs as `patch_conv`: the same parameters,
    state-dict keys and result as `nn.Conv2d`, and still a Conv2d to MAC counting."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return patch_conv(x, self)


class BranchHead(nn.Module):
    """Official `auxiliary_branch`: kxk stride-k conv-BN-ReLU -> 1x1 conv-BN-ReLU -> GAP -> fc.

    k is the total stride between the branch's level and the last stage, so the pooled
    feature comes from a map at the last stage's resolution; `out_width` (default `width`) is
    the pooled feature's width. The kxk conv runs as
    `patch_conv` (the same function, computed as a matrix product).
    """

    def __init__(self, width: int, kernel: int, num_classes: int, out_width: int | None = None) -> None:
        super().__init__()
        out_width = out_width or width
        first = PatchConv2d(width, width, kernel, kernel) if kernel > 1 else nn.Conv2d(width, width, 1)
        self.body = nn.Sequential(nn.Sequential(first, nn.BatchNorm2d(width), nn.ReLU()),
                                  conv_bn_relu(width, out_width, 1, 1, bias=True))
        self.fc = nn.Linear(out_width, num_classes)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.body(feat)
        pooled = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return pooled, self.fc(pooled)
