"""Exit heads that turn an intermediate stage output into logits.

BYOT and LightSKD attach such heads to shallow stages. The head must bring the stage's
output to the final stage's width and resolution so its pooled feature is comparable with
the deepest one (BYOT's feature hint needs that).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SepConv(nn.Module):
    """Depthwise-separable conv block used by the official BYOT journal code's heads."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False),
            nn.Conv2d(in_ch, in_ch, 1, bias=False),
            nn.BatchNorm2d(in_ch),
            nn.ReLU(),
            nn.Conv2d(in_ch, in_ch, 3, 1, 1, groups=in_ch, bias=False),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SpatialAttention(nn.Module):
    """BYOT journal-code attention gate (resnet.py `attentionN`), multiplied onto its input:
    SepConv(C, C) (stride 2) -> BN -> ReLU -> bilinear upsample x2 -> sigmoid.

    `align_corners` is the upsampling's: the BYOT code leaves it False, LightSKD's stage-2
    adapter sets it True.
    """

    def __init__(self, ch: int, align_corners: bool = False) -> None:
        super().__init__()
        self.down = nn.Sequential(SepConv(ch, ch, 2), nn.BatchNorm2d(ch), nn.ReLU())
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Upsampling to the input's exact size (not a fixed x2) keeps odd sizes (7x7) working;
        # for even sizes it is the code's x2.
        gate = F.interpolate(self.down(x), size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        return x * torch.sigmoid(gate)


class ExitHead(nn.Module):
    """Stage output -> (pooled feature at the final width, logits).

    `channels` and `strides` are the widths and strides of the backbone stages from this
    exit's stage to the last; `attention` selects the journal-code head (attention + stride-2
    sepconvs) or the simpler re-implementation head (1x1 -> kxk stride-k -> 1x1 conv).
    """

    def __init__(
        self, channels: list[int], strides: list[int], num_classes: int, attention: bool,
        gate_align_corners: bool = False,
    ) -> None:
        super().__init__()
        in_ch, out_ch = channels[0], channels[-1]
        if attention:
            layers: list[nn.Module] = [SpatialAttention(in_ch, gate_align_corners)]
            for c_in, c_out, s in zip(channels[:-1], channels[1:], strides[1:]):
                layers.append(SepConv(c_in, c_out, s))
            if len(channels) == 1:
                layers.append(SepConv(in_ch, out_ch, 1))
        else:
            k = 1
            for s in strides[1:]:
                k *= s
            mid = max(in_ch, out_ch // 2)
            layers = [
                nn.Conv2d(in_ch, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                nn.Conv2d(mid, mid, k, k, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                nn.Conv2d(mid, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(),
            ]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(out_ch, num_classes)
        self.feature_dim = out_ch

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.flatten(F.adaptive_avg_pool2d(self.body(feat), 1), 1)
        return pooled, self.fc(pooled)
