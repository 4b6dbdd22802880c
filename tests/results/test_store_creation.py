"""A new store opened by several processes at the same moment (real processes, each released at
one instant after its imports): MLflow's schema is created once and whole, Optuna's tables
too, and every process opens the store. Before creation was serialised, two processes opening
a new SQLite MLflow store at once failed in 4 of 6 tries here (`table _alembic_tmp_... already
exists`, `duplicate column name`, `No such index`), and the half-migrated file stayed broken."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from skd_ray.results.databases import mlflow_head_revision, schema_revision
from tests.helpers.postgres import PostgresServer

pytestmark = pytest.mark.slow

LEAD_S = 15  # for the processes' imports on a busy 2-core machine


def open_at(start_at: float, kind: str, url: str, answers: Any) -> None:
    """One process: import everything, wait for `start_at`, then open the store at `url` as
    `kind` says: `skd` (the MLflow store's own checks), `mlflow` (MLflow alone, as `mlflow ui`
    opens it, taking no lock) or `optuna` (a search's Optuna storage)."""
    try:
        from mlflow import MlflowClient

        from skd_ray.results.store import MlflowStore
        from skd_ray.search.state.study import StudyStorage

        while time.time() < start_at:
            time.sleep(0.001)
        if kind == "skd":
            MlflowStore(url).check_usable(f"e{multiprocessing.current_process().pid}")
        elif kind == "mlflow":
            MlflowClient(url).search_experiments(max_results=1)
        else:
            StudyStorage(url, Path(".")).check_usable()
        answers.put((kind, "ok"))
    except BaseException as err:  # noqa: BLE001 - reported to the test
        answers.put((kind, f"{type(err).__name__}: {' '.join(str(err).split())[:400]}"))


def open_together(jobs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    ctx = multiprocessing.get_context("spawn")
    answers = ctx.Queue()
    start_at = time.time() + LEAD_S
    procs = [ctx.Process(target=open_at, args=(start_at, kind, url, answers)) for kind, url in jobs]
    for proc in procs:
        proc.start()
    got = [answers.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    return got


def test_a_new_sqlite_store_opened_by_three_processes_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mlflow.db'}"
    got = open_together([("skd", url), ("skd", url), ("mlflow", url)])
    assert [answer for _, answer in got] == ["ok"] * 3, got
    assert schema_revision(url) == mlflow_head_revision()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]  # no lock or side file left


def test_new_postgresql_stores_opened_by_several_processes_at_once(postgres_server: PostgresServer,
                                                                  postgres_db: str) -> None:
    optuna_url = postgres_server.create_database(postgres_db.rsplit("/", 1)[1] + "_o")
    got = open_together([("skd", postgres_db), ("skd", postgres_db), ("optuna", optuna_url),
                         ("optuna", optuna_url)])
    assert [answer for _, answer in got] == ["ok"] * 4, got
    assert schema_revision(postgres_db) == mlflow_head_revision()
    tables = {row[0] for row in postgres_server.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", optuna_url.rsplit("/", 1)[1])}
    assert {"studies", "trials", "version_info", "alembic_version"} <= tables
