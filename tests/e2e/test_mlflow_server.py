"""A real search, then a real MLflow tracking server on its store: everything a user browses
(parent run, nested trial runs, params, per-epoch metrics, plots, checkpoints) is served
through MLflow's REST API, read here with plain HTTP as any client would."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.cli_run import CliRun
from tests.helpers.mlflow_server import mlflow_server

pytestmark = pytest.mark.slow

EPOCHS = 2
EXPERIMENT = "served"


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """Two BYOT trials of two epochs on digits, run through the CLI; (workdir, its stdout).
    The grace period equals the budget, so ASHA lets both trials finish."""
    workdir = tmp_path_factory.mktemp("served")
    space = {
        "description": "two-trial space for the tracking-server test",
        "fixed": {"method": "byot", "data.name": "digits", "data.val_fraction": 0.2, "model.backbone": "resnet_small",
                  "model.width": 8, "train.epochs": EPOCHS, "train.threads": 1},
        "params": {"method.alpha": {"type": "float", "low": 0.1, "high": 0.9, "default": 0.3},
                   "optim.lr": {"type": "categorical", "choices": [0.05, 0.1], "default": 0.05}},
    }
    (workdir / "space.yaml").write_text(yaml.safe_dump(space))
    cli = CliRun(workdir)
    try:
        res = cli("--config", "space.yaml", "--num-samples", "2", "--grace-period", str(EPOCHS),
                  "--storage", str(workdir / "results"), "--experiment", EXPERIMENT, "--seed", "0", timeout=480)
        assert res.returncode == 0, res.stdout[-5000:]
        yield workdir, res.stdout
    finally:
        cli.cleanup()


@pytest.fixture(scope="module")
def server(finished_search: tuple[Path, str]) -> Iterator[str]:
    """`mlflow server` on the search's SQLite store; its base URL."""
    workdir, _ = finished_search
    with mlflow_server(f"sqlite:///{workdir / 'mlflow.db'}", workdir) as base:
        yield base


def api(base: str, endpoint: str, body: dict[str, Any] | None = None, **query: str) -> dict[str, Any]:
    """GET (query) or POST (JSON body) /api/2.0/mlflow/<endpoint>; the decoded JSON answer."""
    url = f"{base}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def as_dict(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: item["value"] for item in items}


def search_runs(base: str, experiment_id: str, filter_string: str) -> list[dict[str, Any]]:
    return api(base, "runs/search", {"experiment_ids": [experiment_id], "filter": filter_string,
                                     "max_results": 100}).get("runs", [])


def artifact_paths(base: str, run_id: str, path: str = "") -> dict[str, int]:
    files = api(base, "artifacts/list", run_id=run_id, path=path).get("files", [])
    return {f["path"]: int(f.get("file_size", 0)) for f in files if not f.get("is_dir")}


