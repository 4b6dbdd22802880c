"""MLflow's UI opens on a search's answer: every link skd-ray writes opens the model-training
view, the experiment carries a runs-table view sorted by the objective, and every run lists
the objective first."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

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
from skd_ray.results.summary import summarise_search
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
    summarise_search(uri, exp, parent, "fake_20250101-000000", 3, ["method.alpha", "optim.lr"])
    run = c.get_run(parent)
    assert next(iter(run.data.metrics)) == "best/val/acc"
    assert run.data.metrics["best/val/acc"] == pytest.approx(max(BEST.val_acc))
    links = MARKDOWN_LINK.findall(run.data.tags[Tags.NOTE])
    assert run_path(exp, run.data.tags[Tags.BEST_RUN_ID]) in links
    assert runs_table_path(exp) in links
    assert links and all(ML_WORKFLOW in link for link in links)
    assert saved_view(c, exp, BEST_FIRST_VIEW)["orderByKey"] == "metrics.`best/val/acc`"

