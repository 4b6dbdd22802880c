"""One rule for which trials count: the report's best configuration, --export-best and
--final-top pick by `TrialRow.is_selectable`; plots and importances show `is_scored` trials."""

from __future__ import annotations

import math

from skd_ray.results.leaderboard import TrialRow, best_config, selectable
from skd_ray.selection.final_summary import select_top_configs


def row(name: str, status: str, acc: float, lr: str) -> TrialRow:
    return TrialRow(name, f"run-{name}", status, 3, acc, {}, {"optim.lr": lr, "train.seed": "0"})


ROWS = [row("running", "running", 0.99, "0.5"), row("failed", "failed", 0.98, "0.4"),
        row("interrupted", "interrupted", 0.97, "0.3"), row("stopped", "early_stopped", 0.90, "0.2"),
        row("done", "completed", 0.80, "0.1"), row("nan", "completed", math.nan, "0.05")]


def test_only_finished_trials_with_an_accuracy_are_selectable() -> None:
    assert [r.name for r in selectable(ROWS)] == ["stopped", "done"]
    assert [r.name for r in ROWS if r.is_scored] == ["running", "interrupted", "stopped", "done"]


def test_report_export_and_final_evaluation_pick_the_same_best_trial() -> None:
    assert best_config(ROWS)["optim.lr"] == 0.2
    assert select_top_configs(ROWS, 1)[0].name == "stopped"
    assert [r.name for r in select_top_configs(ROWS, 5)] == ["stopped", "done"]
