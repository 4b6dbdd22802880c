"""`--resume` rebuilds a search from what it saved beside its results (no Ray needed)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from skd_ray.errors import SkdError
from skd_ray.search.request import SearchRequest
from skd_ray.search.space.definition import load_space
from skd_ray.search.state.saved import STATE_FILE, saved_request, write_state

REPO = Path(__file__).resolve().parents[2]


def test_a_saved_search_comes_back_with_every_setting(tmp_path: Path) -> None:
    space = load_space(REPO / "search_spaces" / "all.yaml", {"train.epochs": 3})
    req = SearchRequest(space=space, storage=str(tmp_path), tracking_uri="sqlite:///x.db", experiment="exp",
                        search_name="exp_1", num_samples=5, workers=2, cpus_per_worker=0.5, gpus_per_worker=0.25,
                        max_concurrent=3, seed=7, grace_period=1, sampler="random", early_stopping=False,
                        start_from_defaults=False, objectives=[("val_acc", "max"), ("val_compute", "min")],
                        extra_tags={"a": "b"})
    (tmp_path / "exp_1").mkdir()
    write_state(tmp_path / "exp_1", "12", "run-abc", {f.name: getattr(req, f.name) for f in fields(req)}, space)
    back = saved_request(str(tmp_path), "exp_1")
    assert back.resume and back.space == space  # params, conditions and the --set override
    assert back.space.fixed["train.epochs"] == 3
    for f in fields(req):
        if f.name not in ("resume", "callbacks", "space"):
            assert getattr(back, f.name) == getattr(req, f.name), f.name


def test_a_missing_or_unreadable_state_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SkdError, match="cannot read the saved search state"):
        saved_request(str(tmp_path), "nothing")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / STATE_FILE).write_text("{not json")
    with pytest.raises(SkdError, match="cannot read the saved search state"):
        saved_request(str(tmp_path), "broken")


def test_a_state_an_editor_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    space = load_space(REPO / "search_spaces" / "byot.yaml", {"train.epochs": 1})
    req = SearchRequest(space=space, storage=str(tmp_path), tracking_uri="sqlite:///x.db", experiment="exp",
                        search_name="exp_1", num_samples=2)
    (tmp_path / "exp_1").mkdir()
    write_state(tmp_path / "exp_1", "12", "run-abc", {f.name: getattr(req, f.name) for f in fields(req)}, space)
    state = tmp_path / "exp_1" / STATE_FILE
    state.write_bytes(b"\xef\xbb\xbf" + state.read_bytes())
    assert saved_request(str(tmp_path), "exp_1").num_samples == 2
