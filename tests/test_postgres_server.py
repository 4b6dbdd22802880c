"""The tests' PostgreSQL server (tests/helpers/postgres.py): a store MLflow can use, one fresh
database per test, a restart that keeps the data and the port, and a stop that leaves nothing."""

from __future__ import annotations

import os

import pytest

from tests.helpers.postgres import PostgresServer


def test_each_test_database_starts_empty(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("t_fresh")
    postgres_server.execute("CREATE TABLE leftover (x int)", "t_fresh")
    assert postgres_server.create_database("t_fresh") == url
    assert postgres_server.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'leftover'", "t_fresh") == [(0,)]
    assert url == f"postgresql://postgres@127.0.0.1:{postgres_server.port}/t_fresh"


def test_mlflow_logs_across_a_restart_and_stop_leaves_nothing() -> None:
    from mlflow import MlflowClient

    server = PostgresServer().start()
    folder, pid = server.folder, server.proc.pid
    try:
        client = MlflowClient(server.create_database("restart"))
        run = client.create_run(client.create_experiment("e"))
        client.log_metric(run.info.run_id, "val/acc", 0.5, step=1)
        port = server.port
        server.restart()
        assert server.port == port and server.proc.pid != pid
        client.log_metric(run.info.run_id, "val/acc", 0.75, step=2)  # the client reconnects on its own
        assert [m.value for m in client.get_metric_history(run.info.run_id, "val/acc")] == [0.5, 0.75]
        pid = server.proc.pid
    finally:
        server.cleanup()
    assert not os.path.exists(f"/proc/{pid}") and not folder.exists()


def test_without_the_binaries_a_test_is_skipped_with_the_reason(tmp_path) -> None:
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL 15 binaries not found .*system_packages.sh"):
        PostgresServer(bindir=tmp_path).start()
