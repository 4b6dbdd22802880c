"""Dynamic early exit on hand-made logits: which exit each sample takes, accuracy and compute."""

from __future__ import annotations

import math

import pytest
import torch

from skd_ray.methods.base import FINAL, ExitCost, ExitPolicy
from skd_ray.training.early_exit import exit_metric_sums, exit_thresholds
from skd_ray.training.metrics import threshold_key

# Probabilities per exit (rows: samples 0..3, columns: classes 0..2). Logits are their logs,
# so softmax gives these numbers back.
PROBS = {
    "exit1": [[0.91, 0.05, 0.04], [0.50, 0.30, 0.20], [0.45, 0.35, 0.20], [0.10, 0.50, 0.40]],
    "exit2": [[0.10, 0.80, 0.10], [0.05, 0.92, 0.03], [0.30, 0.30, 0.40], [0.20, 0.45, 0.35]],
    FINAL: [[0.04, 0.88, 0.08], [0.10, 0.10, 0.80], [0.01, 0.02, 0.97], [0.50, 0.30, 0.20]],
}
LABELS = torch.tensor([0, 2, 2, 1])
COSTS = {"exit1": ExitCost(0.2, 0.25), "exit2": ExitCost(0.45, 0.5), FINAL: ExitCost(1.0, 1.25)}

# Worked out by hand from the table above:
#   argmax  exit1: 0 0 0 1 -> correct on samples 0, 3       -> 2
#           exit2: 1 1 2 1 -> correct on samples 2, 3       -> 2
#           final: 1 2 2 0 -> correct on samples 1, 2       -> 2
#   ensemble (mean of the three rows): 1 1 2 1 -> samples 2, 3 -> 2
#   t=0.9:  s0 exit1 (0.91, right), s1 exit2 (0.92, wrong), s2 final (0.97, right),
#           s3 none -> ensemble (right): 3 correct, compute 0.25 + 0.5 + 1.25 + 1.25 = 3.25
#   t=0.96: only s2 is confident (final); s0, s1, s3 use the ensemble (wrong, wrong, right):
#           2 correct, compute 4 * 1.25 = 5.0
#   t=0.3:  every max probability is >= 1/3, so everyone leaves at exit1: 2 correct, compute 1.0
#   t=1.0:  nobody is confident: ensemble everywhere: 2 correct, compute 5.0
EXPECTED = {
    "acc.exit1": 2, "acc.exit2": 2, "acc.final": 2, "acc.ensemble": 2,
    "acc.dynamic_t0.9": 3, "compute.dynamic_t0.9": 3.25,
    "acc.dynamic_t0.96": 2, "compute.dynamic_t0.96": 5.0,
    "acc.dynamic_t0.3": 2, "compute.dynamic_t0.3": 1.0,
    "acc.dynamic_t1": 2, "compute.dynamic_t1": 5.0,
}


def logits(rows: slice = slice(None)) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(p)[rows].log() for name, p in PROBS.items()}


def test_hand_made_policy() -> None:
    sums = exit_metric_sums(logits(), LABELS, COSTS, [0.9, 0.96, 0.3, 1.0])
    assert set(sums) == set(EXPECTED)
    for key, value in EXPECTED.items():
        assert float(sums[key]) == pytest.approx(value), key


def test_dynamic_differs_from_every_single_exit_and_the_ensemble() -> None:
    """At t=0.9 the policy mixes exits: it beats each exit and the ensemble on this batch."""
    sums = exit_metric_sums(logits(), LABELS, COSTS, [0.9])
    others = [float(sums[k]) for k in ("acc.exit1", "acc.exit2", "acc.final", "acc.ensemble")]
    assert float(sums["acc.dynamic_t0.9"]) > max(others)


@pytest.mark.parametrize("sample,threshold,exit_cost,correct", [
    (0, 0.9, 0.25, 1),   # exit1 confident and right
    (1, 0.9, 0.5, 0),    # exit1 unsure, exit2 confident and wrong
    (2, 0.9, 1.25, 1),   # only the final exit is confident
    (3, 0.9, 1.25, 1),   # nobody confident: ensemble, right where final alone is wrong
    (0, 0.96, 1.25, 0),  # nobody confident: ensemble picks class 1
])
def test_single_sample_routes(sample: int, threshold: float, exit_cost: float, correct: int) -> None:
    rows = slice(sample, sample + 1)
    sums = exit_metric_sums(logits(rows), LABELS[rows], COSTS, [threshold])
    key = threshold_key(threshold)
    assert float(sums[f"compute.dynamic_{key}"]) == pytest.approx(exit_cost)
    assert float(sums[f"acc.dynamic_{key}"]) == correct


def test_ensemble_fallback_uses_the_ensemble_not_final() -> None:
    # final says class 0 with 0.5; the two shallow exits lean to class 1 -> the ensemble is class 1
    sums = exit_metric_sums(logits(slice(3, 4)), torch.tensor([1]), COSTS, [0.99])
    assert float(sums["acc.final"]) == 0
    assert float(sums["acc.ensemble"]) == 1
    assert float(sums["acc.dynamic_t0.99"]) == 1
    assert float(sums["compute.dynamic_t0.99"]) == pytest.approx(COSTS[FINAL].cumulative)


