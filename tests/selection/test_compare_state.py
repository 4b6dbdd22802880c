"""A comparison's saved state: it reads back as written, damaged files are one clear error,
and a method search that was stopped before Ray Tune saved anything starts again renamed."""

from __future__ import annotations

from pathlib import Path

import pytest

from skd_ray.errors import SkdError
from skd_ray.selection.comparison.method_spaces import method_space
from skd_ray.selection.comparison.record import (
    COMPARE_FILE,
    CompareState,
    MethodStep,
    comparison_folders,
    load_state,
    space_dict,
)
from skd_ray.selection.comparison.runner import resumable_search

RECIPE = Path(__file__).resolve().parents[2] / "search_spaces" / "compare.yaml"
NAME = "cmp_20250101-000000"


def saved(tmp_path: Path) -> tuple[CompareState, Path]:
    spaces = {m: method_space(RECIPE, m, {"train.epochs": 1}) for m in ("vanilla", "tfd")}
    state = CompareState(name=NAME, experiment="cmp", experiment_id="1", parent_run_id="abc",
                         tracking_uri=f"sqlite:///{tmp_path}/m.db", seeds=[0, 1], settings={"num_samples": 2},
                         spaces={m: space_dict(s) for m, s in spaces.items()},
                         steps=[MethodStep(m, f"{NAME}-{m}") for m in spaces])
    folder = tmp_path / NAME
    folder.mkdir()
    state.save(folder)
    return state, folder


def test_state_reads_back_as_written(tmp_path: Path) -> None:
    state, folder = saved(tmp_path)
    loaded = load_state(folder)
    assert loaded == state
    assert loaded.space("tfd") == method_space(RECIPE, "tfd", {"train.epochs": 1})
    (tmp_path / "cmpx_20250101-000000").mkdir()
    (tmp_path / "cmpx_20250101-000000" / COMPARE_FILE).write_text("{}")
    assert comparison_folders(str(tmp_path), "cmp") == [folder]


def test_damaged_state_is_one_clear_error(tmp_path: Path) -> None:
    _, folder = saved(tmp_path)
    (folder / COMPARE_FILE).write_text('{"name": 1')
    with pytest.raises(SkdError, match="cannot read the saved comparison state"):
        load_state(folder)


def test_search_stopped_before_tune_saved_starts_again_renamed(tmp_path: Path) -> None:
    state, folder = saved(tmp_path)
    step = state.steps[1]
    (folder / step.search_name).mkdir()
    (folder / step.search_name / "skd_search.json").write_text("{}")  # the driver died right after writing it
    assert resumable_search(state, step, folder) is None
    assert step.search_name == f"{NAME}-tfd-again" and not step.search_done
    assert load_state(folder).steps[1].search_name == step.search_name
