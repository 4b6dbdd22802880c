"""PostgreSQL as the MLflow tracking store, on a real PostgreSQL 15 server the tests start (one
for the session, a fresh database per test): a tiny search through the CLI logs straight to
`--mlflow-uri postgresql://...`, and another through an `mlflow server` whose backend store is
PostgreSQL; `skd-ray results` reads each back, and the runs are read from the database itself."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.mlflow_server import mlflow_server
from tests.helpers.postgres import PostgresServer
from tests.helpers.searches import child_runs, write_space

pytestmark = pytest.mark.slow

EPOCHS = 2
SKD_RAY = str(Path(sys.executable).with_name("skd-ray"))


def tiny_search(cli: Any, tmp_path: Path, mlflow_uri: str, experiment: str) -> str:
    """Two BYOT trials of two epochs on digits, both run to the end (grace period = budget),
    tracked in `mlflow_uri`; the search's output."""
    space = write_space(tmp_path / "space.yaml", **{"train.epochs": EPOCHS, "train.threads": 1})
    res = cli("--config", str(space), "--num-samples", "2", "--grace-period", str(EPOCHS),
              "--storage", str(tmp_path / "results"), "--experiment", experiment, "--seed", "0",
              "--mlflow-uri", mlflow_uri, timeout=480)
    assert res.returncode == 0, res.stdout[-5000:]
    assert "leaderboard of" in res.stdout and "best: t0" in res.stdout, res.stdout[-3000:]
    return res.stdout


def check_search_in_postgres(server: PostgresServer, db_url: str, experiment: str,
                             tracking_uri: str) -> tuple[Any, list[Any]]:
    """The search's parent and its 2 finished trials, read with MlflowClient from the database,
    each with one point per epoch and its artifacts (listed through `tracking_uri`, which an
    `mlflow-artifacts:` location needs); and the runs table of that database holds exactly them."""
    parent, children = child_runs(db_url, experiment)
    assert parent.info.status == "FINISHED" and parent.data.tags["skd.status"] == "completed"
    assert len(children) == 2
    from mlflow import MlflowClient

    client, tracking = MlflowClient(db_url), MlflowClient(tracking_uri)
    for child in children:
        assert child.data.tags["skd.status"] == "completed" and child.data.tags["skd.kind"] == "trial"
        history = client.get_metric_history(child.info.run_id, "val/acc")
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
        assert {f.path for f in tracking.list_artifacts(child.info.run_id)} >= {"config.json", "best_checkpoint.pt"}
    assert parent.data.metrics["best/val/acc"] == max(c.data.metrics["best/val/acc"] for c in children)
    dbname = db_url.rsplit("/", 1)[1]
    rows = server.execute("SELECT r.run_uuid FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
                          f"WHERE e.name = '{experiment}'", dbname)
    assert {r[0] for r in rows} == {parent.info.run_id, *(c.info.run_id for c in children)}
    return parent, children


def check_results_command(cli: Any, mlflow_uri: str, experiment: str, parent: Any, children: list[Any]) -> None:
    """`skd-ray results` prints the search's leaderboard, every trial and its best, from `mlflow_uri`."""
    res = cli.run([SKD_RAY, "results", "--experiment", experiment, "--mlflow-uri", mlflow_uri], timeout=120)
    assert res.returncode == 0, res.stdout[-3000:]
    assert f"leaderboard of {parent.info.run_name}" in res.stdout, res.stdout
    for child in children:
        assert child.data.tags["skd.trial_name"] in res.stdout, res.stdout
    if mlflow_uri.startswith("http"):  # a server is browsed at its own address
        assert f"browse: {mlflow_uri}/#/experiments/" in res.stdout, res.stdout
    else:  # a database through the mlflow ui command printed for it
        assert f"--backend-store-uri {mlflow_uri}" in res.stdout, res.stdout


def test_a_search_logs_straight_to_postgresql(cli, tmp_path: Path, postgres_server: PostgresServer,
                                               postgres_db: str) -> None:
    tiny_search(cli, tmp_path, postgres_db, "pg")
    assert not (tmp_path / "mlflow.db").exists()  # nothing fell back to the default SQLite store
    parent, children = check_search_in_postgres(postgres_server, postgres_db, "pg", postgres_db)
    check_results_command(cli, postgres_db, "pg", parent, children)
    # A database store keeps no files: MLflow puts artifacts under mlruns/ where the search started.
    checkpoints = list((tmp_path / "mlruns").rglob("best_checkpoint.pt"))
    assert len(checkpoints) == 2, checkpoints


def test_a_search_logs_to_an_mlflow_server_backed_by_postgresql(cli, tmp_path: Path, postgres_server: PostgresServer,
                                                                 postgres_db: str) -> None:
    with mlflow_server(postgres_db, tmp_path) as base:
        tiny_search(cli, tmp_path, base, "pg_served")
        parent, children = check_search_in_postgres(postgres_server, postgres_db, "pg_served", base)
        check_results_command(cli, base, "pg_served", parent, children)
    assert not (tmp_path / "mlflow.db").exists()
    # The server stored the artifacts it was sent under its --artifacts-destination.
    checkpoints = list((tmp_path / "mlartifacts").rglob("best_checkpoint.pt"))
    assert len(checkpoints) == 2, checkpoints
