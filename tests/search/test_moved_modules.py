"""Searches saved before `skd_ray.search` was split into subpackages pickled the old module
paths; unpickling them must find the classes and functions where they live now."""

import importlib
import pickle

import pytest

import skd_ray.search  # noqa: F401  (installs the old paths)
from skd_ray.search.moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_path_imports_as_the_module_it_became(old: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_a_pickle_naming_the_old_path_loads() -> None:
    from skd_ray.search.tuning.optuna_study import SkdOptunaSearch

    data = pickle.dumps(SkdOptunaSearch, protocol=0)
    assert b"skd_ray.search.tuning.optuna_study" in data
    old = data.replace(b"skd_ray.search.tuning.optuna_study", b"skd_ray.search.optuna_study")
    assert pickle.loads(old) is SkdOptunaSearch


def test_unknown_names_still_fail() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("skd_ray.search.no_such_module")
