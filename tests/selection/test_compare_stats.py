"""The comparison's statistics on fixed numbers, against values worked out by hand, and the
pieces of a comparison that need no Ray: method names, the per-method spaces, the table."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from skd_ray.errors import SkdError
from skd_ray.selection.comparison.method_spaces import method_space, parse_methods
from skd_ray.selection.comparison.stats import paired_test, t_interval, t_quantile, t_two_sided_p
from skd_ray.selection.comparison.table import (
    comparison_rows,
    format_csv,
    format_markdown,
    format_markdown_brief,
    format_text,
)

RECIPE = Path(__file__).resolve().parents[2] / "search_spaces" / "compare.yaml"


def test_t_distribution_matches_closed_forms() -> None:
    # 1 dof is Cauchy: the 0.975 quantile is tan(0.475 pi) = 12.7062...
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-9)
    # 2 dof: F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so the 0.975 quantile solves t / sqrt(2 + t^2) = 0.95:
    # t = 0.95 sqrt(2 / (1 - 0.95^2)) = 4.30265...
    assert t_quantile(0.975, 2) == pytest.approx(0.95 * math.sqrt(2 / (1 - 0.95**2)), rel=1e-9)
    # and the two-sided tail P(|T| >= 8) = 1 - 8 / sqrt(66) = 0.015268...
    assert t_two_sided_p(8.0, 2) == pytest.approx(1 - 8 / math.sqrt(66), rel=1e-9)
    assert t_two_sided_p(-8.0, 2) == pytest.approx(1 - 8 / math.sqrt(66), rel=1e-9)


def test_interval_and_paired_test_by_hand() -> None:
    vanilla = {0: 0.90, 1: 0.92, 2: 0.94}
    method = {0: 0.93, 1: 0.94, 2: 0.97}
    q = 0.95 * math.sqrt(2 / (1 - 0.95**2))  # t_{0.975, 2}
    v = t_interval(list(vanilla.values()))
    # mean 0.92, s = sqrt((0.02^2 + 0 + 0.02^2) / 2) = 0.02, half width q * 0.02 / sqrt(3)
    assert (v.mean, v.std, v.n) == (pytest.approx(0.92), pytest.approx(0.02), 3)
    assert v.half_width == pytest.approx(q * 0.02 / math.sqrt(3))
    assert v.low == pytest.approx(0.92 - q * 0.02 / math.sqrt(3))
    test = paired_test(method, vanilla)
    # differences 0.03, 0.02, 0.03: mean 0.08/3, s = sqrt((1/3^2 + 2/3^2 + 1/3^2... ) computed below
    d = [0.03, 0.02, 0.03]
    mean = sum(d) / 3  # 0.026667
    s = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)  # 0.0057735 = 0.01 / sqrt(3)
    assert s == pytest.approx(0.01 / math.sqrt(3))
    assert test.diff.mean == pytest.approx(mean)
    assert test.diff.std == pytest.approx(s)
    # t = mean / (s / sqrt 3) = (0.08/3) / (0.01/3) = 8
    assert test.t == pytest.approx(8.0)
    assert test.p == pytest.approx(1 - 8 / math.sqrt(66))
    assert test.diff.half_width == pytest.approx(q * s / math.sqrt(3))
    assert test.seeds == (0, 1, 2)


def test_paired_test_uses_common_seeds_and_degenerate_cases() -> None:
    assert paired_test({0: 0.9, 1: 0.8, 5: 0.1}, {0: 0.8, 1: 0.7}).seeds == (0, 1)
    same = paired_test({0: 0.75, 1: 0.625}, {0: 0.5, 1: 0.375})  # identical differences (exact in binary)
    assert same.p == 0.0 and same.t == math.inf
    assert paired_test({0: 0.9, 1: 0.8}, {0: 0.9, 1: 0.8}).p == 1.0
    one = paired_test({0: 0.9}, {0: 0.8})
    assert math.isnan(one.p) and math.isnan(one.diff.low) and one.diff.mean == pytest.approx(0.1)
    assert math.isnan(t_interval([]).mean)


def test_method_names_are_checked_and_vanilla_comes_first() -> None:
    assert parse_methods("tfd,byot") == ["vanilla", "tfd", "byot"]
    assert parse_methods("byot, vanilla,byot") == ["vanilla", "byot"]
    with pytest.raises(SkdError, match="unknown method 'bogus'"):
        parse_methods("vanilla,bogus")
    with pytest.raises(SkdError, match="at least one method"):
        parse_methods("vanilla")


def test_every_method_searches_the_same_recipe_plus_its_own_parameters() -> None:
    spaces = {m: method_space(RECIPE, m, {"train.epochs": 3}) for m in ("vanilla", "byot", "tfd")}
    shared = {"optim.lr", "optim.weight_decay"}
    for method, space in spaces.items():
        keys = {p.key for p in space.params}
        assert shared <= keys
        assert all(k in shared or k.startswith("method.") for k in keys)
        assert space.fixed["method"] == method and space.fixed["train.epochs"] == 3
        assert space.fixed["data.val_fraction"] == 0.2  # byot.yaml's own 0.5 is not used
    lrs = {m: next(p for p in s.params if p.key == "optim.lr") for m, s in spaces.items()}
    assert len({(p.low, p.high, p.log, p.default) for p in lrs.values()}) == 1
    assert "method.alpha" in {p.key for p in spaces["byot"].params}
    assert "method.label_smoothing" in {p.key for p in spaces["vanilla"].params}


def test_table_reports_intervals_differences_and_ratios() -> None:
    results = [
        {"method": "vanilla", "best_trial": "t01", "search_val_acc": 0.95, "seeds": [0, 1, 2],
         "test_acc": {"0": 0.90, "1": 0.92, "2": 0.94}, "time_epoch_s": 2.0, "macs": 1.0e6,
         "params": {"optim.lr": 0.05}},
        {"method": "byot", "best_trial": "t03", "search_val_acc": 0.96, "seeds": [0, 1, 2],
         "test_acc": {"0": 0.93, "1": 0.94, "2": 0.97}, "time_epoch_s": 3.0, "macs": 1.0e6,
         "params": {"optim.lr": 0.1, "method.alpha": 0.3}},
    ]
    rows = comparison_rows(results)
    assert rows[0].vs_reference is None
    assert rows[1].vs_reference is not None and rows[1].vs_reference.t == pytest.approx(8.0)
    assert rows[1].time_ratio == pytest.approx(1.5) and rows[1].macs_ratio == pytest.approx(1.0)
    text = format_text(rows)
    assert "0.9200 ± 0.0200" in text and "+0.0267" in text and "0.0153" in text and "(1.50×)" in text
    assert "alpha=0.3" in text
    assert format_markdown(rows).startswith("| method |")
    assert format_markdown_brief(rows).splitlines()[0].count("|") == 6
    csv_lines = format_csv(rows).strip().splitlines()
    assert len(csv_lines) == 3 and csv_lines[2].startswith("byot,t03,0.96,3,")
