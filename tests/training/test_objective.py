"""The objective (metric and direction) every ranking asks: hand-checked orders and values."""

import math

import pytest

from skd_ray.errors import ConfigError, SkdError
from skd_ray.results.leaderboard import TrialRow, rank_rows, selectable
from skd_ray.results.statuses import Status, mlflow_run_status, trial_outcome
from skd_ray.training.objective import Objective
from skd_ray.training.resolve import resolve_config


def test_max_and_min_improve_in_their_own_direction() -> None:
    acc, loss = Objective(), Objective("val_loss", "min")
    assert acc.best_key == "best_val_acc" and loss.best_key == "best_val_loss"
    assert acc.improves(0.8, 0.7) and not acc.improves(0.7, 0.8) and not acc.improves(0.7, 0.7)
    assert loss.improves(0.3, 0.5) and not loss.improves(0.5, 0.3)
    assert loss.improves(0.9, None) and loss.improves(0.9, math.nan) and not loss.improves(math.nan, 0.9)
    assert loss.better_of(0.4, 0.2) == 0.2 and loss.better_of(0.1, 0.2) == 0.1


def test_best_prefix_names_the_same_objective() -> None:
    assert Objective("best_val_acc") == Objective("val_acc")


def test_a_mode_that_is_neither_max_nor_min_is_refused() -> None:
    with pytest.raises(ConfigError, match="neither max nor min"):
        Objective("val_loss", "down")


def test_rank_puts_the_best_first_and_nan_last() -> None:
    values = [0.4, math.nan, 0.1, 0.9]
    assert Objective("val_loss", "min").rank(values, lambda v: v)[:3] == [0.1, 0.4, 0.9]
    assert Objective().rank(values, lambda v: v)[:3] == [0.9, 0.4, 0.1]
    assert math.isnan(Objective().rank(values, lambda v: v)[-1])


def row(name: str, acc: float, loss: float, start: int, status: str = "completed") -> TrialRow:
    return TrialRow(name, f"run-{name}", status, 3, acc, {}, {}, start, Objective("val_loss", "min"), loss)


def test_rows_of_a_loss_search_rank_by_the_loss_not_the_accuracy() -> None:
    # t1 has the best accuracy, t2 the lowest loss: a val_loss search chooses t2.
    rows = [row("t1", 0.95, 0.30, 1), row("t2", 0.90, 0.20, 2), row("t3", 0.50, math.nan, 3, "failed"),
            row("t4", 0.91, 0.20, 4)]
    assert [r.name for r in rank_rows(rows)] == ["t2", "t4", "t1", "t3"]  # the tie goes to the earlier trial
    assert [r.name for r in selectable(rows)] == ["t2", "t4", "t1"]


def test_a_row_without_an_objective_is_ranked_by_accuracy_as_before() -> None:
    old = TrialRow("t1", "r1", "completed", 3, 0.8, {}, {})
    assert old.objective == Objective() and old.value == 0.8


def test_the_objective_travels_in_the_config() -> None:
    cfg = resolve_config({"eval.objective": "val_loss", "eval.objective_mode": "min"})
    assert Objective(cfg.eval.objective, cfg.eval.objective_mode) == Objective("val_loss", "min")
    assert Objective.from_flat({}) == Objective()
    with pytest.raises(SkdError, match="eval.objective_mode"):
        resolve_config({"eval.objective_mode": "lowest"})


def test_one_rule_names_how_a_trial_ended() -> None:
    assert trial_outcome(True, 3, 3) == Status.FAILED
    assert trial_outcome(False, 3, 3) == Status.COMPLETED
    assert trial_outcome(False, 1, 3) == Status.EARLY_STOPPED
    assert trial_outcome(False, 0, 3) == Status.EARLY_STOPPED  # ended before its first report: not a full trial
    assert (mlflow_run_status("failed"), mlflow_run_status("interrupted"), mlflow_run_status("early_stopped")) == \
        ("FAILED", "KILLED", "FINISHED")
    assert Status.COMPLETED == "completed" and f"{Status.EARLY_STOPPED}" == "early_stopped"
