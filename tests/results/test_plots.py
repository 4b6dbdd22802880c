"""Plots of a search drawn from in-memory search data: files are written, and a plot with
nothing to show is skipped with its reason instead of failing the others."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from skd_ray.results import importance, plots
from skd_ray.results.importance import ImportanceUnavailable, param_importances
from skd_ray.results.leaderboard import TrialRow
from skd_ray.results.plots import PLOTS, draw_search_plots
from skd_ray.results.search_data import SearchData, TradeoffOfTrial
from skd_ray.training.early_exit import tradeoff_from_metrics
from tests.helpers.fake_search import TRIALS, FakeTrial, epoch_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def importances_from_two_trials(monkeypatch: pytest.MonkeyPatch) -> None:
    """These small fake searches exercise every plot; a real search needs importance.MIN_TRIALS
    finished trials before its importance plot is drawn (tested below)."""
    monkeypatch.setattr(importance, "MIN_TRIALS", 2)


def row(trial: FakeTrial, start: int) -> TrialRow:
    """The leaderboard row MLflow would give back for `trial` (params logged as JSON)."""
    params = {"method": trial.method, "optim.lr": json.dumps(trial.lr)}
    if trial.alpha is not None:
        params["method.alpha"] = json.dumps(trial.alpha)
    best = max(trial.val_acc) if trial.val_acc else float("nan")
    return TrialRow(trial.name, f"run{start}", trial.status, len(trial.val_acc), best, {}, params, start)


def search_data(trials: tuple[FakeTrial, ...] = TRIALS) -> SearchData:
    rows = sorted((row(t, i) for i, t in enumerate(trials)),  # leaderboard order, failed (NaN) last
                  key=lambda r: (r.best_val_acc == r.best_val_acc, r.best_val_acc), reverse=True)
    data = SearchData("fake", "fake_search", "parent", "completed", {"search.num_samples": str(len(trials))}, {},
                      rows)
    data.curves = {t.name: list(enumerate(t.val_acc, 1)) for t in trials if t.val_acc}
    byot = [t for t in trials if t.method == "byot" and t.val_acc]
    if byot:
        tradeoff = tradeoff_from_metrics(epoch_metrics(byot[0], 2))
        assert tradeoff is not None
        data.tradeoff = TradeoffOfTrial(byot[0].name, 2, tradeoff)
    return data


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_every_plot_of_a_cross_method_search_is_drawn(tmp_path: Path) -> None:
    result = draw_search_plots(search_data(), tmp_path)
    assert result.skipped == {}
    assert set(result.files) == set(PLOTS)
    for name, path in result.files.items():
        assert path == tmp_path / f"{name}.png"
        assert_png(path)


def test_a_single_trial_skips_what_needs_several_and_says_why(tmp_path: Path) -> None:
    result = draw_search_plots(search_data(TRIALS[:1]), tmp_path)
    assert "at least 2 finished trials, the search has 1" in result.skipped["param_importances"]
    assert "at least 2 finished trials, the search has 1" in result.skipped["parallel_coordinates"]
    assert "at least 2 methods, the search has 1 (byot)" in result.skipped["method_comparison"]
    assert set(result.files) == {"optimization_history", "learning_curves", "early_exit_tradeoff"}
    for path in result.files.values():
        assert_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.png" for n in result.files)


def test_one_searched_parameter_has_no_importance_plot(tmp_path: Path) -> None:
    trials = (FakeTrial("a", "vanilla", 0.1, (0.8,)), FakeTrial("b", "vanilla", 0.2, (0.9,)))
    result = draw_search_plots(search_data(trials), tmp_path)
    assert result.skipped["param_importances"] == \
        "needs at least 2 parameters that vary across every finished trial, the search has 1 (optim.lr)"
    assert "parallel_coordinates" in result.files  # one axis is still worth a look


def test_single_exit_methods_have_no_early_exit_plot(tmp_path: Path) -> None:
    trials = tuple(t for t in TRIALS if t.method != "byot")
    result = draw_search_plots(search_data(trials), tmp_path)
    assert result.skipped["early_exit_tradeoff"] == "no finished trial has early exits (single-exit methods only)"


def test_a_plot_that_fails_does_not_cost_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: SearchData) -> None:
        raise RuntimeError("font cache is broken")

    monkeypatch.setitem(plots.PLOTS, "learning_curves", broken)
    result = draw_search_plots(search_data(), tmp_path)
    assert result.skipped == {"learning_curves": "failed to draw: RuntimeError: font cache is broken"}
    assert len(result.files) == len(PLOTS) - 1


def test_importances_rank_the_parameter_that_drives_accuracy_first() -> None:
    rng = random.Random(0)
    rows = []
    for i in range(16):
        lr, alpha = rng.uniform(0.01, 0.2), rng.uniform(0.1, 0.9)
        params = {"optim.lr": json.dumps(lr), "method.alpha": json.dumps(alpha), "method": rng.choice(["a", "b"])}
        rows.append(TrialRow(f"t{i}", f"r{i}", "completed", 3, 0.5 + 2 * lr + 0.001 * alpha, {}, params, i))
    rows.append(TrialRow("failed", "rf", "failed", 0, float("nan"), {}, {"optim.lr": "9.0"}, 99))
    found = param_importances(rows)
    assert list(found)[0] == "optim.lr"
    assert found["optim.lr"] > 0.8
    assert sum(found.values()) == pytest.approx(1.0)


def test_importances_leave_out_conditional_parameters() -> None:
    rows = [row(t, i) for i, t in enumerate(TRIALS)]
    assert set(param_importances(rows)) == {"method", "optim.lr"}  # method.alpha exists for byot only
    with pytest.raises(ImportanceUnavailable, match="the search has 0"):
        param_importances([])


def test_few_trials_get_no_importance_plot_and_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importance, "MIN_TRIALS", 10)
    result = draw_search_plots(search_data(), tmp_path)
    assert result.skipped == {"param_importances": "needs at least 10 finished trials, the search has 4 "
                                                   "(with fewer, fANOVA's ranking is mostly noise)"}


def test_parallel_axes_follow_the_space_and_carry_3_to_5_ticks() -> None:
    space_log = plots._Axis.of("optim.lr", [0.011, 0.02, 0.19], log=True)
    assert space_log.log and 3 <= len(space_log.ticks()) <= 5
    linear = plots._Axis.of("method.alpha", [0.1, 0.5, 0.9], log=False)
    assert not linear.log and 3 <= len(linear.ticks()) <= 5
    assert not plots._Axis.of("x", [1.0, 50.0], log=False).log  # wide but linear in the space
    assert plots._Axis.of("x", [1.0, 50.0]).log  # an older search: judged by the observed range


def test_learning_curves_show_every_trial(tmp_path: Path) -> None:
    data = search_data()
    fig = plots.learning_curves(data)
    assert fig.axes[0].get_title() == f"Learning curves of all {len(data.curves)} trials"
