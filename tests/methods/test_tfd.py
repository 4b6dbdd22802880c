"""TFD: no extra parameters, inter/intra terms by hand, warm-up, stop-gradients, odd sizes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from skd_ray.errors import ConfigError
from skd_ray.methods.tfd import Tfd, TfdParams, inter_layer, intra_layer
from tests.helpers.handcalc import batch, close, cross_entropy, grad_is_zero, mse, tiny_backbone


def make(**kw) -> Tfd:
    return Tfd(tiny_backbone(width=2), TfdParams(**kw))


def pool_by_hand(f: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Adaptive average pooling written out: window i spans [floor(i H/h), ceil((i+1) H/h))."""
    n, c, h_in, w_in = f.shape
    h, w = size
    out = torch.zeros(n, c, h, w, dtype=torch.float64)
    for i in range(h):
        r0, r1 = (i * h_in) // h, math.ceil((i + 1) * h_in / h)
        for j in range(w):
            c0, c1 = (j * w_in) // w, math.ceil((j + 1) * w_in / w)
            out[:, :, i, j] = f[:, :, r0:r1, c0:c1].double().mean(dim=(2, 3))
    return out


def inter_by_hand(feats: list[torch.Tensor], pairs: list[tuple[int, int]]) -> torch.Tensor:
    total = 0.0
    for s, d in pairs:
        c = feats[s].shape[1]
        total = total + mse(pool_by_hand(feats[s], feats[d].shape[-2:]), feats[d][:, :c])
    return total / len(pairs)


def intra_by_hand(f: torch.Tensor) -> torch.Tensor:
    c = f.shape[1]
    norms = torch.sqrt((f.double() ** 2).sum(dim=(2, 3), keepdim=True)).clamp_min(1e-12)
    saliency = (f.double() / norms).mean(dim=(0, 2, 3)).tolist()
    order = sorted(range(c), key=lambda k: -saliency[k])
    half = c // 2
    return mse(f[:, order[:half]], f[:, order[half:2 * half]])


def test_no_extra_parameters():
    m = make(intra=True)
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in m.backbone.parameters())
    assert {n for n, _ in m.named_parameters()} == {f"backbone.{n}" for n, _ in m.backbone.named_parameters()}


@pytest.mark.parametrize("pairs,expected", [
    ("all", [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]),
    ("adjacent", [(0, 1), (1, 2), (2, 3)]),
])
def test_loss_matches_formula(pairs: str, expected: list[tuple[int, int]]):
    m = make(pairs=pairs, intra=True, l_inter=0.3, l_intra=0.2, warmup_epochs=10)
    assert m.pairs == expected
    m.on_epoch_start(4, 30)  # warm-up factor (4 + 1) / 10
    x, y = batch(n=3)
    out = m(x, y)
    feats = m.backbone.forward_stages(x).maps
    z = m.backbone.classify(feats[-1])
    inter = inter_by_hand(feats, expected)
    intra = sum(intra_by_hand(f) for f in feats) / len(feats)
    assert close(out.terms["inter"], inter)
    assert close(out.terms["intra"], intra)
    assert close(out.loss, cross_entropy(z, y) + 0.5 * (0.3 * inter + 0.2 * intra))


def test_intra_is_optional():
    m = make(intra=False, l_inter=0.3, warmup_epochs=0)
    x, y = batch(n=3)
    out = m(x, y)
    feats = m.backbone.forward_stages(x).maps
    assert "intra" not in out.terms
    assert close(out.loss, cross_entropy(m.backbone.classify(feats[-1]), y) + 0.3 * inter_by_hand(
        feats, m.pairs))


def test_warmup_is_linear_to_one():
    m = make(warmup_epochs=20)
    assert m.reg_weight == pytest.approx(1 / 20)  # before any hook: the first epoch's factor
    factors = []
    for epoch in (0, 9, 19, 40):
        m.on_epoch_start(epoch, 50)
        factors.append(m.reg_weight)
    assert factors == pytest.approx([1 / 20, 10 / 20, 1.0, 1.0])
    no_warmup = make(warmup_epochs=0)
    no_warmup.on_epoch_start(0, 5)
    assert no_warmup.reg_weight == 1.0


def test_deep_side_of_each_pair_is_detached():
    m = make(pairs="all")
    x, y = batch(n=3)
    m(x, y).terms["inter"].backward()
    # The last stage only ever appears as a (detached) target, the classifier not at all.
    assert grad_is_zero(m.backbone.stages[3]) and grad_is_zero(m.backbone.fc)
    assert not grad_is_zero(m.backbone.stages[0])


@pytest.mark.parametrize("detach", [False, True])
def test_intra_gradient_reaches_salient_half_only_without_detach(detach: bool):
    # Saliency is the mean of the spatially L2-normalised map: flat maps (channels 0, 1)
    # score 1/3 on 3x3, single-peak maps (channels 2, 3) about 1/9.
    g = torch.Generator().manual_seed(3)
    f = 0.01 * torch.rand(2, 4, 3, 3, generator=g)
    f[:, :2] += 1.0
    f[:, 2:, 1, 1] += 1.0
    f.requires_grad_(True)
    intra_layer(f, detach_salient=detach).backward()
    salient_grad = f.grad[:, :2].abs().sum()
    assert f.grad[:, 2:].abs().sum() > 0
    assert (salient_grad == 0) == detach


def test_odd_spatial_sizes_pool_adaptively():
    shallow = torch.randn(2, 2, 7, 7)
    deep = torch.randn(2, 4, 4, 4)
    expected = mse(pool_by_hand(shallow, (4, 4)), deep[:, :2])
    assert close(inter_layer(shallow, deep), expected)
    m = make(intra=True)
    x, y = batch(n=2, size=7)  # stage outputs 7, 4, 2, 1
    out = m(x, y)
    assert torch.isfinite(out.loss)


def test_validate_params_rejects_impossible_values():
    for bad in ({"pairs": "random"}, {"l_inter": -1.0}, {"l_intra": -1.0}, {"warmup_epochs": -1}):
        with pytest.raises(ConfigError):
            Tfd.validate_params(replace(TfdParams(), **bad), 4)
    with pytest.raises(ConfigError):
        Tfd.validate_params(TfdParams(), 1)
    Tfd.validate_params(TfdParams(), 4)


def test_defaults_follow_the_authors_code():
    """run.sh trains with both terms: inter 5e-3 and intra 4e-4, all pairs, 20-epoch warm-up."""
    p = TfdParams()
    assert (p.intra, p.l_inter, p.l_intra, p.pairs, p.warmup_epochs) == (True, 5e-3, 4e-4, "all", 20)
    m = Tfd(tiny_backbone(width=2), p)
    m.on_epoch_start(19, 40)
    x, y = batch(n=3)
    out = m(x, y)
    feats = m.backbone.forward_stages(x).maps
    intra = sum(intra_by_hand(f) for f in feats) / len(feats)
    expected = cross_entropy(m.backbone.classify(feats[-1]), y) + 5e-3 * inter_by_hand(feats, m.pairs) + 4e-4 * intra
    assert close(out.loss, expected)
