"""Reading a search back in a few queries however many trials it has: runs page by page, metric
histories of many runs at once, and a summary that needs no history when the trials report
their best epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skd_ray.results import store as store_module
from skd_ray.results.leaderboard import trial_rows
from skd_ray.results.names import Tags
from skd_ray.results.store import MlflowStore
from skd_ray.results.summary import summarise_search
from tests.helpers.counting import count_calls
from tests.helpers.fake_search import BEST, TRIALS, write_fake_search

SEARCH = "fake_20250101-000000"


def fake(tmp_path: Path, **kwargs: Any) -> tuple[MlflowStore, str, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = write_fake_search(uri, tmp_path / "artifacts", "fake", **kwargs)
    store = MlflowStore(uri)
    return store, store.experiment_id("fake") or "", parent


def test_search_all_reads_every_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, exp_id, parent = fake(tmp_path)
    monkeypatch.setattr(store_module, "SEARCH_PAGE", 2)
    calls = count_calls(store)
    runs = store.search_all([exp_id], f"tags.`{Tags.PARENT_RUN_ID}` = '{parent}'")
    assert sorted(r.data.tags[Tags.TRIAL_NAME] for r in runs) == sorted(t.name for t in TRIALS)
    assert calls.calls == ["search_runs"] * 3  # 2 + 2 + 1 runs
    assert len(trial_rows(store, exp_id, parent)) == len(TRIALS)


@pytest.mark.parametrize("legacy", [False, True], ids=["grouped names", "names before the grouping"])
def test_histories_of_many_runs_are_what_each_run_reads(tmp_path: Path, legacy: bool) -> None:
    store, exp_id, parent = fake(tmp_path, legacy_names=legacy)
    run_ids = [r.run_id for r in trial_rows(store, exp_id, parent)]
    calls = count_calls(store)
    together = store.metric_histories(run_ids, "val_acc")
    assert "get_metric_history" not in calls.calls  # one query, not one per run
    for run_id in run_ids:
        alone = store.metric_history(run_id, "val_acc")
        if not alone:  # the failed trial trained no epoch
            assert run_id not in together
            continue
        assert sorted((m.step, m.value, m.timestamp) for m in together[run_id]) == \
            sorted((m.step, m.value, m.timestamp) for m in alone)


def test_histories_on_a_store_without_bulk_reads_run_by_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's file store, kept for old setups
    uri = (tmp_path / "mlruns").as_uri()
    parent = write_fake_search(uri, tmp_path / "artifacts", "fake")
    store = MlflowStore(uri)
    exp_id = store.experiment_id("fake") or ""
    run_ids = [r.run_id for r in trial_rows(store, exp_id, parent)]
    together = store.metric_histories(run_ids, "val_acc")
    assert {run_id: [m.value for m in store.metric_history(run_id, "val_acc")] for run_id in run_ids
            if run_id in together} == {run_id: [m.value for m in h] for run_id, h in together.items()}
    assert len(together) == len([t for t in TRIALS if t.val_acc])


def log_best_epochs(store: MlflowStore, exp_id: str, parent: str) -> None:
    """What the engine reports with every epoch: the epoch of the best value so far."""
    from mlflow.entities import Metric

    for row in trial_rows(store, exp_id, parent):
        history = sorted(store.metric_history(row.run_id, "val_acc"), key=lambda m: m.step)
        if history:
            top = max(m.value for m in history)
            epoch = min(m.step for m in history if m.value == top)
            store.client.log_batch(row.run_id, metrics=[Metric("best/epoch", epoch, 0, history[-1].step)])


@pytest.mark.parametrize("reported", [True, False], ids=["best epoch reported", "logged before best_epoch"])
def test_summary_names_the_best_epoch_with_few_requests(tmp_path: Path, reported: bool) -> None:
    store, exp_id, parent = fake(tmp_path)
    if reported:
        log_best_epochs(store, exp_id, parent)
    calls = count_calls(store)
    summarise_search(store, exp_id, parent, SEARCH, 3, ["method.alpha", "optim.lr"])
    # One search and one request per trial for its name and description; histories only for
    # runs that did not report their best epoch, all in one query.
    assert calls.calls.count("search_runs") == 1
    assert calls.calls.count("log_batch") == len(TRIALS) + 1  # + the parent's summary
    assert "get_metric_history" not in calls.calls and "update_run" not in calls.calls
    best = next(r for r in trial_rows(store, exp_id, parent) if r.tags.get(Tags.TRIAL_ID) == BEST.name)
    assert best.best_epoch == (2 if reported else None)
    assert "at epoch 2 " in best.tags[Tags.NOTE]  # 0.90 at epoch 2, then 0.88
    assert best.tags[Tags.RUN_NAME].startswith(f"{BEST.name} byot ")


def test_a_second_summary_leaves_named_trials_alone(tmp_path: Path) -> None:
    store, exp_id, parent = fake(tmp_path)
    summarise_search(store, exp_id, parent, SEARCH, 3, ["method.alpha", "optim.lr"])
    calls = count_calls(store)
    summarise_search(store, exp_id, parent, SEARCH, 3, ["method.alpha", "optim.lr"])
    assert calls.calls.count("log_batch") == 1  # the parent's summary only
