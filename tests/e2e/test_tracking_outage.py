"""The MLflow tracking server goes away during a real search and comes back (or does not).

A real `mlflow server` on a fixed loopback port is stopped once the search's first trial has
logged an epoch, and started again on the same port and store a minute later: no trial fails,
every epoch, param, tag and checkpoint reaches MLflow, the console says once that the server is
unreachable and once that it is back, and the parent run summarises every trial. A server that
stays away past --tracking-outage-limit stops the search as Ctrl-C does, with one error line,
and `resume` finishes it once the server is back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.cli_run import CliRun
from tests.helpers.mlflow_server import stop, wait_until_up
from tests.helpers.ports import free_port

pytestmark = pytest.mark.slow

EPOCHS = 6
TRIALS = 4


class RestartableServer:
    """`mlflow server` on one port and one SQLite store, stopped and started again at will."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port = workdir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.workdir / f"mlflow_server_{self.starts}.log"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("mlflow")), "server",
                 "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
                 "--artifacts-destination", str(self.workdir / "mlartifacts"),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_up(self.url, self.proc, log)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@pytest.fixture
def server(tmp_path: Path):
    srv = RestartableServer(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def write_space(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "description": "outage test",
        "fixed": {"method": "vanilla", "data.name": "digits", "data.val_fraction": 0.2, "data.train_subset": 400,
                  "model.backbone": "resnet_small", "model.width": 4, "train.epochs": EPOCHS},
        "params": {"optim.lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True, "default": 0.05}},
    }))
    return path


