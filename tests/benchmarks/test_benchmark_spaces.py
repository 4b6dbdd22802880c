"""The search-efficiency benchmark's spaces are valid skd-ray spaces: every key, range end and
choice resolves to a training config (a typo would otherwise surface minutes into a run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from skd_ray.search.space.definition import load_space

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "search_efficiency.py"


def load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("search_efficiency_benchmark", BENCHMARK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["narrow", "wide"])
def test_benchmark_space_loads_and_searches_what_it_names(name: str, tmp_path: Path) -> None:
    bench = load_benchmark()
    space = load_space(bench.write_space(tmp_path / "space.yaml", name, "fashion-mnist", 6, 2000, 0.1))
    searched = {p.key for p in space.params}
    assert searched == set(bench.SPACES[name])
    assert len(searched) >= 4
    assert not searched & set(space.fixed), "a searched key is also fixed"
    assert space.fixed["data.val_fraction"] == 0.1 and space.fixed["train.epochs"] == 6


def test_wide_space_contains_the_narrow_one() -> None:
    spaces = load_benchmark().SPACES
    for key, narrow in spaces["narrow"].items():
        wide = spaces["wide"][key]
        assert wide["low"] <= narrow["low"] and wide["high"] >= narrow["high"], key
