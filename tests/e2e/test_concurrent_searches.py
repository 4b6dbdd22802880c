"""Searches started at the same moment on one fresh store: two real `run_search.py` processes
of the same experiment on the same --storage, with a `skd-ray results` started beside them,
(a) on a new SQLite MLflow file with each search's own Optuna file, (b) on new PostgreSQL
databases for MLflow and for Optuna. Each search must end with its own folder, parent run,
trial runs and study: nothing mixed, nothing lost. (Before store creation was serialised, the
two searches ran MLflow's schema migration at once on the new file, and one or both failed
with `Online migration expected to match one row ...` or `table _alembic_tmp_... already
exists`.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.postgres import PostgresServer
from tests.helpers.searches import write_space

pytestmark = pytest.mark.slow

SKD_RAY = str(Path(sys.executable).with_name("skd-ray"))
EXPERIMENT = "together"
TRIALS = 2
MIGRATION_RACE = ("Online migration", "alembic_tmp", "duplicate column", "already exists")


def start_together(cli: Any, tmp_path: Path, mlflow_uri: str, optuna_url: str | None) -> dict[str, Any]:
    """Two searches and a `results`, started at once; waits for all three. Their outputs and
    exit codes, and the wall time until both searches ended."""
    space = write_space(tmp_path / "space.yaml", **{"train.epochs": 2, "train.threads": 1})
    args = ["--config", str(space), "--num-samples", str(TRIALS), "--grace-period", "2", "--max-concurrent", "1",
            "--storage", str(tmp_path / "results"), "--experiment", EXPERIMENT, "--mlflow-uri", mlflow_uri]
    if optuna_url:
        args += ["--optuna-storage", optuna_url]
    logs = [tmp_path / "search1.log", tmp_path / "search2.log", tmp_path / "results.log"]
    began = time.monotonic()
    searches = [cli.start(*args, "--seed", str(seed), log=log) for seed, log in zip((0, 1), logs)]
    with open(logs[2], "w") as out:
        reader = subprocess.Popen([SKD_RAY, "results", "--experiment", EXPERIMENT, "--mlflow-uri", mlflow_uri],
                                  cwd=cli.workdir, env=cli.env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    cli.background.append(reader)
    codes = [p.wait(timeout=1500) for p in searches]
    seconds = time.monotonic() - began
    reader_code = reader.wait(timeout=300)
    outputs = [log.read_text() for log in logs]
    print(f"two searches at once: {seconds:.0f} s")
    return {"codes": codes, "outputs": outputs[:2], "reader": (reader_code, outputs[2]), "seconds": seconds}


def check_apart(ran: dict[str, Any], mlflow_uri: str, storage: Path, optuna_url: str | None) -> None:
    """Both searches ended well, each with its own folder, parent run, trial runs and study."""
    import optuna
    from mlflow import MlflowClient

    for code, out in zip(ran["codes"], ran["outputs"]):
        assert code == 0, out[-5000:]
        assert not any(word in out for word in MIGRATION_RACE), out[-5000:]
    reader_code, reader_out = ran["reader"]
    # `results` may come before either search made its experiment (one error line), never a traceback.
    assert reader_code in (0, 2) and "Traceback" not in reader_out, reader_out[-3000:]
    assert not any(word in reader_out for word in MIGRATION_RACE), reader_out

    folders = sorted(storage.glob(f"{EXPERIMENT}_*"))
    assert len(folders) == 2, folders
    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    parents = client.search_runs([exp.experiment_id], "tags.`skd.kind` = 'search'")
    assert sorted(p.info.run_name for p in parents) == [f.name for f in folders]
    trials = client.search_runs([exp.experiment_id], "tags.`skd.kind` = 'trial'")
    assert len(trials) == 2 * TRIALS
    for parent, folder in zip(sorted(parents, key=lambda p: p.info.run_name), folders):
        assert parent.data.tags["skd.status"] == "completed"
        children = {t.info.run_id for t in trials if t.data.tags["mlflow.parentRunId"] == parent.info.run_id}
        assert len(children) == TRIALS
        url = optuna_url or f"sqlite:///{folder / 'optuna.db'}"
        assert (folder / "optuna.db").is_file() == (optuna_url is None)
        study = optuna.load_study(study_name=folder.name, storage=url)
        assert len(study.trials) == TRIALS
        assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == children
    if optuna_url:
        names = sorted(optuna.get_all_study_names(storage=optuna_url))
        assert names == [f.name for f in folders]


def test_two_searches_at_once_on_a_new_sqlite_store(cli, tmp_path: Path) -> None:
    assert not (tmp_path / "mlflow.db").exists()
    ran = start_together(cli, tmp_path, cli.mlflow_uri, None)
    check_apart(ran, cli.mlflow_uri, tmp_path / "results", None)
    assert not list(tmp_path.glob(".mlflow.db*")), "a lock or a side file was left beside the store"


def test_two_searches_at_once_on_new_postgresql_databases(cli, tmp_path: Path, postgres_server: PostgresServer,
                                                          postgres_db: str) -> None:
    optuna_url = postgres_server.create_database(postgres_db.rsplit("/", 1)[1] + "_optuna")
    ran = start_together(cli, tmp_path, postgres_db, optuna_url)
    check_apart(ran, postgres_db, tmp_path / "results", optuna_url)
