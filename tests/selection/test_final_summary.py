"""Final-evaluation bookkeeping on hand-made trials: top-K selection, seeds, config changes,
mean ± std aggregation and the printed table (no Ray, no MLflow)."""

from __future__ import annotations

import json
import math

import pytest

from skd_ray.errors import SkdError
from skd_ray.results.leaderboard import TrialRow
from skd_ray.selection.final_summary import (
    final_config,
    final_seeds,
    format_final_table,
    mean_std,
    select_top_configs,
    shared_items,
    summarize,
)
from skd_ray.training.resolve import resolve_config


def row(name: str, acc: float, status: str = "completed", **params: object) -> TrialRow:
    logged = {"method": "byot", "train.seed": "0", "train.epochs": "3",
              **{k.replace("__", "."): v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}}
    return TrialRow(name, f"run-{name}", status, 3, acc, {}, logged)


def test_top_k_orders_by_validation_accuracy_and_skips_unfinished_trials() -> None:
    rows = [row("a", 0.90, method__alpha=0.1), row("b", 0.97, "failed", method__alpha=0.2),
            row("c", 0.95, "early_stopped", method__alpha=0.3), row("d", float("nan"), method__alpha=0.4),
            row("e", 0.96, "running", method__alpha=0.5), row("f", 0.93, method__alpha=0.6)]
    assert [r.name for r in select_top_configs(rows, 2)] == ["c", "f"]
    assert [r.name for r in select_top_configs(rows, 10)] == ["c", "f", "a"]  # fewer than K exist


def test_top_k_counts_a_repeated_configuration_once_whatever_its_seed() -> None:
    rows = [row("a", 0.91, method__alpha=0.1), row("b", 0.95, method__alpha=0.1),
            row("c", 0.93, method__alpha=0.2)]
    rows[0].params["train.seed"] = "7"
    assert [r.name for r in select_top_configs(rows, 2)] == ["b", "c"]


def test_top_k_needs_a_finished_trial_and_a_positive_k() -> None:
    with pytest.raises(SkdError, match="no finished trial"):
        select_top_configs([row("a", 0.9, "failed")], 1)
    with pytest.raises(SkdError, match="--final-top must be >= 1"):
        select_top_configs([row("a", 0.9)], 0)


def test_seeds_start_at_the_given_seed() -> None:
    assert final_seeds(3, None) == [0, 1, 2]
    assert final_seeds(2, 5) == [5, 6]
    with pytest.raises(SkdError, match="--seeds"):
        final_seeds(0, None)


def test_final_config_trains_on_validation_and_scores_test_without_the_search_seed() -> None:
    params = {"method": "byot", "method.exits": "[1, 3]", "optim.lr": "0.05", "data.dir": "null",
              "train.seed": "4", "data.name": "digits"}
    flat = final_config(params)
    assert flat == {"method": "byot", "method.exits": [1, 3], "optim.lr": 0.05, "data.dir": None,
                    "data.name": "digits", "data.train_on_validation": True, "eval.test_at_end": True}
    cfg = resolve_config({**flat, "train.seed": 1})
    assert cfg.data.train_on_validation and cfg.eval.test_at_end and cfg.method_params.exits == [1, 3]


def test_shared_items_are_the_values_every_config_has() -> None:
    assert shared_items([{"a": 1, "b": 2, "c": [1]}, {"a": 1, "b": 3, "c": [1]}]) == {"a": 1, "c": [1]}
    assert shared_items([]) == {}


def test_mean_and_sample_std_by_hand() -> None:
    mean, std = mean_std([0.90, 0.92, 0.97])
    assert mean == pytest.approx(0.93)
    # deviations -0.03, -0.01, 0.04: squares sum 0.0026, / (n-1) = 0.0013
    assert std == pytest.approx(math.sqrt(0.0013))
    assert mean_std([0.8])[0] == 0.8 and math.isnan(mean_std([0.8])[1])
    assert all(math.isnan(v) for v in mean_std([]))


def test_summaries_group_seeds_by_rank_and_leave_failed_runs_out() -> None:
    chosen = [row("best", 0.97, method__alpha=0.1), row("second", 0.95, method__alpha=0.7)]
    results = [(1, 0, 0.90), (1, 1, 0.94), (2, 0, 0.80), (2, 1, None), (1, 2, float("nan"))]
    first, second = summarize(chosen, [0, 1, 2], results)
    assert (first.rank, first.source.name, first.test_acc) == (1, "best", {0: 0.90, 1: 0.94})
    assert first.mean == pytest.approx(0.92) and first.std == pytest.approx(math.sqrt(0.0008))
    assert second.test_acc == {0: 0.80} and math.isnan(second.std)
    record = first.as_dict()
    assert record["finished"] == 2 and record["seeds"] == 3 and record["params"]["method.alpha"] == 0.1
    table = format_final_table([first, second]).splitlines()
    assert table[0].split()[:2] == ["rank", "source"] and "alpha" in table[0]
    assert "0.9200 ± 0.0283" in table[1] and "2/3" in table[1] and "0.1" in table[1]
    assert "0.8000 (1 run)" in table[2] and "1/3" in table[2]
