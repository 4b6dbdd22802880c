"""End-to-end through the CLI with real Ray, Optuna and MLflow: the final evaluation and the
export of one tiny finished search (shared by both tests), and a multi-objective search."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.helpers.cli_run import CliRun
from tests.helpers.plain_torch import run_plain_torch

pytestmark = pytest.mark.slow

SEARCH_EXPERIMENT = "fin"


def write_space(path: Path, epochs: int) -> Path:
    path.write_text(yaml.safe_dump({
        "description": "tiny test space",
        "fixed": {"method": "byot", "data.name": "digits", "data.val_fraction": 0.2, "model.backbone": "resnet_small",
                  "model.width": 4, "train.epochs": epochs, "eval.thresholds": [0.8, 0.95]},
        "params": {
            "method.alpha": {"type": "float", "low": 0.1, "high": 0.9, "default": 0.3},
            "method.exits": {"type": "subset", "choices": [1, 2, 3], "default": [1, 2, 3]},
        },
    }))
    return path


def mlflow_client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(uri)


def runs(uri: str, experiment: str, filter_string: str) -> list[Any]:
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string, max_results=1000)


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory: pytest.TempPathFactory):
    """One finished 2-trial, 2-epoch search on digits."""
    root = tmp_path_factory.mktemp("after_search")
    cli = CliRun(root)
    args = ["--config", str(write_space(root / "space.yaml", 2)), "--storage", str(root / "results"),
            "--experiment", SEARCH_EXPERIMENT, "--seed", "0"]
    res = cli(*args, "--num-samples", "2", timeout=400)
    assert res.returncode == 0, res.stdout[-5000:]
    yield cli, args
    cli.cleanup()


def test_final_top_retrains_the_best_configurations_with_each_seed(finished_search) -> None:
    cli, args = finished_search
    (search,) = runs(cli.mlflow_uri, SEARCH_EXPERIMENT, "tags.`skd.kind` = 'search'")
    res = cli(*args, "--final-top", "2", "--seeds", "2", timeout=400)
    assert res.returncode == 0, res.stdout[-5000:]
    assert "final evaluation of " + search.info.run_name in res.stdout
    assert res.stdout.count(" ± ") >= 2, res.stdout[-3000:]
    # Ray Tune's own boxes and hints go to the retrainings' ray.log, as a search's do.
    assert "Configuration for experiment" not in res.stdout and "tensorboard" not in res.stdout, res.stdout[-3000:]

    uri = cli.mlflow_uri
    (final,) = runs(uri, SEARCH_EXPERIMENT, "tags.`skd.kind` = 'final'")
    assert final.data.tags["skd.search_run_id"] == search.info.run_id
    assert final.info.run_name.startswith(f"final-{search.info.run_name}")
    trials = {r.data.tags["skd.trial_name"]: r for r in
              runs(uri, SEARCH_EXPERIMENT, f"tags.`mlflow.parentRunId` = '{search.info.run_id}'")}
    ranked = sorted(trials.values(), key=lambda r: r.data.metrics["best/val/acc"], reverse=True)
    children = runs(uri, SEARCH_EXPERIMENT, f"tags.`mlflow.parentRunId` = '{final.info.run_id}'")
    assert sorted((r.data.tags["skd.config_rank"], r.data.tags["skd.seed"]) for r in children) == \
        [("1", "0"), ("1", "1"), ("2", "0"), ("2", "1")]
    by_rank: dict[int, list[float]] = {1: [], 2: []}
    for run in children:
        rank = int(run.data.tags["skd.config_rank"])
        source = ranked[rank - 1]
        assert run.data.tags["skd.source_trial"] == source.data.tags["skd.trial_name"]
        assert run.data.tags["skd.status"] == "completed"
        params = run.data.params
        assert params["data.train_on_validation"] == "true" and params["eval.test_at_end"] == "true"
        assert params["method.alpha"] == source.data.params["method.alpha"]
        assert params["train.epochs"] == "2" and run.data.metrics["epoch"] == 2
        by_rank[rank].append(run.data.metrics["test/acc"])
    for rank, accs in by_rank.items():
        assert final.data.metrics[f"test_acc_mean.rank{rank}"] == pytest.approx(statistics.fmean(accs))
        assert final.data.metrics[f"test_acc_std.rank{rank}"] == pytest.approx(statistics.stdev(accs))
    saved = mlflow_client(uri).download_artifacts(final.info.run_id, "final_eval.json", str(cli.workdir))
    report = json.loads(Path(saved).read_text())
    assert [(c["rank"], c["finished"]) for c in report["configs"]] == [(1, 2), (2, 2)]
    assert {a.path for a in mlflow_client(uri).list_artifacts(final.info.run_id)} >= {"final_eval.json",
                                                                                     "final_eval.txt"}
    # The search stays the experiment's latest search: --results still shows its trials.
    res = cli("--results", "--experiment", SEARCH_EXPERIMENT, timeout=120)
    assert res.returncode == 0 and f"leaderboard of {search.info.run_name}" in res.stdout


def test_export_best_writes_a_model_that_plain_torch_runs(finished_search, tmp_path: Path) -> None:
    cli, args = finished_search
    out = tmp_path / "exported"
    res = cli(*args, "--export-best", str(out), timeout=200)
    assert res.returncode == 0, res.stdout[-5000:]
    meta = json.loads((out / "metadata.json").read_text())
    trials = runs(cli.mlflow_uri, SEARCH_EXPERIMENT, "tags.`skd.kind` = 'trial'")
    best = max((r for r in trials if r.data.tags["mlflow.parentRunId"] == meta["source"]["search_run_id"]),
               key=lambda r: r.data.metrics["best/val/acc"])
    assert meta["source"]["run_id"] == best.info.run_id
    assert meta["source"]["best_val_acc"] == pytest.approx(best.data.metrics["best/val/acc"])
    # Normalise digits' test images as metadata.json says and run the model with plain torch.
    from skd_ray.config import DataConfig
    from skd_ray.data import load_data

    test = load_data(DataConfig(name="digits", val_fraction=0.2)).test
    norm = meta["normalisation"]
    x = (test.images - torch.tensor(norm["mean"]).view(1, -1, 1, 1)) / torch.tensor(norm["std"]).view(1, -1, 1, 1)
    logits = run_plain_torch(out / "model.pt2", x, tmp_path)
    acc = (logits.argmax(1) == test.labels).sum().item() / len(test.labels)
    assert logits.shape == (len(test.labels), 10) and math.isfinite(acc) and acc > 0.1


def test_multi_objective_search_reports_the_pareto_front(cli, tmp_path: Path) -> None:
    from skd_ray.selection.pareto import pareto_front

    res = cli("--config", str(write_space(tmp_path / "space.yaml", 2)), "--num-samples", "3",
              "--storage", str(tmp_path / "results"), "--experiment", "mo", "--seed", "1", "--multi-objective",
              timeout=500)
    assert res.returncode == 0, res.stdout[-5000:]
    assert "Pareto front" in res.stdout
    objectives = [("val_acc.dynamic_t0.95", "max"), ("val_compute.dynamic_t0.95", "min")]
    (parent,) = runs(cli.mlflow_uri, "mo", "tags.`skd.kind` = 'search'")
    assert parent.data.tags["skd.objectives"] == "val_acc.dynamic_t0.95:max,val_compute.dynamic_t0.95:min"
    children = runs(cli.mlflow_uri, "mo", f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 3
    assert all(r.data.tags["skd.status"] == "completed" for r in children)  # FIFO: nothing stopped early
    # In MLflow the objectives are the early-exit policy charted at the compute threshold.
    charted = ["early_exit/val_acc.t0.95", "early_exit/val_compute.t0.95"]
    points = [[r.data.metrics[m] for m in charted] for r in children]
    expected = {children[i].info.run_id for i in pareto_front(points, [d for _, d in objectives])}
    assert {r.info.run_id for r in children if r.data.tags["skd.pareto"] == "true"} == expected
    client = mlflow_client(cli.mlflow_uri)
    front = json.loads(Path(client.download_artifacts(parent.info.run_id, "pareto_front.json", str(tmp_path)))
                       .read_text())
    assert {row["run_id"] for row in front["front"]} == expected
    assert "pareto_front.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    import optuna

    (db,) = (tmp_path / "results").glob("mo_*/optuna.db")
    study = optuna.load_study(study_name=db.parent.name, storage=f"sqlite:///{db}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert len(study.trials) == 3 and all(len(t.values) == 2 for t in study.trials)
