"""LightSKD: DRG and DSR by hand, buffer semantics, stop-gradients, exact state round trip."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from skd_ray.errors import ConfigError
from skd_ray.methods import FINAL
from skd_ray.methods.lightskd import LightSkd, LightSkdParams
from tests.helpers.handcalc import batch, close, cross_entropy, grad_is_zero, kl_t, tiny_backbone

T = 2.5


def make(seed: int = 0, **kw) -> LightSkd:
    params = LightSkdParams(**{"alpha": 0.3, "beta": 0.7, "temperature": T, **kw})
    return LightSkd(tiny_backbone(seed=seed), params)


def outputs(m: LightSkd, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    feats = m.backbone.forward_stages(x).maps
    return m.backbone.classify(feats[-1]), m.aux_head(feats[m.params.aux_stage - 1])[1]


def sort_rows(z: torch.Tensor) -> torch.Tensor:
    return torch.tensor([sorted(row) for row in z.tolist()], dtype=torch.float64)


def test_first_batch_has_drg_but_no_dsr():
    m = make()
    x, y = batch(n=3)
    out = m(x, y)
    z, z_aux = outputs(m, x)
    assert out.terms["dsr"].item() == 0.0
    assert close(out.terms["drg"], kl_t(z_aux, z, T))
    assert close(out.loss, cross_entropy(z, y) + cross_entropy(z_aux, y) + 0.3 * kl_t(z_aux, z, T))


def test_dsr_matches_previous_batch_sorted_logits():
    m = make()
    x1, y1 = batch(n=3, seed=1)
    x2, y2 = batch(n=3, seed=2)
    m(x1, y1)
    z1, _ = outputs(m, x1)
    assert torch.allclose(m.dsr_prev.double(), sort_rows(z1), atol=1e-6)
    out = m(x2, y2)
    z2, z2_aux = outputs(m, x2)
    dsr = kl_t(sort_rows(z1), sort_rows(z2), T)
    assert dsr.item() > 0
    assert close(out.terms["dsr"], dsr)
    assert close(out.loss, cross_entropy(z2, y2) + cross_entropy(z2_aux, y2)
                 + 0.3 * kl_t(z2_aux, z2, T) + 0.7 * dsr)


def test_buffer_is_updated_without_drg_and_dsr_can_be_off():
    m = make(drg=False)
    x1, y1 = batch(n=3, seed=1)
    x2, y2 = batch(n=3, seed=2)
    m(x1, y1)
    assert m.dsr_prev.shape == (3, 4)  # the published code only updated it inside DRG
    out = m(x2, y2)
    assert out.terms["drg"].item() == 0.0 and out.terms["dsr"].item() > 0
    off = make(dsr=False)
    off(x1, y1)
    out = off(x2, y2)
    z2, z2_aux = outputs(off, x2)
    assert out.terms["dsr"].item() == 0.0
    assert close(out.loss, cross_entropy(z2, y2) + cross_entropy(z2_aux, y2) + 0.3 * kl_t(z2_aux, z2, T))


def test_batch_size_change_skips_dsr():
    m = make()
    m(*batch(n=3, seed=1))
    out = m(*batch(n=2, seed=2))
    assert out.terms["dsr"].item() == 0.0
    assert m.dsr_prev.shape == (2, 4)


def test_teachers_are_detached():
    m = make()
    m(*batch(n=3, seed=1))
    out = m(*batch(n=3, seed=2))
    out.terms["drg"].backward(retain_graph=True)
    assert grad_is_zero(m.aux_head)  # the shallow head teaches, it is not pulled by DRG
    assert not grad_is_zero(m.backbone.fc)
    assert not m.dsr_prev.requires_grad
    m.zero_grad()
    out.terms["dsr"].backward()
    assert grad_is_zero(m.aux_head) and not grad_is_zero(m.backbone.fc)


def test_epoch_reset_option():
    m = make()
    m(*batch(n=3))
    m.on_epoch_start(1, 5)
    assert m.dsr_prev.shape == (0, 4)  # published code: no DSR on an epoch's first batch
    keep = make(dsr_reset_each_epoch=False)
    keep(*batch(n=3))
    keep.on_epoch_start(1, 5)
    assert keep.dsr_prev.shape == (3, 4)


def test_state_dict_round_trip_gives_identical_next_step():
    m = make(dsr_reset_each_epoch=False)
    m(*batch(n=3, seed=1))
    state = m.state_dict()
    assert state["dsr_prev"].shape == (3, 4)
    fresh = make(seed=99, dsr_reset_each_epoch=False)  # its buffer is still empty (0 rows)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.dsr_prev, m.dsr_prev)
    for module in (m, fresh):
        module.on_epoch_start(1, 5)
    x, y = batch(n=3, seed=2)
    a, b = m(x, y), fresh(x, y)
    assert a.terms["dsr"].item() > 0
    assert close(a.loss, b.loss, tol=1e-7)


def test_aux_head_dropped_at_inference():
    m = make().eval()
    x, _ = batch(n=3)
    logits = m.predict(x)
    assert list(logits) == [FINAL]
    assert torch.allclose(logits[FINAL], m.deployable()(x))


def test_validate_params_rejects_impossible_values():
    for bad in ({"aux_stage": 0}, {"aux_stage": 4}, {"alpha": -1.0}, {"temperature": 0.0}):
        with pytest.raises(ConfigError):
            LightSkd.validate_params(replace(LightSkdParams(), **bad), 4)
    LightSkd.validate_params(LightSkdParams(aux_stage=3), 4)


def test_aux_head_is_the_published_adapter():
    """adapter.py Istr_2: BYOT's full attention gate, upsampled with align_corners=True."""
    from skd_ray.models.heads import SepConv, SpatialAttention

    gate = make().aux_head.body[0]
    assert isinstance(gate, SpatialAttention) and gate.align_corners
    assert isinstance(gate.down[0], SepConv) and isinstance(gate.down[1], torch.nn.BatchNorm2d)
