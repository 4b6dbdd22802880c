"""TESKD: student placement, FPN shapes, the loss by hand, teacher (non-)detachment."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from skd_ray.errors import ConfigError
from skd_ray.methods import FINAL
from skd_ray.methods.teskd import Teskd, TeskdParams, feature_loss, partial_l2
from tests.helpers.handcalc import batch, close, cross_entropy, grad_is_zero, kl_t, tiny_backbone


def make(**kw) -> Teskd:
    params = TeskdParams(**{"w_ce": 0.3, "w_kd": 0.6, "w_fea": 0.01, "temperature": 2.0, **kw})
    return Teskd(tiny_backbone(width=2), params)


@pytest.mark.parametrize("n,levels", [(1, [3]), (2, [2, 3]), (3, [1, 2, 3])])
def test_students_keep_the_deepest_levels(n: int, levels: list[int]):
    m = make(num_students=n)
    assert m.levels == levels
    assert sorted(m.heads) == [f"student{level}" for level in levels]


def test_fpn_levels_have_stage_resolution_and_last_stage_width():
    m = make()
    x, _ = batch(n=2, size=8)
    feats = m.backbone.forward_stages(x).maps
    fused = m.fpn(feats)
    for level in (1, 2, 3):
        assert fused[level].shape == (2, m.backbone.stage_channels[-1], *feats[level - 1].shape[-2:])
    pooled, logits = m.students(feats)[1]
    assert pooled.shape == (2, m.backbone.stage_channels[-1]) and logits.shape == (2, 4)


@pytest.mark.parametrize("reduction,scale", [("per_sample", 128 / 3), ("sum", 1.0)])
def test_loss_matches_formula(reduction: str, scale: float):
    m = make(fea_reduction=reduction)
    x, y = batch(n=3)
    out = m(x, y)
    feats = m.backbone.forward_stages(x).maps
    t_feat = feats[-1].double().mean(dim=(2, 3))
    z = m.backbone.fc(feats[-1].mean(dim=(2, 3)))
    ce = cross_entropy(z, y)
    kd = fea = 0.0
    for s_feat, s_logits in m.students(feats).values():
        ce = ce + cross_entropy(s_logits, y)
        kd = kd + kl_t(z, s_logits, 2.0)
        s = s_feat.double()
        mask = ((s > 0) | (t_feat > 0)).double()
        fea = fea + (((s - t_feat) ** 2) * mask).sum() * scale
    assert close(out.loss, 0.3 * ce + 0.6 * kd + 0.01 * fea)
    assert close(sum(v for k, v in out.terms.items() if k.startswith("fea_")), fea)
    assert close(out.terms["ce"], cross_entropy(z, y))


def test_per_sample_feature_loss_is_the_batch_sum_over_the_batch_times_the_reference_batch():
    student = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    teacher = torch.tensor([[0.0, -1.0], [2.0, 0.0]])
    # kept: (0,0) 1, (1,0) 2.25, (1,1) 9; dropped: (0,1); batch sum 12.25 over 2 samples
    assert feature_loss(student, teacher, "sum", 128).item() == pytest.approx(12.25)
    assert feature_loss(student, teacher, "per_sample", 128).item() == pytest.approx(12.25 / 2 * 128)
    # At the reference batch size the per-sample loss is the official batch sum.
    assert feature_loss(student, teacher, "per_sample", 2).item() == pytest.approx(12.25)


def test_partial_l2_ignores_where_both_are_non_positive():
    student = torch.tensor([[1.0, -2.0, 0.5, -1.0]])
    teacher = torch.tensor([[0.0, -1.0, 2.0, 3.0]])
    # kept: positions 0 (student > 0), 2 (both), 3 (teacher > 0); dropped: 1
    assert partial_l2(student, teacher).item() == pytest.approx(1.0 + 2.25 + 16.0)


@pytest.mark.parametrize("detach", [False, True])
def test_kl_reaches_teacher_classifier_only_without_detach(detach: bool):
    m = make(detach_teacher=detach)
    out = m(*batch(n=3))
    kd = sum(v for k, v in out.terms.items() if k.startswith("kd_"))
    kd.backward()
    assert grad_is_zero(m.backbone.fc) == detach
    assert not grad_is_zero(m.heads["student1"])


def test_feature_target_is_detached():
    m = make(w_ce=0.0, w_kd=0.0, w_fea=1.0)
    captured = {}
    pool = m.backbone.pool

    def pool_and_keep(feat: torch.Tensor) -> torch.Tensor:
        captured["teacher_feature"] = out = pool(feat)
        out.retain_grad()
        return out

    m.backbone.pool = pool_and_keep
    m(*batch(n=3)).loss.backward()
    grad = captured["teacher_feature"].grad  # zero-weighted CE/KD still reach it, with zeros
    assert grad is None or not grad.abs().sum()
    assert not grad_is_zero(m.heads["student3"])


def test_students_dropped_at_inference_and_odd_sizes_work():
    m = make()
    x, y = batch(n=2, size=14)  # stage outputs 14, 7, 4, 2: upsampling 4 -> 7 must fit
    assert torch.isfinite(m(x, y).loss)
    m.eval()
    logits = m.predict(x)
    assert list(logits) == [FINAL]
    assert torch.allclose(logits[FINAL], m.backbone(x))


def test_validate_params_rejects_impossible_values():
    for n in (0, 4):
        with pytest.raises(ConfigError):
            Teskd.validate_params(replace(TeskdParams(), num_students=n), 4)
    with pytest.raises(ConfigError):
        Teskd.validate_params(replace(TeskdParams(), num_students=3), 3)
    for bad in ({"w_kd": -1.0}, {"temperature": 0.0}, {"fea_reduction": "mean"}, {"reference_batch": 0}):
        with pytest.raises(ConfigError):
            Teskd.validate_params(replace(TeskdParams(), **bad), 4)
    for n in (1, 2, 3):
        Teskd.validate_params(replace(TeskdParams(), num_students=n), 4)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("k,size", [(2, 8), (4, 8), (8, 8), (2, 7)])
def test_patch_conv_is_the_strided_convolution(k: int, size: int, channels_last: bool):
    """Values and gradients, for either memory layout (the FPN hands it channels-last maps)."""
    from skd_ray.models.fpn import patch_conv

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, k, k, bias=True).double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    ours, ref = patch_conv(x, conv), conv(x)
    assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-12)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad((ours * g).sum(), [x, conv.weight, conv.bias])
    expected = torch.autograd.grad((ref * g).sum(), [x, conv.weight, conv.bias])
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(grads, expected))


def test_fpn_matches_the_official_order_upsample_then_conv():
    """resnet_our.py upsamples, then applies the 1x1 conv; the conv runs first here (exact)."""
    from torch.nn import functional as F

    m = make()
    m.double()
    x, _ = batch(n=2, size=14)  # stage outputs 14, 7, 4, 2: odd sizes too
    feats = m.backbone.forward_stages(x.double()).maps
    fpn = m.fpn
    top = fpn.laterals["4"](feats[-1])
    expected = {}
    for i in (3, 2, 1):
        lateral = fpn.laterals[str(i)](feats[i - 1])
        up = fpn.upsample[str(i)](F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True))
        top = expected[i] = fpn.fuse[str(i)](torch.cat([up + lateral, up], dim=1))
    got = fpn(feats)
    for i in (1, 2, 3):
        assert torch.allclose(got[i], expected[i], atol=1e-10), i
