"""A search whose objective is `val_loss` (min), end to end with real Ray, Optuna and MLflow:
the engine's best checkpoint, Optuna's best trial, the leaderboard, the parent run's summary,
the Python API, `--export-best` and `--final-top` all name the same best trial, and rank by the
smallest validation loss, not by accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.cli_run import CliRun

pytestmark = pytest.mark.slow

EXPERIMENT = "by_loss"


def write_space(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "description": "ranked by validation loss",
        "metric": "val_loss",
        "mode": "min",
        "fixed": {"method": "vanilla", "data.name": "digits", "data.val_fraction": 0.2,
                  "model.backbone": "resnet_small", "model.width": 4, "train.epochs": 3},
        # Learning rates over three decades: trials end apart in loss (and the order by loss
        # need not be the order by accuracy).
        "params": {"optim.lr": {"type": "float", "low": 0.0001, "high": 0.3, "log": True, "default": 0.05}},
    }))
    return path


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("objective")
    cli = CliRun(root)
    args = ["--config", str(write_space(root / "space.yaml")), "--storage", str(root / "results"),
            "--experiment", EXPERIMENT, "--seed", "0"]
    res = cli(*args, "--num-samples", "4", "--no-early-stopping", timeout=400)
    assert res.returncode == 0, res.stdout[-5000:]
    yield cli, args, root, res.stdout
    cli.cleanup()


def client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(uri)


def trials(uri: str) -> tuple[Any, list[Any]]:
    c = client(uri)
    exp = c.get_experiment_by_name(EXPERIMENT)
    (parent,) = c.search_runs([exp.experiment_id], "tags.`skd.kind` = 'search'")
    children = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, children


def lowest_loss(c: Any, children: list[Any]) -> Any:
    """The trial with the smallest validation loss of any epoch, computed here from MLflow's
    histories (ties: the lowest trial number, as Optuna's best trial)."""
    def best_loss(run: Any) -> tuple[float, str]:
        return min(m.value for m in c.get_metric_history(run.info.run_id, "val/loss")), run.data.tags["skd.trial_name"]
    return min(children, key=best_loss)


def test_every_reader_names_the_trial_with_the_lowest_validation_loss(search) -> None:
    import optuna

    from skd_ray import search_results

    cli, args, root, out = search
    uri = cli.mlflow_uri
    c = client(uri)
    parent, children = trials(uri)
    assert len(children) == 4
    best = lowest_loss(c, children)
    name = best.data.tags["skd.trial_name"]

    # The engine: each trial's best/val/loss is the minimum of its val/loss history.
    for run in children:
        history = [m.value for m in c.get_metric_history(run.info.run_id, "val/loss")]
        assert run.data.metrics["best/val/loss"] == pytest.approx(min(history))

    # Optuna minimised the same value and names the same trial.
    (study_file,) = (root / "results").rglob("optuna.db")
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{study_file}")
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{study_file}")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.metric_names == ["best_val_loss"]
    assert study.best_trial.user_attrs["mlflow_run_id"] == best.info.run_id
    assert study.best_value == pytest.approx(best.data.metrics["best/val/loss"])

    # The parent run's summary, the console's answer and the Python API.
    assert parent.data.tags["skd.best_run_id"] == best.info.run_id
    assert parent.data.tags["skd.best_trial"] == name
    assert parent.data.metrics["best/val/loss"] == pytest.approx(best.data.metrics["best/val/loss"])
    assert f"best: {name} val_loss " in out
    result = search_results(EXPERIMENT, mlflow_uri=uri)
    assert (result.best_run_id, result.metric, result.mode) == (best.info.run_id, "best_val_loss", "min")
    assert [t.value for t in result.trials] == sorted(t.value for t in result.trials)

    # The leaderboard ranks by the loss and shows it first.
    res = cli("--results", "--experiment", EXPERIMENT, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:]
    lines = res.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("#  trial"))
    assert "val_loss (min)" in lines[header]
    assert lines[header + 1].split()[1] == name

    # --export-best exports that trial's best checkpoint: the epoch of its lowest loss.
    res = cli(*args, "--export-best", str(root / "exported"), timeout=200)
    assert res.returncode == 0, res.stdout[-3000:]
    meta = json.loads((root / "exported" / "metadata.json").read_text())
    assert meta["source"]["run_id"] == best.info.run_id
    assert meta["source"]["objective"] == "val_loss (min)"
    history = c.get_metric_history(best.info.run_id, "val/loss")
    assert meta["source"]["checkpoint_epoch"] == min(history, key=lambda m: (m.value, m.step)).step

    # --final-top 1 retrains that same configuration.
    res = cli(*args, "--final-top", "1", "--seeds", "1", timeout=300)
    assert res.returncode == 0, res.stdout[-3000:]
    exp = c.get_experiment_by_name(EXPERIMENT)
    (final,) = c.search_runs([exp.experiment_id], "tags.`skd.kind` = 'final'")
    (retrained,) = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{final.info.run_id}'")
    assert retrained.data.tags["skd.source_trial"] == name
    assert retrained.data.params["optim.lr"] == best.data.params["optim.lr"]
