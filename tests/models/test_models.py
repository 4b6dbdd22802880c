"""Backbones: stage shapes, parameter counts, registry and MAC counting."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from skd_ray.errors import ConfigError
from skd_ray.models import BACKBONES, StagedResNet, backbone_num_stages, build_backbone
from skd_ray.models.flops import count_macs


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("size,spatial", [(8, [8, 4, 2, 1]), (28, [28, 14, 7, 4]), (32, [32, 16, 8, 4])])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_stage_shapes(size: int, spatial: list[int], in_channels: int) -> None:
    torch.manual_seed(0)
    net = StagedResNet([1, 1, 1, 1], 4, in_channels, 10)
    x = torch.randn(2, in_channels, size, size)
    feats = net.forward_stages(x).maps
    assert [tuple(f.shape) for f in feats] == [(2, 4 * 2**i, s, s) for i, s in enumerate(spatial)]
    assert net.stage_channels == [4, 8, 16, 32]
    assert net.stage_strides == [1, 2, 2, 2]
    assert all(bool((f >= 0).all()) for f in feats)  # post-activation outputs
    net.eval()
    logits = net(x)
    assert logits.shape == (2, 10)
    assert torch.allclose(logits, net.classify(net.forward_stages(x).maps[-1]))
    assert torch.allclose(net.pool(feats[-1]), feats[-1].mean(dim=(2, 3)))


def test_resnet18_parameter_count() -> None:
    net = build_backbone("resnet18", None, 3, 100)
    conv = lambda cin, cout, k: cin * cout * k * k
    bn = lambda c: 2 * c
    stem = conv(3, 64, 3) + bn(64)
    total = stem
    cin = 64
    for cout in (64, 128, 256, 512):
        for _ in range(2):
            total += conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
            if cin != cout:
                total += conv(cin, cout, 1) + bn(cout)
            cin = cout
    total += 512 * 100 + 100
    assert total == 11_220_132
    assert n_params(net) == total
    assert len(net.stages) == 4 and [len(s) for s in net.stages] == [2, 2, 2, 2]


def basic_resnet_params(width: int, in_channels: int, num_classes: int) -> int:
    """Parameters of a 1-block-per-stage CIFAR ResNet, counted from the layer shapes."""
    total = in_channels * width * 9 + 2 * width
    cin = width
    for cout in (width, 2 * width, 4 * width, 8 * width):
        total += cin * cout * 9 + 2 * cout + cout * cout * 9 + 2 * cout
        if cin != cout:
            total += cin * cout + 2 * cout
        cin = cout
    return total + cin * num_classes + num_classes


def test_resnet_small_and_width_override() -> None:
    small = build_backbone("resnet_small", None, 3, 10)
    assert small.stage_channels == [16, 32, 64, 128]
    assert n_params(small) == basic_resnet_params(16, 3, 10) == 308_826
    narrow = build_backbone("resnet_small", 8, 1, 10)
    assert narrow.stage_channels == [8, 16, 32, 64]
    assert narrow.stem[0].in_channels == 1 and narrow.fc.out_features == 10
    assert n_params(narrow) < n_params(small)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_summary_parameter_count(name: str) -> None:
    claimed = float(re.search(r"([0-9.]+)M params", BACKBONES[name].summary).group(1)) * 1e6
    actual = n_params(build_backbone(name, None, 3, 10))
    assert abs(actual - claimed) / actual < 0.1


def test_registry() -> None:
    assert set(BACKBONES) >= {"resnet18", "resnet_small"}
    for name in BACKBONES:
        assert backbone_num_stages(name) == (4 if name in ("resnet18", "resnet_small") else 3)
    with pytest.raises(ConfigError) as info:
        build_backbone("resnet50", None, 3, 10)
    assert "resnet50" in info.value.problem and "resnet18" in info.value.fix and "timm:" in info.value.fix
    with pytest.raises(ConfigError):
        backbone_num_stages("nope")


def test_count_macs_single_conv_matches_formula() -> None:
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    x = torch.randn(1, 3, 9, 9)
    h_out = (9 + 2 * 1 - 3) // 2 + 1  # 5
    assert count_macs(conv, x) == 8 * h_out * h_out * (3 * 3 * 3) == 5400


def test_count_macs_grouped_conv_and_linear() -> None:
    grouped = nn.Conv2d(4, 8, 3, groups=2)
    assert count_macs(grouped, torch.randn(1, 4, 6, 6)) == 8 * 4 * 4 * (3 * 3 * 4 // 2)
    depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6)
    assert count_macs(depthwise, torch.randn(1, 6, 5, 5)) == 6 * 5 * 5 * 9
    assert count_macs(nn.Linear(5, 10), torch.randn(1, 5)) == 50
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    assert count_macs(seq, torch.randn(1, 1, 6, 6)) == 2 * 4 * 4 * 9 + 32 * 3


def test_count_macs_is_per_sample_and_removes_hooks() -> None:
    conv = nn.Conv2d(2, 4, 3, padding=1)
    one = count_macs(conv, torch.randn(1, 2, 7, 7))
    assert count_macs(conv, torch.randn(5, 2, 7, 7)) == one
    assert not conv._forward_hooks


def test_count_macs_of_backbone_is_sum_of_parts() -> None:
    torch.manual_seed(0)
    net = StagedResNet([1, 1, 1, 1], 4, 1, 10).eval()
    x = torch.randn(1, 1, 8, 8)
    total = count_macs(net, x)
    parts = count_macs(net.stem, x)
    out = net.stem(x)
    for stage in net.stages:
        parts += count_macs(stage, out)
        out = stage(out)
    parts += 32 * 10
    assert total == parts
    # stem on 8x8: 4 output channels * 64 positions * 9 weights
    assert count_macs(net.stem, x) == 4 * 64 * 9


# --- BYOT journal-code exit heads --------------------------------------------------------------

def test_attention_gate_is_the_journal_codes() -> None:
    """SepConv(C, C) (dw3x3 s2 -> pw -> BN -> ReLU -> dw3x3 -> pw -> BN -> ReLU) -> BN -> ReLU
    -> bilinear x2 -> sigmoid, multiplied onto the input (resnet.py attentionN)."""
    from torch.nn import functional as F

    from skd_ray.models.heads import SepConv, SpatialAttention

    torch.manual_seed(0)
    gate = SpatialAttention(3)
    sep, bn, relu = gate.down
    assert isinstance(sep, SepConv) and isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
    kinds = [(type(m).__name__, getattr(m, "stride", None), getattr(m, "groups", None)) for m in sep.op]
    assert kinds == [("Conv2d", (2, 2), 3), ("Conv2d", (1, 1), 1), ("BatchNorm2d", None, None), ("ReLU", None, None),
                     ("Conv2d", (1, 1), 3), ("Conv2d", (1, 1), 1), ("BatchNorm2d", None, None), ("ReLU", None, None)]
    for m in gate.modules():  # non-trivial BN affine parameters and statistics
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
    gate.eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        h = x
        for m in sep.op:
            if isinstance(m, nn.Conv2d):
                h = F.conv2d(h, m.weight, None, m.stride, m.padding, 1, m.groups)
            elif isinstance(m, nn.BatchNorm2d):
                h = (h - m.running_mean[:, None, None]) / torch.sqrt(m.running_var[:, None, None] + m.eps) \
                    * m.weight[:, None, None] + m.bias[:, None, None]
            else:
                h = h.clamp_min(0)
        h = (h - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps) \
            * bn.weight[:, None, None] + bn.bias[:, None, None]
        h = nn.Upsample(scale_factor=2, mode="bilinear")(h.clamp_min(0))
        expected = x * torch.sigmoid(h)
        assert torch.allclose(gate(x), expected, atol=1e-6)
        # LightSKD's adapter upsamples with align_corners=True: a different gate.
        aligned = SpatialAttention(3, align_corners=True)
        aligned.load_state_dict(gate.state_dict())
        assert not torch.allclose(aligned.eval()(x), expected, atol=1e-4)


def test_exit_head_macs_count_the_whole_gate() -> None:
    """The gate costs two depthwise 3x3 and two pointwise convs at half resolution."""
    from skd_ray.models.heads import ExitHead

    head = ExitHead([8, 16], [2, 2], 10, attention=True)
    feat = torch.randn(1, 8, 8, 8)
    c, hw = 8, 4 * 4
    gate = 2 * (hw * c * 9 + hw * c * c)
    sepconv = hw * 8 * 9 + hw * 8 * 8 + hw * 8 * 9 + hw * 8 * 16  # 8 -> 16 channels, stride 2
    assert count_macs(head.body[0], feat) == gate
    assert count_macs(head, feat) == gate + sepconv + 16 * 10
