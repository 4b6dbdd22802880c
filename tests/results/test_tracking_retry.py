"""A new SQLite store whose tables another process is creating at the same moment is retried,
not refused (two processes opening a fresh mlflow.db race in MLflow's schema migration)."""

from __future__ import annotations

import pytest

from skd_ray.results.store import retry as _retry


def test_a_concurrent_schema_creation_is_retried_then_succeeds() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) table _alembic_tmp_experiments already exists")
        return "ok"

    assert _retry(flaky, transient=("locked", "already exists")) == "ok" and len(calls) == 3


def test_other_errors_are_not_retried() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("file is not a database")

    with pytest.raises(RuntimeError, match="not a database"):
        _retry(broken, transient=("locked", "already exists"))
    assert len(calls) == 1
