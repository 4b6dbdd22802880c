"""Where a search keeps its Optuna study (`StudyStorage`), the one-driver locks and the new
search's name, against real SQLite files, a real PostgreSQL 15 and real processes."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from skd_ray.errors import SkdError
from skd_ray.search.state.live import LOCK_FILE, hold_search
from skd_ray.search.state.saved import claim_search_name
from skd_ray.search.state.study import RELOCATED, RelocatableRDBStorage, StudyStorage, relocate, same_database
from tests.helpers.ports import free_port
from tests.helpers.postgres import PostgresServer

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_the_default_study_is_the_file_in_the_search_folder(tmp_path: Path) -> None:
    study = StudyStorage(None, tmp_path / "e_1")
    assert study.is_default and study.url == f"sqlite:///{tmp_path / 'e_1' / 'optuna.db'}"
    assert study.describe("e_1") == f"e_1 in sqlite:///{tmp_path / 'e_1' / 'optuna.db'}"
    study.check_usable("sqlite:///elsewhere.db")  # nothing to check before the search makes it
    assert not study.has_study("e_1") and not (tmp_path / "e_1").exists()


def test_a_password_never_prints(tmp_path: Path) -> None:
    study = StudyStorage("postgresql://skd:s3cret@db.internal:5432/optuna", tmp_path)
    assert str(study) == "postgresql://skd:***@db.internal:5432/optuna"
    assert "s3cret" not in study.describe("e_1")


def test_what_counts_as_the_same_database(tmp_path: Path) -> None:
    assert same_database(f"sqlite:///{tmp_path}/m.db", f"sqlite:///{tmp_path}/./m.db")
    assert not same_database(f"sqlite:///{tmp_path}/m.db", f"sqlite:///{tmp_path}/o.db")
    assert same_database("postgresql://u:a@h:5432/mlflow", "postgresql+psycopg://v@h:5432/mlflow")
    assert not same_database("postgresql://u@h:5432/mlflow", "postgresql://u@h:5432/optuna")
    assert not same_database("postgresql://u@h/mlflow", "http://h:5000")


def test_a_new_search_never_joins_a_study_of_its_name(postgres_db: str, tmp_path: Path) -> None:
    study = StudyStorage(postgres_db, tmp_path)
    study.check_usable("sqlite:///mlflow.db")  # creates Optuna's tables in the empty database
    assert not study.has_study("e_1")
    study.create_study("e_1", ["maximize"])
    assert study.has_study("e_1")
    with pytest.raises(SkdError, match="already holds a study named e_1, which belongs to another search"):
        study.create_study("e_1", ["maximize"])
    study.check_study("e_1")
    with pytest.raises(SkdError, match="study e_2 is not in"):
        study.check_study("e_2")


def test_a_database_that_refuses_optuna_tables_is_one_error(postgres_server: PostgresServer,
                                                            postgres_db: str, tmp_path: Path) -> None:
    """PostgreSQL 15 lets only a database's owner create tables in its public schema."""
    postgres_server.execute("DROP ROLE IF EXISTS skd_reader")
    postgres_server.execute("CREATE ROLE skd_reader LOGIN")
    url = postgres_db.replace("postgres@", "skd_reader@", 1)
    with pytest.raises(SkdError) as err:
        StudyStorage(url, tmp_path).check_usable()
    assert "cannot be used" in err.value.problem and "permission denied" in err.value.problem
    assert "--optuna-storage" in err.value.fix


def test_an_unreachable_database_is_one_error_in_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(SkdError, match="cannot be reached"):
        StudyStorage(f"postgresql://postgres:pw@127.0.0.1:{free_port()}/optuna", tmp_path).check_usable()
    assert time.monotonic() - started < 15


def test_the_mlflow_database_is_refused(postgres_db: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    with pytest.raises(SkdError, match="is the MLflow store's database"):
        StudyStorage(postgres_db.replace("postgresql://", "postgresql+psycopg://"), tmp_path).check_usable(postgres_db)
    MlflowClient(postgres_db).search_experiments()  # MLflow's tables
    with pytest.raises(SkdError, match="holds another application's tables"):
        StudyStorage(postgres_db, tmp_path).check_usable("sqlite:///mlflow.db")


def test_one_driver_per_study_in_postgresql(postgres_db: str, tmp_path: Path) -> None:
    study = StudyStorage(postgres_db, tmp_path)
    with study.hold("e_1"):
        with pytest.raises(SkdError, match="Optuna study e_1 in .* is in use by another live search driver"):
            with study.hold("e_1"):
                pass
        with study.hold("e_2"):  # another study of the same storage is free
            pass
    with study.hold("e_1"):  # released with its block
        pass


def test_a_resumed_search_reopens_its_study_where_it_moved(tmp_path: Path) -> None:
    """Ray Tune pickles the searcher with its storage, which connects as it is unpickled."""
    old, new = tmp_path / "old" / "e_1", tmp_path / "new" / "e_1"
    old.mkdir(parents=True)
    then = StudyStorage(None, old)
    storage = then.open()
    optuna.create_study(study_name="e_1", storage=storage).enqueue_trial({"x": 1.0})
    pickled = pickle.dumps(optuna.load_study(study_name="e_1", storage=storage))
    storage.engine.dispose()
    shutil.move(str(tmp_path / "old"), str(tmp_path / "new"))
    relocate({"storage": str(tmp_path / "old"), "optuna_storage": None}, StudyStorage(None, new), "e_1")
    try:
        study = pickle.loads(pickled)
        assert isinstance(study._storage._backend, RelocatableRDBStorage)
        assert study._storage._backend.url == f"sqlite:///{new / 'optuna.db'}"
        assert len(study.trials) == 1
    finally:
        RELOCATED.clear()
    assert not (old / "optuna.db").exists()  # nothing was made where the study was


HOLDER = """
import sys, time
from skd_ray.search.state.live import hold_search
with hold_search(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_one_live_driver_per_search_folder(tmp_path: Path) -> None:
    folder = tmp_path / "e_1"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SkdError) as err:
            with hold_search(folder):
                pass
        assert f"search e_1 is being run by another live process (pid {holder.pid} on " in err.value.problem
        assert "then resume" in err.value.fix
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a killed driver: the system drops its lock
        holder.wait()
    with hold_search(folder):
        with hold_search(folder):  # re-entrant: the command line holds it, then the search again
            assert (folder / LOCK_FILE).is_file()
    assert not (folder / LOCK_FILE).exists()  # released: nothing left behind


def test_a_search_started_in_the_same_second_takes_the_next_name(tmp_path: Path) -> None:
    first = claim_search_name(str(tmp_path), "e")
    second = claim_search_name(str(tmp_path), "e")  # the first's folder is there: the next second
    assert first < second and (tmp_path / first).is_dir() and (tmp_path / second).is_dir()
    asked: list[str] = []  # a study of the first name asked is in the Optuna storage already
    third = claim_search_name(str(tmp_path), "e", lambda name: asked.append(name) or len(asked) == 1)
    assert third == asked[-1] != asked[0] and len(asked) == 2
