"""The Optuna study in a database named by --optuna-storage, on a real PostgreSQL 15 (a fresh
database per test): a tiny search keeps its study there (no optuna.db in its folder), the
search's saved state and its MLflow parent run name the URL with the password masked,
optuna-dashboard opens the study from the database, `results` reads the search back and
`resume` reopens the same study. A search interrupted and resumed after its study's database
was copied to another one (`resume --optuna-storage`) goes on in the copy, while a second
resume of it at the same moment is refused in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.mlflow_server import stop
from tests.helpers.ports import free_port
from tests.helpers.postgres import PostgresServer
from tests.helpers.searches import child_runs, write_space

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SKD_RAY = str(BIN / "skd-ray")
PASSWORD = "s3cret-pw"  # the test server trusts loopback: the password is never checked, and must never print


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def tiny_space(tmp_path: Path, epochs: int = 2) -> Path:
    return write_space(tmp_path / "space.yaml", **{"train.epochs": epochs, "train.threads": 1})


def study_of(url: str, name: str) -> Any:
    import optuna

    return optuna.load_study(study_name=name, storage=url)


def dashboard_studies(url: str, log: Path, timeout: float = 180) -> list[dict[str, Any]]:
    """optuna-dashboard started on `url` as a subprocess: the studies its /api/studies lists."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "optuna-dashboard"), url, "--port", str(port), "--host", "127.0.0.1"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as answer:
                    assert answer.status == 200
                    return json.loads(answer.read())["study_summaries"]
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, f"optuna-dashboard exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"optuna-dashboard did not answer:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
    finally:
        stop(proc)  # by its PID (its own process group)


def test_a_search_keeps_its_study_in_postgresql_and_optuna_dashboard_opens_it(
        cli, tmp_path: Path, postgres_db: str) -> None:
    url = with_password(postgres_db)
    masked = url.replace(PASSWORD, "***")
    storage = tmp_path / "results"
    res = cli("--config", str(tiny_space(tmp_path)), "--num-samples", "2", "--grace-period", "2",
              "--storage", str(storage), "--experiment", "pgstudy", "--seed", "0", "--optuna-storage", url,
              timeout=600)
    assert res.returncode == 0, res.stdout[-5000:]
    assert PASSWORD not in res.stdout
    (folder,) = storage.glob("pgstudy_*")
    assert not (folder / "optuna.db").exists()  # nothing fell back to the default file
    saved = json.loads((folder / "skd_search.json").read_text())
    assert saved["request"]["optuna_storage"] == url  # what a resume reopens

    import optuna

    study = study_of(url, folder.name)
    assert len(study.trials) == 2 and {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}
    parent, children = child_runs(cli.mlflow_uri, "pgstudy")
    assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == {c.info.run_id for c in children}
    note = parent.data.tags["mlflow.note.content"]
    assert f"Optuna study: {folder.name} in {masked}" in note and PASSWORD not in note, note
    assert parent.data.params["search.optuna_storage"] == masked

    studies = dashboard_studies(url, tmp_path / "dashboard.log")
    assert [s["study_name"] for s in studies] == [folder.name]
    assert studies[0]["directions"] == ["maximize"]

    shown = cli.run([SKD_RAY, "results", "--experiment", "pgstudy", "--mlflow-uri", cli.mlflow_uri], timeout=180)
    assert shown.returncode == 0 and f"leaderboard of {folder.name}" in shown.stdout, shown.stdout[-3000:]
    again = cli.run([SKD_RAY, "resume", "--experiment", "pgstudy", "--storage", str(storage)], timeout=180)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "already ended (completed); nothing to resume" in again.stdout, again.stdout[-3000:]
    assert PASSWORD not in shown.stdout + again.stdout


def wait_for(predicate: Any, what: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout:.0f}s:\n{log.read_text()[-4000:]}"
        time.sleep(1)


def test_resume_reopens_the_study_where_it_was_moved_and_a_second_resume_is_refused(
        cli, tmp_path: Path, postgres_server: PostgresServer, postgres_db: str) -> None:
    import optuna

    storage = tmp_path / "results"
    log = tmp_path / "search.log"
    proc = cli.start("--config", str(tiny_space(tmp_path, epochs=4)), "--num-samples", "3", "--max-concurrent", "1",
                     "--no-early-stopping", "--storage", str(storage), "--experiment", "moved", "--seed", "0",
                     "--optuna-storage", postgres_db, log=log)
    wait_for(lambda: "t00 finished" in log.read_text(), "the first trial's end", 480, log)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: Tune saves its state, the runs close as interrupted
    assert proc.wait(timeout=180) == 130, log.read_text()[-4000:]
    (folder,) = storage.glob("moved_*")
    before = study_of(postgres_db, folder.name)
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in before.trials)

    # The database moves: a copy under another name, and the old one is gone.
    old = postgres_db.rsplit("/", 1)[1]
    postgres_server.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{old}'")
    postgres_server.execute(f'CREATE DATABASE "{old}_moved" TEMPLATE "{old}"')
    postgres_server.execute(f'DROP DATABASE "{old}" WITH (FORCE)')
    moved = postgres_server.url(f"{old}_moved")

    resume = [SKD_RAY, "resume", "--experiment", "moved", "--storage", str(storage), "--optuna-storage", moved]
    logs = [tmp_path / "resume1.log", tmp_path / "resume2.log"]
    procs = []
    for path in logs:
        with open(path, "w") as out:
            procs.append(subprocess.Popen(resume, cwd=cli.workdir, env=cli.env, stdout=out, stderr=subprocess.STDOUT,
                                          text=True, start_new_session=True))
    cli.background.extend(procs)
    codes = [p.wait(timeout=900) for p in procs]
    outputs = [path.read_text() for path in logs]
    refused = [out for code, out in zip(codes, outputs) if code == 2]
    assert sorted(codes) == [0, 2], outputs
    errors = [line for line in refused[0].splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"search {folder.name} is being run by another live process" in errors[0], refused
    assert "Traceback" not in refused[0]

    # The resumed search went on in the copy: the trial numbers go on, and every trial's run is a
    # child of the search's one parent run.
    done = [t for t in study_of(moved, folder.name).trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3 and [t.number for t in done][:1] == [0]
    parent, children = child_runs(cli.mlflow_uri, "moved")
    assert parent.data.tags["skd.status"] == "completed"
    finished = {c.info.run_id for c in children if c.data.tags["skd.status"] == "completed"}
    assert {t.user_attrs["mlflow_run_id"] for t in done} == finished
