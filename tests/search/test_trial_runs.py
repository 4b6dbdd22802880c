"""The driver finds a trial's MLflow run in the trial's results (the trial names it in every
report), so its callbacks and searcher make no search of the store per trial."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from skd_ray.results.names import Tags
from skd_ray.results.store import MlflowStore
from skd_ray.results.tracking import SearchRuns, TrialTracker
from skd_ray.search.execution.job import RUN_ID_RESULT
from skd_ray.search.execution.sessions import with_run_id
from skd_ray.search.tuning import numbering
from skd_ray.search.tuning.answer import TrialRunLabels
from skd_ray.search.tuning.callbacks import ChildRunStatus, trial_run_id
from tests.helpers.counting import count_calls


def search(tmp_path: Path) -> tuple[SearchRuns, str]:
    runs = SearchRuns.start(MlflowStore(f"sqlite:///{tmp_path / 'mlflow.db'}"), "runs", "runs_1", {}, {})
    run_id = runs.start_trial("abc_00001", "trial", {"method": "vanilla", "optim.lr": 0.1},
                              {Tags.METHOD: "vanilla"})
    return runs, run_id


def test_a_trial_names_its_run_in_what_it_reports(tmp_path: Path) -> None:
    assert with_run_id({"epoch": 1}, TrialTracker(MlflowStore("sqlite:///x.db"), "r1")) == \
        {"epoch": 1, RUN_ID_RESULT: "r1"}
    assert with_run_id({"epoch": 1}, None) == {"epoch": 1}  # a rank that does not log


def test_the_run_comes_from_the_result_else_from_the_store(tmp_path: Path) -> None:
    runs, run_id = search(tmp_path)
    calls = count_calls(runs.store)
    assert trial_run_id(runs, "abc_00001", {RUN_ID_RESULT: run_id}) == run_id
    assert calls.calls == []
    # A trial that failed before its first result: found by its Ray trial id.
    assert trial_run_id(runs, "abc_00001", {}) == run_id and calls.calls == ["search_runs"]


def test_callbacks_close_and_name_the_run_without_searching(tmp_path: Path) -> None:
    runs, run_id = search(tmp_path)
    numbering.reset()
    numbering.register("abc_00001", 7)
    calls = count_calls(runs.store)
    result: dict[str, Any] = {"epoch": 1, RUN_ID_RESULT: run_id}
    trial = SimpleNamespace(trial_id="abc_00001", config={}, last_result=result, error_msg=None)
    TrialRunLabels(runs).on_trial_result(0, [], trial, result)
    ChildRunStatus(runs, max_epochs=3).on_trial_complete(0, [], trial)
    assert "search_runs" not in calls.calls
    run = runs.client.get_run(run_id)
    assert run.info.run_name == "t07" and run.data.tags[Tags.TRIAL_NAME] == "t07"
    assert run.data.tags[Tags.STATUS] == "early_stopped" and run.info.status == "FINISHED"


def test_tune_names_a_trial_by_its_number() -> None:
    numbering.reset()
    numbering.register("abc_00002", 12)
    assert numbering.trial_name(SimpleNamespace(trial_id="abc_00002")) == "t12"


def test_a_trial_folder_keeps_tunes_own_name() -> None:
    trial = SimpleNamespace(trainable_name="run_trial", trial_id="abc_00002", experiment_tag="3_optim.lr=0.1")
    name = numbering.trial_dirname(trial)
    assert name.startswith("run_trial_abc_00002_3_optim.lr=0.1_") and "/" not in name


def test_a_run_whose_first_attempt_ended_before_its_params_gets_them_on_the_retry(tmp_path: Path) -> None:
    """An attempt that stopped right after creating its run (killed, or stopped while the store
    was away) left it without params: the next attempt reuses the run and logs them."""
    runs = SearchRuns.start(MlflowStore(f"sqlite:///{tmp_path / 'mlflow.db'}"), "runs", "runs_1", {}, {})
    bare = runs.client.create_run(runs.experiment_id, tags={
        Tags.PARENT_RUN_ID: runs.parent_run_id, Tags.TRIAL_ID: "abc_00003", Tags.STATUS: "interrupted"}).info.run_id
    run_id, earlier = runs.open_trial("abc_00003", "trial", {"method": "vanilla", "optim.lr": 0.1}, {})
    assert (run_id, earlier) == (bare, True)
    run = runs.client.get_run(run_id)
    assert run.data.params == {"method": "vanilla", "optim.lr": "0.1"}
    assert run.data.tags[Tags.STATUS] == "running"
    assert "config.json" in {a.path for a in runs.client.list_artifacts(run_id)}
    # A retry of a run that has them already logs the same values again without error.
    assert runs.open_trial("abc_00003", "trial", {"method": "vanilla", "optim.lr": 0.1}, {})[0] == bare