def client(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(url)


def trial_runs(url: str, experiment: str) -> tuple[Any, list[Any]]:
    c = client(url)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None, []
    parents = c.search_runs([exp.experiment_id], "tags.`skd.kind` = 'search'")
    if not parents:
        return None, []
    children = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    return parents[0], children


def wait_for_first_epoch(url: str, experiment: str, search: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Until some trial has logged an epoch (the search is under way, past its start-up checks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert search.poll() is None, log.read_text()[-4000:]
        _, children = trial_runs(url, experiment)
        if any(r.data.metrics.get("epoch", 0) >= 1 for r in children):
            return
        time.sleep(1)
    pytest.fail(f"no trial logged an epoch within {timeout}s:\n{log.read_text()[-4000:]}")


def wait_for_exit(search: subprocess.Popen, log: Path, timeout: float) -> str:
    try:
        search.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the search did not end within {timeout}s:\n{log.read_text()[-4000:]}")
    return log.read_text()


def assert_complete(url: str, experiment: str, resumed: bool = False) -> None:
    """Every trial completed with every epoch logged (once, unless `resumed`: a trial restarted
    from its last checkpoint logs the epochs after it again, and readers take the latest value
    of a step), its params, tags and checkpoint; the parent summarises them all."""
    c = client(url)
    parent, children = trial_runs(url, experiment)
    assert len(children) == TRIALS
    for run in children:
        assert run.data.tags["skd.status"] == "completed", run.data.tags
        steps = [m.step for m in c.get_metric_history(run.info.run_id, "val/acc")]
        if resumed:
            assert sorted(set(steps)) == list(range(1, EPOCHS + 1)), steps
        else:
            assert sorted(steps) == list(range(1, EPOCHS + 1)), steps  # each epoch once
        assert "optim.lr" in run.data.params and run.data.tags["skd.method"] == "vanilla"
        assert "best_checkpoint.pt" in {a.path for a in c.list_artifacts(run.info.run_id)}
    assert parent.data.tags["skd.status"] == "completed"
    assert parent.data.metrics["trials/completed"] == TRIALS
    assert parent.data.tags["skd.best_run_id"] in {r.info.run_id for r in children}


def away_for_a_minute(search: subprocess.Popen, log: Path, stop: Any, start: Any, what: str) -> str:
    """`stop()` a service the running search uses, check a minute later that the search still
    runs, `start()` it again; the search's whole output once it ends."""
    stop()
    time.sleep(60)
    assert search.poll() is None, f"the search ended without its {what}:\n" + log.read_text()[-4000:]
    start()
    return wait_for_exit(search, log, 600)


def start_search(cli: CliRun, root: Path, url: str, experiment: str, *extra: str) -> tuple[subprocess.Popen, Path]:
    log = root / f"{experiment}.log"
    search = cli.start("--config", str(write_space(root / "space.yaml")), "--storage", str(root / "results"),
                       "--mlflow-uri", url, "--experiment", experiment, "--num-samples", str(TRIALS),
                       "--no-early-stopping", "--max-concurrent", "2", *extra, log=log)
    return search, log


def test_a_server_that_comes_back_after_a_minute_loses_nothing(server: RestartableServer, tmp_path: Path) -> None:
    cli = CliRun(tmp_path)
    try:
        search, log = start_search(cli, tmp_path, server.url, "outage")
        wait_for_first_epoch(server.url, "outage", search, log)
        out = away_for_a_minute(search, log, server.stop, server.start, "MLflow server")
    finally:
        cli.cleanup()
    assert search.returncode == 0, out[-4000:]
    lines = out.splitlines()
    assert sum("is unreachable" in line for line in lines) == 1, out[-4000:]
    assert sum(" is back after " in line for line in lines) == 1, out[-4000:]
    assert f"{TRIALS} trials, 0 failed;" in out, out[-4000:]  # no trial failed for the outage
    assert f"browse: {server.url}/#/experiments/" in out
    assert_complete(server.url, "outage")


def test_a_server_away_past_the_bound_stops_the_search_and_resume_finishes_it(
        server: RestartableServer, tmp_path: Path) -> None:
    cli = CliRun(tmp_path)
    try:
        search, log = start_search(cli, tmp_path, server.url, "bounded", "--tracking-outage-limit", "20")
        wait_for_first_epoch(server.url, "bounded", search, log)
        server.stop()
        out = wait_for_exit(search, log, 240)
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert search.returncode != 0, out[-4000:]
        assert len(errors) == 1 and "the search stopped: MLflow server" in errors[0], out[-4000:]
        assert "skd-ray resume" in errors[0]
        assert "Traceback" not in out, out[-4000:]
        server.start()
        res = cli("--resume", "--experiment", "bounded", "--storage", str(tmp_path / "results"),
                  "--mlflow-uri", server.url, timeout=600)
    finally:
        cli.cleanup()
    assert res.returncode == 0, res.stdout[-4000:]
    assert_complete(server.url, "bounded", resumed=True)


def test_the_optuna_database_restarting_fails_no_trial(postgres_server: Any, postgres_db: str, tmp_path: Path) -> None:
    """The search's Optuna study in PostgreSQL (--optuna-storage); the database is stopped once a
    trial has logged an epoch and started again a minute later: the search finishes with every
    trial in its study and in MLflow, and says so once each way."""
    import optuna

    cli = CliRun(tmp_path)
    try:
        search, log = start_search(cli, tmp_path, cli.mlflow_uri, "study_outage", "--optuna-storage", postgres_db)
        wait_for_first_epoch(cli.mlflow_uri, "study_outage", search, log)
        out = away_for_a_minute(search, log, postgres_server.stop, postgres_server.start, "study's database")
    finally:
        if postgres_server.proc is None:
            postgres_server.start()
        cli.cleanup()
    assert search.returncode == 0, out[-4000:]
    lines = out.splitlines()
    assert sum("warning: Optuna storage" in line and "is unreachable" in line for line in lines) == 1, out[-4000:]
    assert sum(line.startswith("Optuna storage") and " is back after " in line for line in lines) == 1, out[-4000:]
    assert f"{TRIALS} trials, 0 failed;" in out, out[-4000:]
    assert_complete(cli.mlflow_uri, "study_outage")
    (summary,) = optuna.get_all_study_summaries(postgres_db)
    study = optuna.load_study(study_name=summary.study_name, storage=postgres_db)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * TRIALS
