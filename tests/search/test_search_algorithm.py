"""The Optuna searcher and Tune scheduler a search request asks for (built, not run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skd_ray.search.request import SearchRequest
from skd_ray.search.space.definition import load_space
from skd_ray.search.tuning.tuner import build_search_algorithm, tpe_startup_trials

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


def test_every_search_algorithm_pickles_as_ray_tune_saves_it(tmp_path: Path) -> None:
    """Tune pickles the searcher (with its Optuna sampler and study) when it saves a search;
    Optuna 5.1's NSGA-II sampler holds a thread lock that pickle refuses."""
    import threading

    import optuna
    from ray import cloudpickle

    kinds = ({}, {"sampler": "random"}, {"objectives": [("val_acc", "max"), ("train_loss", "min")]})
    for i, overrides in enumerate(kinds):
        folder = tmp_path / str(i)
        folder.mkdir()
        searcher, _ = build_search_algorithm(request(folder, num_samples=4, **overrides), "e_1", folder, max_epochs=3)
        copy = cloudpickle.loads(cloudpickle.dumps(searcher))
        assert type(copy._sampler) is type(searcher._sampler)
    assert isinstance(copy._sampler, optuna.samplers.NSGAIISampler)
    # The copy has working locks of its own and still samples.
    locks = [v for v in vars(copy._sampler).values() if isinstance(v, type(threading.Lock()))]
    assert locks and all(lock.acquire(blocking=False) and lock.release() is None for lock in locks)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=copy._sampler)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=3)
    assert len(study.trials) == 3
