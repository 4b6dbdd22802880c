"""The Optuna searcher and Tune scheduler a search request asks for (built, not run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skd_ray.search.driver import build_search_algorithm, tpe_startup_trials
from skd_ray.search.request import SearchRequest
from skd_ray.search.space import load_space

REPO = Path(__file__).resolve().parents[2]


def request(tmp_path: Path, **overrides) -> SearchRequest:
    space = load_space(REPO / "search_spaces" / "vanilla.yaml")
    return SearchRequest(space=space, storage=str(tmp_path), tracking_uri="sqlite:///x.db", experiment="e",
                         search_name="e_1", **overrides)


@pytest.mark.parametrize(("num_samples", "expected"), [(2, 3), (8, 3), (12, 3), (20, 5), (40, 10), (500, 10)])
def test_tpe_models_the_space_after_a_quarter_of_the_budget(num_samples: int, expected: int) -> None:
    assert tpe_startup_trials(num_samples) == expected


def test_default_search_is_tpe_from_the_defaults_with_asha(tmp_path: Path) -> None:
    import optuna
    from ray.tune.schedulers import ASHAScheduler

    req = request(tmp_path, num_samples=20)
    searcher, scheduler = build_search_algorithm(req, "e_1", tmp_path, max_epochs=6)
    assert isinstance(searcher._sampler, optuna.samplers.TPESampler)
    assert searcher._sampler._n_startup_trials == 5
    assert searcher._points_to_evaluate == [req.space.default_point()]
    assert isinstance(scheduler, ASHAScheduler)


def test_baseline_search_is_random_without_defaults_or_early_stopping(tmp_path: Path) -> None:
    import optuna

    req = request(tmp_path, sampler="random", early_stopping=False, start_from_defaults=False)
    searcher, scheduler = build_search_algorithm(req, "e_1", tmp_path, max_epochs=6)
    assert isinstance(searcher._sampler, optuna.samplers.RandomSampler)
    assert not searcher._points_to_evaluate
    assert scheduler is None
