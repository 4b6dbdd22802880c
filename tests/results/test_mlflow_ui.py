"""MLflow's UI opens on a search's answer: every link skd-ray writes opens the model-training
view, the experiment carries a runs-table view sorted by the objective, every run lists the
objective first, and the optimisation history names trials as everything else does (`t03`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from skd_ray.results import plots
from skd_ray.results.leaderboard import TrialRow
from skd_ray.results.mlflow_ui import (
    BEST_FIRST_VIEW,
    BEST_FIRST_VIEW_NAME,
    ML_WORKFLOW,
    RUN_NAME_COLUMN,
    VIEW_TAG_PREFIX,
    objective_first,
    run_path,
    runs_table_path,
    save_search_view,
    saved_view,
)
from skd_ray.results.names import Tags
from skd_ray.results.search_data import SearchData
from skd_ray.results.store import MlflowStore
from skd_ray.results.summary import SearchSummary, search_description, summarise_search
from skd_ray.training.objective import Objective
from tests.helpers.fake_search import BEST, write_fake_search

MARKDOWN_LINK = re.compile(r"\]\((#/[^)]*)\)")


def store(tmp_path: Path) -> tuple[str, object, str]:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    return uri, c, c.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())


def test_links_open_the_model_training_view() -> None:
    assert run_path("3", "abc") == f"#/experiments/3/runs/abc?{ML_WORKFLOW}"
    assert runs_table_path("3") == f"#/experiments/3/runs?{ML_WORKFLOW}&viewStateShareKey={BEST_FIRST_VIEW}"
    assert runs_table_path("3", view=None) == f"#/experiments/3/runs?{ML_WORKFLOW}"


def test_objective_first_keeps_the_others_in_their_order() -> None:
    names = ["epoch", "train/loss", "val/acc", "best/val/acc", "time/epoch_s"]
    assert objective_first(names, ("best/val/acc", "val/acc", "absent")) == [
        "best/val/acc", "val/acc", "epoch", "train/loss", "time/epoch_s"]


def test_the_best_first_view_is_a_saved_view_as_mlflow_writes_it(tmp_path: Path) -> None:
    _, c, exp = store(tmp_path)
    save_search_view(c, exp, Objective("val_loss", "min"))
    envelope = json.loads(c.get_experiment(exp).tags[VIEW_TAG_PREFIX + BEST_FIRST_VIEW])
    # The envelope MLflow's "Views" menu lists (its parser wants these types).
    assert envelope["name"] == BEST_FIRST_VIEW_NAME and isinstance(envelope["createdAt"], int)
    assert isinstance(envelope["state"], str)
    state = saved_view(c, exp, BEST_FIRST_VIEW)
    assert state is not None
    assert state["orderByKey"] == "metrics.`best/val/loss`" and state["orderByAsc"] is True  # min: lowest first
    assert state["selectedColumns"][0] == "metrics.`best/val/loss`"
    assert "tags.`skd.status`" in state["selectedColumns"]
    assert state["columnOrder"][0] == RUN_NAME_COLUMN and state["columnWidths"][RUN_NAME_COLUMN] >= 400


def test_saving_the_view_again_refreshes_it_and_keeps_its_creation_time(tmp_path: Path) -> None:
    _, c, exp = store(tmp_path)
    tag = VIEW_TAG_PREFIX + BEST_FIRST_VIEW
    save_search_view(c, exp)
    first = json.loads(c.get_experiment(exp).tags[tag])
    save_search_view(c, exp)
    again = json.loads(c.get_experiment(exp).tags[tag])
    assert again["createdAt"] == first["createdAt"] and again["updatedAt"] >= first["updatedAt"]
    state = json.loads(again["state"])
    assert state["orderByKey"] == "metrics.`best/val/acc`" and state["orderByAsc"] is False


def test_trial_runs_list_the_objective_first(tmp_path: Path) -> None:
    """The engine reports `epoch` first and `best_val_acc` after the losses; MLflow lists a run's
    metrics (and the compare page plots the first shared one) in the order first logged."""
    uri, c, _ = store(tmp_path)
    parent = write_fake_search(uri, tmp_path / "artifacts", "fake")
    exp = c.get_experiment_by_name("fake").experiment_id
    trials = [r for r in c.search_runs([exp], f"tags.`{Tags.PARENT_RUN_ID}` = '{parent}'") if r.data.metrics]
    assert trials
    for run in trials:
        assert list(run.data.metrics)[:2] == ["best/val/acc", "val/acc"], run.info.run_name


def test_the_parent_run_lists_the_objective_first_and_links_into_the_training_view(tmp_path: Path) -> None:
    uri, c, _ = store(tmp_path)
    parent = write_fake_search(uri, tmp_path / "artifacts", "fake")
    exp = c.get_experiment_by_name("fake").experiment_id
    summarise_search(MlflowStore(uri), exp, parent, "fake_20250101-000000", 3, ["method.alpha", "optim.lr"])
    run = c.get_run(parent)
    assert next(iter(run.data.metrics)) == "best/val/acc"
    assert run.data.metrics["best/val/acc"] == pytest.approx(max(BEST.val_acc))
    links = MARKDOWN_LINK.findall(run.data.tags[Tags.NOTE])
    assert run_path(exp, run.data.tags[Tags.BEST_RUN_ID]) in links
    assert runs_table_path(exp) in links
    assert links and all(ML_WORKFLOW in link for link in links)
    assert saved_view(c, exp, BEST_FIRST_VIEW)["orderByKey"] == "metrics.`best/val/acc`"


def test_without_the_saved_view_the_description_links_to_mlflows_own_table() -> None:
    """A link to a view that is not there makes MLflow say so and open the experiment on its
    GenAI pages: when the view could not be saved, the link names none."""
    summary = SearchSummary(None, {"completed": 0}, 0, 0)
    assert f"]({runs_table_path('4')})" in search_description("s", "4", summary, 3, None)
    plain = search_description("s", "4", summary, 3, None, view=None)
    assert f"]({runs_table_path('4', view=None)})" in plain and "viewStateShareKey" not in plain


def test_the_optimisation_history_places_and_names_trials_by_their_number() -> None:
    """A concurrent search starts t01 before t00 now and then: the plot follows the numbers
    (Optuna's order) and labels its ticks with the names the console and MLflow use."""
    started = {"t01": 0, "t00": 1, "t02": 2, "t03": 3}
    acc = {"t00": 0.80, "t01": 0.95, "t02": 0.70, "t03": 0.90}
    rows = [TrialRow(n, f"run_{n}", "completed", 3, acc[n], {}, {}, started[n]) for n in sorted(acc, key=acc.get,
                                                                                                reverse=True)]
    fig = plots.optimization_history(SearchData("e", "search", "parent", "completed", {}, {}, rows))
    fig.canvas.draw()
    ax = fig.axes[0]
    points = {round(x): y for x, y in ax.collections[0].get_offsets().tolist()}
    assert points == pytest.approx({0: 0.80, 1: 0.95, 2: 0.70, 3: 0.90})
    labels = {round(t.get_position()[0]): t.get_text() for t in ax.get_xticklabels() if t.get_text()}
    assert labels and all(text == f"t{x:02d}" for x, text in labels.items())
    assert ax.get_xlabel() == "trial"


def test_trials_without_numbers_stay_in_start_order() -> None:
    rows = [TrialRow(n, n, "completed", 3, a, {}, {}, i) for i, (n, a) in enumerate((("b", 0.9), ("a", 0.8)))]
    place, names = plots.trial_axis(rows)
    assert place == {"b": 1, "a": 2} and names == {}
