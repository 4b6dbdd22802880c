"""BYOT: the loss against formulas written out here, gradient routing and exit placement."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from skd_ray.methods import FINAL, build_method, get_method_spec
from skd_ray.methods.byot import Byot, ByotParams
from skd_ray.methods.losses import kl_t
from skd_ray.models import StagedResNet
from skd_ray.models.flops import count_macs
from skd_ray.models.heads import SepConv, SpatialAttention

NUM_CLASSES = 3




def tiny_byot(exits: list[int] | None = None, *, attention: bool = True, kd_t_squared: bool = False,
              alpha: float = 0.4, temperature: float = 2.5, hint_weight: float = 0.2, seed: int = 0,
              **kw: object) -> Byot:
    torch.manual_seed(seed)
    backbone = StagedResNet([1, 1, 1, 1], 2, 1, NUM_CLASSES)
    params = ByotParams(exits=exits or [1, 2, 3], attention=attention, alpha=alpha, temperature=temperature,
                        hint_weight=hint_weight, kd_t_squared=kd_t_squared, **kw)
    return Byot(backbone, params)


def batch(n: int = 5, size: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g)
    y = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1][:n])
    return x, y


# --- formulas written out by hand (float64) --------------------------------------------------

def log_softmax(z: torch.Tensor) -> torch.Tensor:
    m = z.max(dim=1, keepdim=True).values
    return z - m - torch.log(torch.exp(z - m).sum(dim=1, keepdim=True))


def cross_entropy(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logp = log_softmax(z)
    return -sum(logp[i, int(y[i])] for i in range(len(y))) / len(y)


def kl_by_hand(teacher: torch.Tensor, student: torch.Tensor, t: float) -> torch.Tensor:
    log_p = log_softmax(teacher / t)
    log_q = log_softmax(student / t)
    return (torch.exp(log_p) * (log_p - log_q)).sum() / teacher.shape[0]


def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(((a - b) ** 2).sum())


def hint_by_hand(a: torch.Tensor, b: torch.Tensor, reduction: str) -> torch.Tensor:
    """`batch`: one L2 norm over the whole batch (torch.dist); `per_sample`: the mean of the
    rows' L2 norms times sqrt(128), the journal code's batch size."""
    if reduction == "batch":
        return l2_distance(a, b)
    return sum(l2_distance(a[i], b[i]) for i in range(a.shape[0])) / a.shape[0] * math.sqrt(128)


@pytest.mark.parametrize("kd_t_squared", [False, True])
@pytest.mark.parametrize("exits,hint_exits,hinted", [
    ([1, 2, 3], "code", [1, 2]),  # train.py: no hint on the exit right below the final stage
    ([1, 2, 3], "all", [1, 2, 3]),
    ([2, 3], "code", [2]),
    ([2], "code", [2]),
])
@pytest.mark.parametrize("reduction", ["per_sample", "batch"])
def test_loss_matches_hand_formula(kd_t_squared: bool, exits: list[int], hint_exits: str, hinted: list[int],
                                   reduction: str) -> None:
    method = tiny_byot(exits, kd_t_squared=kd_t_squared, hint_exits=hint_exits, hint_reduction=reduction)
    assert sorted(method.hint_proj) == [f"exit{s}" for s in hinted]
    p = method.params
    x, y = batch()
    out = method(x, y)

    with torch.no_grad():
        feats = method.backbone.forward_stages(x).maps
        f_deep = feats[-1].double().mean(dim=(2, 3))
        fc = method.backbone.fc
        z_deep = f_deep @ fc.weight.double().T + fc.bias.double()
        expected_terms = {"ce_final": cross_entropy(z_deep, y)}
        total = expected_terms["ce_final"]
        for s in exits:
            name = f"exit{s}"
            pooled, z = method.heads[name](feats[s - 1])
            pooled, z = pooled.double(), z.double()
            ce = cross_entropy(z, y)
            kd = kl_by_hand(z_deep, z, p.temperature) * (p.temperature**2 if kd_t_squared else 1.0)
            expected_terms.update({f"ce_{name}": ce, f"kd_{name}": kd})
            total = total + (1 - p.alpha) * ce + p.alpha * kd
            if s in hinted:
                proj = method.hint_proj[name]
                w_f = pooled @ proj.weight.double().T + proj.bias.double()
                hint = hint_by_hand(w_f, f_deep, reduction)
                expected_terms[f"hint_{name}"] = hint
                total = total + p.hint_weight * hint

    assert set(out.terms) == set(expected_terms)
    for key, value in expected_terms.items():
        assert out.terms[key].item() == pytest.approx(float(value), rel=1e-5, abs=1e-6), key
    assert out.loss.item() == pytest.approx(float(total), rel=1e-5)
    assert torch.allclose(out.logits.double(), z_deep, atol=1e-5)
    # the terms are not trivially zero: each contributes to the total
    assert all(float(v) > 1e-4 for v in expected_terms.values())


def test_t_squared_option_scales_only_kd() -> None:
    x, y = batch()
    plain = tiny_byot(kd_t_squared=False)(x, y)
    squared = tiny_byot(kd_t_squared=True)(x, y)
    t2 = 2.5**2
    for key, value in plain.terms.items():
        factor = t2 if key.startswith("kd_") else 1.0
        assert squared.terms[key].item() == pytest.approx(value.item() * factor, rel=1e-5), key


def test_kl_t_on_literal_logits() -> None:
    teacher = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    student = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    # KL(softmax(t/2) || softmax(s/2)) per row: 0.511151..., 0.150122...; batch mean:
    expected = 0.33063656149034715
    assert float(kl_t(teacher, student, 2.0, t_squared=False)) == pytest.approx(expected, rel=1e-6)
    assert float(kl_t(teacher, student, 2.0, t_squared=True)) == pytest.approx(4 * expected, rel=1e-6)
    # the first argument is the target: swapping them changes the value
    assert float(kl_t(student, teacher, 2.0, t_squared=False)) != pytest.approx(expected, rel=1e-3)
    assert float(kl_t(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-7)


# --- gradient routing ----------------------------------------------------------------------

def grad_norms(module: nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def backward_of(method: Byot, keys: tuple[str, ...]) -> None:
    x, y = batch()
    method.zero_grad(set_to_none=True)
    out = method(x, y)
    sum(v for k, v in out.terms.items() if k.startswith(keys)).backward()


@pytest.mark.parametrize("keys", [("kd_",), ("hint_",), ("kd_", "hint_")])
def test_distillation_terms_do_not_reach_the_teacher(keys: tuple[str, ...]) -> None:
    method = tiny_byot()
    backward_of(method, keys)
    bb = method.backbone
    assert grad_norms(bb.fc) == 0.0
    assert grad_norms(bb.stages[-1]) == 0.0
    # the exits (and the shallow stages they sit on) do learn from the teacher
    assert grad_norms(method.heads) > 0
    assert grad_norms(bb.stages[0]) > 0
    if keys == ("hint_",):
        assert grad_norms(method.hint_proj) > 0
    if keys == ("kd_",):
        assert grad_norms(method.hint_proj) == 0.0
        for head in method.heads.values():
            assert grad_norms(head.fc) > 0


def test_final_ce_trains_backbone_only() -> None:
    method = tiny_byot()
    backward_of(method, ("ce_final",))
    bb = method.backbone
    for part in (bb.fc, bb.stem, *bb.stages):
        assert grad_norms(part) > 0
    assert grad_norms(method.heads) == 0.0
    assert grad_norms(method.hint_proj) == 0.0


def test_full_loss_reaches_every_parameter() -> None:
    method = tiny_byot()
    x, y = batch()
    method(x, y).loss.backward()
    missing = [n for n, p in method.named_parameters() if p.grad is None]
    assert missing == []


# --- exit placement and heads ---------------------------------------------------------------

def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_exit_placement_changes_the_model() -> None:
    one, three = tiny_byot([1]), tiny_byot([1, 2, 3])
    assert list(one.heads) == ["exit1"] and list(one.hint_proj) == ["exit1"]
    assert list(three.heads) == ["exit1", "exit2", "exit3"]
    assert list(three.hint_proj) == ["exit1", "exit2"]  # journal code: no hint on the stage-3 exit
    assert n_params(three) > n_params(one) > n_params(one.backbone)
    assert n_params(one.backbone) == n_params(three.backbone)
    x, _ = batch()
    one.eval()
    three.eval()
    assert list(one.predict(x)) == ["exit1", FINAL]
    assert list(three.predict(x)) == ["exit1", "exit2", "exit3", FINAL]
    for logits in three.predict(x).values():
        assert logits.shape == (5, NUM_CLASSES)


def test_exits_sorted_shallow_to_deep() -> None:
    method = tiny_byot([3, 1])
    x, y = batch()
    method.eval()
    assert list(method.predict(x)) == ["exit1", "exit3", FINAL]
    assert set(method(x, y).terms) == {"ce_final", "ce_exit1", "kd_exit1", "hint_exit1",
                                       "ce_exit3", "kd_exit3"}


def test_predict_final_is_the_backbone_and_matches_forward_logits() -> None:
    method = tiny_byot()
    method.eval()
    x, y = batch()
    with torch.no_grad():
        preds = method.predict(x)
        assert torch.allclose(preds[FINAL], method.deployable()(x))
        assert torch.allclose(preds[FINAL], method(x, y).logits)
        pooled, z = method.heads["exit2"](method.backbone.forward_stages(x).maps[1])
        assert torch.allclose(preds["exit2"], z)
    assert method.deployable() is method.backbone


def test_attention_switch_changes_head_structure() -> None:
    on, off = tiny_byot(attention=True), tiny_byot(attention=False)
    for head in on.heads.values():
        kinds = [type(m) for m in head.body]
        assert kinds[0] is SpatialAttention and SepConv in kinds
    for head in off.heads.values():
        assert not any(isinstance(m, (SpatialAttention, SepConv)) for m in head.modules())
        assert sum(isinstance(m, nn.Conv2d) for m in head.body) == 3
    # one stride-2 sepconv per stage between the exit and the last stage
    assert [sum(isinstance(m, SepConv) for m in h.body) for h in on.heads.values()] == [3, 2, 1]
    assert n_params(on.heads) != n_params(off.heads)
    x, y = batch()
    for method in (on, off):
        out = method(x, y)
        assert torch.isfinite(out.loss)


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("size", [8, 28, 32])
def test_heads_reach_final_width(attention: bool, size: int) -> None:
    method = tiny_byot(attention=attention)
    x, _ = batch(n=2, size=size)
    feats = method.backbone.forward_stages(x).maps
    for s in (1, 2, 3):
        pooled, z = method.heads[f"exit{s}"](feats[s - 1])
        assert pooled.shape == (2, method.backbone.stage_channels[-1])
        assert z.shape == (2, NUM_CLASSES)


def test_exit_costs_are_ordered() -> None:
    method = tiny_byot()
    method.train()
    x, _ = batch()
    bn = method.backbone.stem[1]
    before = bn.running_mean.clone()
    costs = method.exit_costs(x)
    assert torch.equal(bn.running_mean, before)  # counting must not update BN statistics
    assert method.training
    assert list(costs) == ["exit1", "exit2", "exit3", FINAL]
    assert costs[FINAL].standalone == 1.0
    cumulative = [c.cumulative for c in costs.values()]
    assert cumulative == sorted(cumulative) and cumulative[-1] > 1.0
    standalone = [costs[f"exit{s}"].standalone for s in (1, 2, 3)]
    assert all(0 < c for c in standalone)
    assert costs["exit1"].cumulative == costs["exit1"].standalone
    assert costs["exit3"].cumulative > costs["exit3"].standalone


def test_exit_costs_compose_prefix_and_heads() -> None:
    """standalone = (stem..stage s + head s) / backbone; cumulative adds every shallower head."""
    method = tiny_byot([1, 3]).eval()
    x, _ = batch(n=1)
    bb = method.backbone
    with torch.no_grad():
        full = count_macs(bb, x)
        feats, prefix, out = [], [], x
        macs = count_macs(bb.stem, x)
        out = bb.stem(x)
        for stage in bb.stages:
            macs += count_macs(stage, out)
            out = stage(out)
            feats.append(out)
            prefix.append(macs)
        head1 = count_macs(method.heads["exit1"], feats[0])
        head3 = count_macs(method.heads["exit3"], feats[2])
    assert full == prefix[-1] + bb.fc.in_features * bb.fc.out_features
    costs = method.exit_costs(x)
    assert costs["exit1"].standalone == pytest.approx((prefix[0] + head1) / full)
    assert costs["exit3"].standalone == pytest.approx((prefix[2] + head3) / full)
    assert costs["exit3"].cumulative == pytest.approx((prefix[2] + head1 + head3) / full)
    assert costs[FINAL].cumulative == pytest.approx((full + head1 + head3) / full)


def test_registry_builds_byot() -> None:
    spec = get_method_spec("byot")
    assert spec.cls is Byot and spec.params is ByotParams
    torch.manual_seed(0)
    method = build_method("byot", StagedResNet([1, 1, 1, 1], 2, 1, NUM_CLASSES), ByotParams(exits=[2]))
    assert isinstance(method, Byot) and list(method.heads) == ["exit2"]
    keys = method.state_dict().keys()
    assert any(k.startswith("heads.exit2.") for k in keys)
    assert any(k.startswith("hint_proj.exit2.") for k in keys)


def test_exit_policy_follows_the_params() -> None:
    from skd_ray.methods import ExitPolicy

    assert tiny_byot().exit_policy() == ExitPolicy("logits", ())  # journal code: mean of logits
    method = tiny_byot([1, 3], ensemble="softmax", threshold_offsets=[0.01, 0.02, 0.03, 0.04])
    assert method.exit_policy() == ExitPolicy("softmax", (0.01, 0.03, 0.04))  # stages 1, 3, final


@pytest.mark.parametrize("bad", [{"hint_exits": "none"}, {"hint_reduction": "mean"}, {"ensemble": "vote"},
                                 {"reference_batch": 0}, {"threshold_offsets": [0.0, 0.1]}])
def test_validate_rejects_unknown_options(bad: dict) -> None:
    from dataclasses import replace

    from skd_ray.errors import ConfigError

    with pytest.raises(ConfigError):
        Byot.validate_params(replace(ByotParams(), **bad), 4)
    Byot.validate_params(ByotParams(threshold_offsets=[0.0, 0.01, 0.02, 0.03]), 4)


def test_evaluation_uses_the_methods_exit_policy() -> None:
    """engine.evaluate's ensemble and dynamic policy come from the method's ExitPolicy."""
    from dataclasses import replace

    from skd_ray.config import TrainConfig
    from skd_ray.training.early_exit import exit_metric_sums
    from skd_ray.training.engine import evaluate
    from tests.helpers.tiny_byot import tiny_byot_eval

    cfg = TrainConfig()
    cfg = replace(cfg, eval=replace(cfg.eval, thresholds=[0.4]))
    seen = []
    for policy in ({"ensemble": "softmax", "threshold_offsets": [0.3, 0.0, 0.2, 0.1]}, {}):
        method, split, loader = tiny_byot_eval(12, 12)
        method.params = replace(method.params, **policy)
        metrics = evaluate(method, loader, cfg, torch.device("cpu"))
        with torch.no_grad():
            sums = exit_metric_sums(method.predict(split.images), split.labels, method.exit_costs(split.images),
                                    [0.4], method.exit_policy())
        for key in ("acc.ensemble", "acc.dynamic_t0.4", "compute.dynamic_t0.4"):
            assert metrics[f"val_{key}"] == pytest.approx(float(sums[key]) / 12), key
        seen.append(metrics["val_compute.dynamic_t0.4"])
    assert seen[0] != pytest.approx(seen[1])  # the offsets changed where samples leave