def test_the_server_serves_the_search_with_nested_trials_metrics_and_artifacts(
        finished_search: tuple[Path, str], server: str) -> None:
    _, stdout = finished_search
    assert "plots: " in stdout and "logged to the search's MLflow run under plots/" in stdout
    experiment = api(server, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    exp_id = experiment["experiment_id"]

    parents = search_runs(server, exp_id, "tags.`skd.kind` = 'search'")
    assert len(parents) == 1
    parent = parents[0]
    parent_id = parent["info"]["run_id"]
    assert parent["info"]["status"] == "FINISHED"
    parent_tags, parent_params = as_dict(parent["data"]["tags"]), as_dict(parent["data"].get("params", []))
    assert parent_tags["skd.status"] == "completed" and parent_tags["skd.methods"] == "byot"
    assert parent_params["search.num_samples"] == "2" and parent_params["config.train.epochs"] == str(EPOCHS)

    children = search_runs(server, exp_id, f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert len(children) == 2
    for child in children:
        run_id = child["info"]["run_id"]
        tags, params = as_dict(child["data"]["tags"]), as_dict(child["data"]["params"])
        assert tags["mlflow.parentRunId"] == parent_id and tags["skd.kind"] == "trial"
        assert tags["skd.status"] == "completed" and tags["skd.method"] == "byot" and tags["skd.ray_trial_id"]
        # Only the searched values on a trial; the constants once on the parent.
        assert set(params) == {"method.alpha", "optim.lr"}, params
        assert 0.1 <= float(params["method.alpha"]) <= 0.9 and params["optim.lr"] in ("0.05", "0.1")
        assert parent_params["config.method"] == "byot" and parent_params["config.model.width"] == "8"
        # One point per epoch for the objective, every exit and the early-exit policy at the
        # charted threshold (0.95 by default), each in its chart section.
        for key in ("val/acc", "val/acc.exit1", "val/compute.exit1", "val/compute.ensemble",
                    "early_exit/val_acc.t0.95", "early_exit/val_compute.t0.95", "train/loss", "train/lr"):
            history = api(server, "metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
            assert sorted(int(m["step"]) for m in history) == list(range(1, EPOCHS + 1)), key
        metrics = as_dict(child["data"]["metrics"])
        assert 0.0 < metrics["val/compute.exit1"] < metrics["val/compute.exit2"] < metrics["val/compute.final"] == 1.0
        assert metrics["best/val/acc"] >= metrics["val/acc"]
        assert not [k for k in metrics if "t0.9" in k and "t0.95" not in k]  # the rest of the sweep: a table
        artifacts = artifact_paths(server, run_id)
        assert artifacts["config.json"] > 0 and artifacts["best_checkpoint.pt"] > 1000
        assert artifacts["early_exit_sweep.json"] > 0

    plots = artifact_paths(server, parent_id, "plots")
    for name in ("optimization_history", "parallel_coordinates", "learning_curves", "early_exit_tradeoff"):
        assert plots[f"plots/{name}.png"] > 1000, sorted(plots)
    # One method: no per-method comparison, and the parent run says why.
    assert "plots/method_comparison.png" not in plots and plots["plots/skipped.txt"] > 0


def test_the_runs_table_data_carries_the_search_summary(finished_search: tuple[Path, str], server: str) -> None:
    """What the runs table shows for the parent (read through the REST API): the best
    trial's accuracy in the trials' own column, counts, epochs, the best run's link, the
    searched values and a description; trial runs named `tNN ...` with a description."""
    _, stdout = finished_search
    assert "best: t0" in stdout and "browse: " in stdout and "runs?workflowType=machine_learning" in stdout
    experiment_id = api(server, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]["experiment_id"]
    parent = search_runs(server, experiment_id, "tags.`skd.kind` = 'search'")[0]
    metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
    tags = as_dict(parent["data"]["tags"])
    children = search_runs(server, experiment_id, f"tags.`mlflow.parentRunId` = '{parent['info']['run_id']}'")
    (best,) = [r for r in children if r["info"]["run_id"] == tags["skd.best_run_id"]]
    best_metrics = {m["key"]: m["value"] for m in best["data"]["metrics"]}
    top = max({m["key"]: m["value"] for m in r["data"]["metrics"]}["best/val/acc"] for r in children)
    assert metrics["best/val/acc"] == best_metrics["best/val/acc"] == top
    assert metrics["best/val/acc.exit1"] == best_metrics["best/val/acc.exit1"]
    assert metrics["trials/all"] == 2 and metrics["trials/completed"] == 2 and metrics["trials/failed"] == 0
    assert metrics["epochs/trained"] == 2 * EPOCHS == metrics["epochs/without_early_stopping"]
    assert tags["skd.best_run_id"] == best["info"]["run_id"]
    assert tags["skd.best_trial"] == as_dict(best["data"]["tags"])["skd.trial_name"]
    assert best["info"]["run_name"].startswith(tags["skd.best_trial"] + " byot alpha=")
    assert tags["skd.best.optim.lr"] in ("0.05", "0.1") and "skd.best.method.alpha" in tags
    assert f"runs/{best['info']['run_id']}" in tags["mlflow.note.content"]
    for child in children:
        assert as_dict(child["data"]["tags"])["mlflow.note.content"].startswith("Trial **t0")


def test_the_optuna_study_names_its_objective_and_links_every_trial(finished_search: tuple[Path, str]) -> None:
    """The study as optuna-dashboard opens it: objective named best_val_acc, the same best
    trial as the leaderboard, and each trial's Ray id, MLflow run id and status."""
    import mlflow
    import optuna

    workdir, _ = finished_search
    (db,) = (workdir / "results").glob("*/optuna.db")
    study = optuna.load_study(study_name=db.parent.name, storage=f"sqlite:///{db}")
    assert study.metric_names == ["best_val_acc"]
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    for t in study.trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["skd.ray_trial_id"] == t.user_attrs["ray_trial_id"]
        assert run.data.tags["skd.trial_name"] == f"t{t.number:02d}"
        assert t.user_attrs["skd_status"] == "completed" and t.user_attrs["epochs"] == EPOCHS
        assert t.value == run.data.metrics["best/val/acc"]
    parent = client.search_runs([run.info.experiment_id], "tags.`skd.kind` = 'search'")[0]
    assert parent.data.tags["skd.best_run_id"] == study.best_trial.user_attrs["mlflow_run_id"]