def test_sums_add_up_over_shards() -> None:
    thresholds = [0.3, 0.9, 0.96]
    whole = exit_metric_sums(logits(), LABELS, COSTS, thresholds)
    first = exit_metric_sums(logits(slice(0, 1)), LABELS[0:1], COSTS, thresholds)
    rest = exit_metric_sums(logits(slice(1, 4)), LABELS[1:4], COSTS, thresholds)
    for key in whole:
        assert float(first[key] + rest[key]) == pytest.approx(float(whole[key])), key


def test_logit_scale_matters_only_through_softmax() -> None:
    """Adding a constant per row leaves probabilities, hence every decision, unchanged."""
    shifted = {k: v + 7.0 for k, v in logits().items()}
    a = exit_metric_sums(logits(), LABELS, COSTS, [0.9])
    b = exit_metric_sums(shifted, LABELS, COSTS, [0.9])
    assert {k: float(v) for k, v in a.items()} == pytest.approx({k: float(v) for k, v in b.items()})


def test_single_exit_methods_report_only_final() -> None:
    z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 5.0]])
    sums = exit_metric_sums({FINAL: z}, torch.tensor([0, 1, 0]), {FINAL: ExitCost(1.0, 1.0)}, [0.9])
    assert set(sums) == {"acc.final"}
    assert float(sums["acc.final"]) == 2


def test_final_must_be_last() -> None:
    reordered = {FINAL: logits()[FINAL], "exit1": logits()["exit1"]}
    with pytest.raises(AssertionError):
        exit_metric_sums(reordered, LABELS, COSTS, [0.9])


def test_threshold_key() -> None:
    assert threshold_key(0.95) == "t0.95"
    assert threshold_key(1.0) == "t1"
    assert math.isclose(float(threshold_key(0.875)[1:]), 0.875)


# Two exits where averaging logits and averaging probabilities disagree:
#   exit1 logits [4, 0] -> softmax [0.982, 0.018]; exit2 and final [0, 1.5] -> [0.182, 0.818]
#   mean of logits: [1.333, 1.0] -> class 0; mean of softmax: [0.449, 0.551] -> class 1
DISAGREE = {"exit1": torch.tensor([[4.0, 0.0]]), "exit2": torch.tensor([[0.0, 1.5]]),
            FINAL: torch.tensor([[0.0, 1.5]])}


@pytest.mark.parametrize("ensemble,label", [("logits", 0), ("softmax", 1)])
def test_ensemble_mode(ensemble: str, label: int) -> None:
    sums = exit_metric_sums(DISAGREE, torch.tensor([label]), COSTS, [1.0], ExitPolicy(ensemble))
    assert float(sums["acc.ensemble"]) == 1
    assert float(sums["acc.dynamic_t1"]) == 1  # nobody reaches 1.0: the ensemble answers
    wrong = exit_metric_sums(DISAGREE, torch.tensor([1 - label]), COSTS, [1.0], ExitPolicy(ensemble))
    assert float(wrong["acc.ensemble"]) == 0


def test_default_ensemble_averages_logits() -> None:
    assert float(exit_metric_sums(DISAGREE, torch.tensor([0]), COSTS, [1.0])["acc.ensemble"]) == 1


def test_per_exit_thresholds_offset_the_swept_one() -> None:
    # t=0.9 with exit1 at 0.92: s0 (exit1 0.91) no longer leaves at exit1; exit2 0.80 and final
    # 0.88 are below 0.9 -> ensemble (class 1, wrong). s1 exit2 (wrong, 0.5), s2 final (right,
    # 1.25), s3 ensemble (right, 1.25): 2 correct, compute 1.25 + 0.5 + 1.25 + 1.25 = 4.25.
    policy = ExitPolicy("logits", (0.02, 0.0, 0.0))
    sums = exit_metric_sums(logits(), LABELS, COSTS, [0.9], policy)
    assert float(sums["acc.dynamic_t0.9"]) == 2
    assert float(sums["compute.dynamic_t0.9"]) == pytest.approx(4.25)
    zero = exit_metric_sums(logits(), LABELS, COSTS, [0.9], ExitPolicy("logits", (0.0, 0.0, 0.0)))
    assert float(zero["acc.dynamic_t0.9"]) == EXPECTED["acc.dynamic_t0.9"]
    assert float(zero["compute.dynamic_t0.9"]) == EXPECTED["compute.dynamic_t0.9"]


def test_exit_thresholds_are_clipped_and_checked() -> None:
    got = exit_thresholds(0.95, 3, ExitPolicy("logits", (-0.05, 0.0, 0.1)))
    assert got.tolist() == pytest.approx([0.9, 0.95, 1.0])
    assert exit_thresholds(0.5, 2, ExitPolicy()).tolist() == [0.5, 0.5]
    with pytest.raises(ValueError):
        exit_thresholds(0.9, 3, ExitPolicy("logits", (0.0, 0.0)))
