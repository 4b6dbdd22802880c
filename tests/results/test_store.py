"""The one MLflow store object: what it pickles as, how it prints, where it says to browse, and
its checks, against real SQLite files and a real closed port (no mocks of MLflow)."""

from __future__ import annotations

import pickle
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from skd_ray.errors import SkdError
from skd_ray.results.store import MlflowStore, StoreOfRequest, masked


def test_it_pickles_as_its_uri_and_each_process_makes_its_own_client(tmp_path: Path) -> None:
    store = MlflowStore(f"sqlite:///{tmp_path / 'mlflow.db'}")
    store.experiment_id("e", create=True)
    assert store._client is not None
    copy = pickle.loads(pickle.dumps(store))
    assert copy == store and copy._client is None
    assert copy.experiment_id("e") == store.experiment_id("e")
    assert MlflowStore.of(store) is store and MlflowStore.of(store.uri) == store


def test_the_default_store_is_a_file_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert MlflowStore.of(None).uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_password_never_prints() -> None:
    store = MlflowStore("postgresql://skd:s3cret@db.internal:5432/mlflow")
    assert "s3cret" not in str(store) and "s3cret" not in repr(store)
    assert str(store) == "postgresql://skd:***@db.internal:5432/mlflow"
    assert masked("sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"
    assert store.uri.endswith("s3cret@db.internal:5432/mlflow")  # what MLflow is given


def test_browse_url_is_the_servers_own_address_for_a_server() -> None:
    server = MlflowStore("http://head-node:5000/")
    assert server.is_server and not server.is_database
    assert server.browse_url("7") == "http://head-node:5000/#/experiments/7/runs?workflowType=machine_learning"
    local = MlflowStore("postgresql+psycopg://u@127.0.0.1/m")
    assert local.is_database and not local.is_server
    assert local.browse_url("7", port=5055) == \
        "http://127.0.0.1:5055/#/experiments/7/runs?workflowType=machine_learning"
    assert local.browse_url("7", "skd-best-first").endswith("runs?workflowType=machine_learning"
                                                             "&viewStateShareKey=skd-best-first")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_database_is_one_error_in_seconds() -> None:
    store = MlflowStore(f"postgresql://postgres:pw@127.0.0.1:{closed_port()}/mlflow")
    started = time.monotonic()
    with pytest.raises(SkdError) as err:
        store.check_usable("e")
    assert time.monotonic() - started < 10
    assert "MLflow database postgresql://postgres:***@127.0.0.1" in err.value.problem
    assert "pw@" not in str(err.value)


@dataclass
class Request(StoreOfRequest):
    tracking_uri: str


def test_a_request_has_one_store_until_its_uri_changes() -> None:
    req = Request("sqlite:////tmp/a.db")
    first = req.store
    assert req.store is first
    req.tracking_uri = "sqlite:////tmp/b.db"  # a resume pointed at another --mlflow-uri
    assert req.store is not first and req.store.uri == "sqlite:////tmp/b.db"


def test_an_unreachable_store_is_waited_for_and_other_errors_are_not(tmp_path: Path) -> None:
    from skd_ray.results.store import StoreUnavailable, is_unreachable

    store = MlflowStore(f"sqlite:///{tmp_path / 'm.db'}", outage_limit_s=3)
    calls: list[float] = []

    def comes_back() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError("HTTPConnectionPool: Failed to establish a new connection: Connection refused")
        return "logged"

    assert store.patiently(comes_back) == "logged" and len(calls) == 3

    def never_back() -> None:
        raise ConnectionError("Connection refused")

    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unreachable for"):
        store.patiently(never_back)
    assert 3 <= time.monotonic() - started < 8

    def wrong() -> None:
        raise ValueError("RESOURCE_DOES_NOT_EXIST: run abc not found")

    with pytest.raises(ValueError):  # not an outage: raised at once
        store.patiently(wrong)
    try:
        try:
            raise OSError("could not connect to server: Connection refused")
        except OSError as inner:
            raise RuntimeError("An exception is raised during the commit.") from inner
    except RuntimeError as wrapped:
        assert is_unreachable(wrapped)  # a wrapped driver error still counts
