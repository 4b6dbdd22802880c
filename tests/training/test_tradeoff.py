"""Relative compute per exit and reading the accuracy/compute trade-off back from metrics."""

from __future__ import annotations

import pytest
import torch

from skd_ray.methods import FINAL
from skd_ray.methods.base import ExitCost
from skd_ray.training.early_exit import exit_compute, tradeoff_from_metrics
from skd_ray.training.engine import evaluate
from skd_ray.training.resolve import resolve_config
from tests.helpers.tiny_byot import tiny_byot_eval

COSTS = {"exit1": ExitCost(0.2, 0.25), "exit2": ExitCost(0.45, 0.5), FINAL: ExitCost(1.0, 1.25)}


def test_exit_compute_is_standalone_per_exit_and_every_head_for_the_ensemble() -> None:
    assert exit_compute(COSTS) == {"compute.exit1": 0.2, "compute.exit2": 0.45, "compute.final": 1.0,
                                   "compute.ensemble": 1.25}
    assert exit_compute({FINAL: ExitCost(1.0, 1.0)}) == {}  # one exit: nothing to trade


def test_tradeoff_reads_exits_ensemble_and_thresholds_from_metric_names() -> None:
    metrics = {"val_acc": 0.9, "val_acc.exit1": 0.6, "val_acc.exit2": 0.8, "val_acc.ensemble": 0.91,
               "val_compute.exit2": 0.45, "val_compute.exit1": 0.2, "val_compute.final": 1.0,
               "val_compute.ensemble": 1.25, "val_acc.dynamic_t0.95": 0.89, "val_compute.dynamic_t0.95": 0.7,
               "val_acc.dynamic_t0.5": 0.7, "val_compute.dynamic_t0.5": 0.3,
               "best_val_acc.exit1": 0.99, "test_acc.exit1": 0.5, "test_compute.exit1": 0.2}
    t = tradeoff_from_metrics(metrics)
    assert t is not None
    assert [(p.label, p.accuracy, p.compute) for p in t.exits] == [
        ("exit1", 0.6, 0.2), ("exit2", 0.8, 0.45), (FINAL, 0.9, 1.0)]
    assert (t.ensemble.accuracy, t.ensemble.compute) == (0.91, 1.25)
    assert [(p.label, p.accuracy, p.compute) for p in t.dynamic] == [("0.5", 0.7, 0.3), ("0.95", 0.89, 0.7)]
    test = tradeoff_from_metrics(metrics, prefix="test")
    assert test is not None and [p.label for p in test.exits] == ["exit1"]


def test_single_exit_metrics_have_no_tradeoff() -> None:
    assert tradeoff_from_metrics({"val_acc": 0.9, "val_loss": 0.3}) is None


def test_evaluate_logs_relative_compute_of_every_exit_and_the_ensemble() -> None:
    method, split, loader = tiny_byot_eval(samples=12, batch_size=5)
    metrics = evaluate(method, loader, resolve_config({"eval.thresholds": [0.5, 0.9]}), torch.device("cpu"))
    costs = method.exit_costs(split.images)
    for name in ("exit1", "exit3", FINAL):
        assert metrics[f"val_compute.{name}"] == pytest.approx(costs[name].standalone)
    assert metrics["val_compute.ensemble"] == pytest.approx(costs[FINAL].cumulative)
    t = tradeoff_from_metrics(metrics)
    assert t is not None and [p.label for p in t.exits] == ["exit1", "exit3", FINAL]
    assert [p.label for p in t.dynamic] == ["0.5", "0.9"]
