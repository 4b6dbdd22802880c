"""A search logs grouped metric names and its constants once on the parent run; searches
logged before that (flat names, every param on every trial, the early-exit sweep as metrics)
must read back exactly the same: leaderboard, best configuration, curves and trade-off."""

from __future__ import annotations

from pathlib import Path

import pytest

from skd_ray.results.leaderboard import best_config, find_search_run, format_leaderboard, trial_rows
from skd_ray.results.search_data import load_search_data
from skd_ray.results.store import MlflowStore
from tests.helpers.fake_search import BEST, write_fake_search


def written(tmp_path: Path, legacy: bool) -> tuple[str, str]:
    uri = f"sqlite:///{tmp_path / ('old' if legacy else 'new')}.db"
    return uri, write_fake_search(uri, tmp_path / "artifacts", "fake", legacy_names=legacy)


@pytest.fixture
def both(tmp_path: Path) -> dict[bool, tuple[str, str]]:
    return {legacy: written(tmp_path, legacy) for legacy in (False, True)}


def test_a_trial_logs_only_what_varies_and_the_parent_the_rest(both: dict[bool, tuple[str, str]]) -> None:
    uri, parent_id = both[False]
    c = MlflowStore(uri).client
    parent = c.get_run(parent_id)
    assert parent.data.params["config.train.epochs"] == "3" and parent.data.params["config.data.name"] == "digits"
    exp_id, _ = find_search_run(MlflowStore(uri), "fake")
    for row in trial_rows(MlflowStore(uri), exp_id, parent_id):
        logged = c.get_run(row.run_id).data.params
        assert "train.epochs" not in logged and "data.name" not in logged and "optim.lr" in logged
        assert row.params["train.epochs"] == "3" and row.params["data.name"] == "digits"  # read back whole
    best_run = next(r.run_id for r in trial_rows(MlflowStore(uri), exp_id, parent_id) if r.name == BEST.name)
    metrics = c.get_run(best_run).data.metrics
    assert {"val/acc", "best/val/acc", "train/loss", "early_exit/val_acc.t0.9"} <= set(metrics)
    assert not any(k.startswith("val_acc") or "t0.5" in k for k in metrics)  # sweep: a table, not 16 charts


def test_old_and_new_searches_read_the_same(both: dict[bool, tuple[str, str]]) -> None:
    seen = {}
    for legacy, (uri, parent_id) in both.items():
        exp_id, _ = find_search_run(MlflowStore(uri), "fake")
        rows = trial_rows(MlflowStore(uri), exp_id, parent_id)
        data = load_search_data(MlflowStore(uri), "fake", parent_id, top_n=5)
        tradeoff = data.tradeoff
        assert tradeoff is not None and tradeoff.trial == BEST.name and tradeoff.epoch == 2
        seen[legacy] = (
            [(r.name, r.status, r.epochs, str(r.best_val_acc), r.exit_acc, r.params) for r in rows],
            best_config(rows), format_leaderboard(rows), data.curves, tradeoff.tradeoff,
        )
    for new, old in zip(seen[False], seen[True]):
        assert new == old
    assert seen[False][1]["method"] == "byot" and seen[False][1]["train.epochs"] == 3
