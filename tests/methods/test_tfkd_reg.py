"""Tf-KD reg: the virtual teacher with numbers worked out here, the loss and its options."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from skd_ray.errors import ConfigError
from skd_ray.methods.tfkd_reg import TfkdReg, TfkdRegParams, virtual_teacher
from tests.helpers.handcalc import batch, close, cross_entropy, kl, softmax, tiny_backbone


def make(**kw) -> TfkdReg:
    return TfkdReg(tiny_backbone(), TfkdRegParams(**kw))


def normalise(values: list[float]) -> list[float]:
    total = sum(values)
    return [v / total for v in values]


def test_code_teacher_softens_probabilities_as_if_they_were_logits():
    # K = 3, a = 0.9: p_d = [0.05, 0.9, 0.05] for label 1; T = 2 -> softmax(p_d / 2).
    t = virtual_teacher(torch.tensor([1]), 3, TfkdRegParams(correct_prob=0.9, temperature=2.0))
    expected = normalise([math.exp(0.025), math.exp(0.45), math.exp(0.025)])
    assert t[0].tolist() == pytest.approx(expected)


def test_tempered_teacher_is_the_distribution_to_the_power_one_over_t():
    params = TfkdRegParams(correct_prob=0.9, temperature=2.0, virtual_teacher="tempered")
    t = virtual_teacher(torch.tensor([2]), 3, params)
    expected = normalise([math.sqrt(0.05), math.sqrt(0.05), math.sqrt(0.9)])
    assert t[0].tolist() == pytest.approx(expected)
    sharp = virtual_teacher(torch.tensor([0]), 3, replace(params, temperature=1.0))
    assert sharp[0].tolist() == pytest.approx([0.9, 0.05, 0.05])


def teacher_by_hand(y: torch.Tensor, k: int, a: float, t: float, tempered: bool) -> torch.Tensor:
    rows = []
    for label in y.tolist():
        p = [a if c == label else (1 - a) / (k - 1) for c in range(k)]
        scores = [math.log(v) / t if tempered else v / t for v in p]
        rows.append(normalise([math.exp(s) for s in scores]))
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("tempered,soften_student,t_squared", [
    (False, False, False), (True, True, True), (False, True, False),
])
def test_loss_matches_formula(tempered: bool, soften_student: bool, t_squared: bool):
    m = make(correct_prob=0.8, temperature=3.0, alpha=0.25, soften_student=soften_student,
             kd_t_squared=t_squared, virtual_teacher="tempered" if tempered else "code")
    x, y = batch(n=3)
    out = m(x, y)
    z = m.backbone(x)
    teacher = teacher_by_hand(y, 4, 0.8, 3.0, tempered)
    student = softmax(z / 3.0) if soften_student else softmax(z)
    kd = kl(teacher, student) * (9.0 if t_squared else 1.0)
    assert close(out.terms["kd"], kd)
    assert close(out.loss, 0.75 * cross_entropy(z, y) + 0.25 * kd)


def test_no_extra_parameters_and_gradients_reach_the_backbone():
    m = make()
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in m.backbone.parameters())
    m(*batch(n=3)).loss.backward()
    assert m.backbone.fc.weight.grad.abs().sum() > 0


def test_validate_params_rejects_impossible_values():
    for bad in ({"correct_prob": 0.0}, {"correct_prob": 1.5}, {"alpha": 1.5}, {"temperature": 0.0},
                {"virtual_teacher": "learned"}):
        with pytest.raises(ConfigError):
            TfkdReg.validate_params(replace(TfkdRegParams(), **bad), 4)
    TfkdReg.validate_params(TfkdRegParams(), 4)
