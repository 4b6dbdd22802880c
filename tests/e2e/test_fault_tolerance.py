"""Failures during a real search: a Ray Train worker process killed mid-trial, the whole
driver killed (SIGKILL) or interrupted (Ctrl-C) mid-search then continued with `--resume`.
Checked through MLflow, Ray's storage and the Optuna study, as a user would see them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from skd_ray.results.store import MlflowStore
from tests.helpers.runs import (
    FINISHED,
    check_resumed_history,
    children,
    cmdline,
    descendants,
    interrupt,
    steps,
    train_workers,
    wait_for,
    wait_for_epochs,
    wait_until_gone,
)
from tests.helpers.searches import write_space

pytestmark = pytest.mark.slow



def test_killed_worker_resumes_from_checkpoint(cli, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    epochs = 6
    space = write_space(tmp_path / "space.yaml", **{"train.epochs": epochs, "train.batch_size": 16})
    log = tmp_path / "search.log"
    proc = cli.start("--config", str(space), "--num-samples", "1", "--workers-per-trial", "2",
                     "--storage", str(tmp_path / "results"), "--experiment", "killworker", "--seed", "0", log=log)
    uri = cli.mlflow_uri

    run = wait_for_epochs(uri, "killworker", 2, proc, log)
    workers = train_workers(proc.pid)
    assert len(workers) == 2, (workers, [cmdline(p) for p in descendants(proc.pid)])
    victim = min(workers)
    cut_ms = int(time.time() * 1000)
    os.kill(victim, signal.SIGKILL)
    # Train replaces the whole worker group: new worker processes, none of the old ones.
    wait_for(lambda: (w := train_workers(proc.pid)) and not (w & workers), proc, log, 120,
             "a new worker group")
    try:
        proc.wait(timeout=240)
    except Exception:
        pytest.fail(f"the search did not finish after the worker was killed:\n{log.read_text()[-5000:]}")
    output = log.read_text()
    assert proc.returncode == 0, output[-5000:]
    # Train's placement-group cleaner reached this cluster's state API (other Ray instances
    # on the machine must not confuse it, or stopped trials would leak their workers).
    assert "Found multiple active Ray instances" not in output
    assert "Failed to query Ray Train Controller actor state" not in output

    runs = children(uri, "killworker")
    assert len(runs) == 1, "the restarted trial opened a second MLflow run"
    assert runs[0].info.run_id == run.info.run_id
    final = MlflowClient(uri).get_run(run.info.run_id)
    assert final.data.tags["skd.status"] == "completed" and final.info.status == "FINISHED"
    # The pool told the trial why it failed before Tune restarted it (the dead peer, as gloo saw it).
    assert "gloo" in final.data.tags.get("skd.last_error", "") or "pool" in final.data.tags.get("skd.last_error", ""), \
        final.data.tags
    assert final.data.metrics["epoch"] == epochs
    check_resumed_history(steps(uri, run.info.run_id), cut_ms, epochs)


def trial_processes(driver_pid: int) -> set[int]:
    """PIDs of the Tune trial actors (`ray::ImplicitFunc...`) under this search's driver."""
    return {p for p in descendants(driver_pid) if cmdline(p).startswith("ray::ImplicitFunc")}


def test_killed_trial_process_resumes_from_checkpoint(cli, tmp_path: Path) -> None:
    """A one-worker trial trains in its Tune trial process; killing that process makes Tune
    restart the trial from its last checkpoint, in the same MLflow run."""
    from mlflow import MlflowClient

    epochs = 6
    space = write_space(tmp_path / "space.yaml", **{"train.epochs": epochs, "train.batch_size": 16})
    log = tmp_path / "search.log"
    proc = cli.start("--config", str(space), "--num-samples", "1", "--storage", str(tmp_path / "results"),
                     "--experiment", "killtrial", "--seed", "0", log=log)
    uri = cli.mlflow_uri

    run = wait_for_epochs(uri, "killtrial", 2, proc, log)
    victims = trial_processes(proc.pid)
    assert len(victims) == 1, [cmdline(p) for p in descendants(proc.pid)]
    assert not train_workers(proc.pid), "a one-worker trial should not start Ray Train workers"
    cut_ms = int(time.time() * 1000)
    os.kill(victims.pop(), signal.SIGKILL)
    try:
        proc.wait(timeout=240)
    except Exception:
        pytest.fail(f"the search did not finish after the trial process was killed:\n{log.read_text()[-5000:]}")
    assert proc.returncode == 0, log.read_text()[-5000:]
    runs = children(uri, "killtrial")
    assert len(runs) == 1, "the restarted trial opened a second MLflow run"
    final = MlflowClient(uri).get_run(run.info.run_id)
    assert final.data.tags["skd.status"] == "completed" and final.info.status == "FINISHED"
    assert final.data.tags["skd.executor"] == "trial_process"
    assert final.data.metrics["epoch"] == epochs
    check_resumed_history(steps(uri, run.info.run_id), cut_ms, epochs)
    # Start-up is measured on the first epoch each process trains (again after the restart).
    assert len(MlflowClient(uri).get_metric_history(run.info.run_id, "time/startup_s")) == 2


def trial_snapshot(uri: str, run: Any) -> tuple:
    from mlflow import MlflowClient

    info = MlflowClient(uri).get_run(run.info.run_id)
    return (info.info.status, info.info.end_time, info.data.tags["skd.status"],
            [s for s, _ in steps(uri, run.info.run_id)])


def test_driver_killed_then_resume(cli, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    samples, epochs = 3, 4
    # Small batches make an epoch last long enough (~1-2 s) to kill the driver inside a trial.
    space = write_space(tmp_path / "space.yaml", **{"train.epochs": epochs, "train.batch_size": 16})
    text = yaml.safe_load(space.read_text())
    text["params"]["optim.lr"] = {"type": "float", "low": 0.01, "high": 0.1, "log": True, "default": 0.05}
    space.write_text(yaml.safe_dump(text))
    args = ("--config", str(space), "--num-samples", str(samples), "--max-concurrent", "1",
            "--grace-period", str(epochs), "--storage", str(tmp_path / "results"), "--experiment", "resume",
            "--seed", "0", "--mlflow-uri", cli.mlflow_uri)
    log = tmp_path / "search.log"
    proc = cli.start(*args, log=log)
    uri = cli.mlflow_uri

    def known_to_saved_state(run: Any) -> bool:
        """Tune saves the search state every second; a trial it never recorded is replaced on
        resume instead of continued (covered by the abandoned-trial test below)."""
        trial_id = run.data.tags["skd.ray_trial_id"]
        return any(trial_id in f.read_text() for f in (tmp_path / "results").glob("resume_*/experiment_state-*.json"))

    def one_done_one_midway() -> Any:
        runs = children(uri, "resume")
        done = [r for r in runs if r.data.tags["skd.status"] in FINISHED]
        running = [r for r in runs if r.data.tags["skd.status"] == "running"
                   and 2 <= len(steps(uri, r.info.run_id)) < epochs and known_to_saved_state(r)]
        return done and running and (done, running[0])

    done, interrupted = wait_for(one_done_one_midway, proc, log, 400, "a finished and a half-way trial")
    parent_id = interrupted.data.tags["mlflow.parentRunId"]
    before = {r.info.run_id: trial_snapshot(uri, r) for r in done}
    cut_ms = int(time.time() * 1000)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first_output = log.read_text()
    # The local Ray the search started went down with it (nothing left to confuse the resume).
    leftovers = wait_until_gone(str(cli.ray_tmp), timeout=60)
    assert not leftovers, leftovers

    # Only where the search lives is repeated: its settings come from the storage.
    res = cli("--resume", "--storage", str(tmp_path / "results"), "--experiment", "resume", timeout=500)
    assert res.returncode == 0, first_output[-3000:] + "\n--- resume:\n" + res.stdout[-5000:]

    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED", parent.info
    runs = children(uri, "resume")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent_id}
    assert len(client.search_runs([parent.info.experiment_id], "tags.`skd.kind` = 'search'")) == 1
    trial_ids = [r.data.tags["skd.ray_trial_id"] for r in runs]
    assert len(runs) == samples and len(set(trial_ids)) == samples, trial_ids
    assert all(r.data.tags["skd.status"] in FINISHED and r.info.status == "FINISHED" for r in runs), \
        [(r.data.tags["skd.status"], r.info.status) for r in runs]
    # Trials that had finished were not run again; their runs are as they were.
    for run_id, snapshot in before.items():
        assert trial_snapshot(uri, client.get_run(run_id)) == snapshot
    # The interrupted trial continued in its own run, from its last checkpoint.
    resumed = client.get_run(interrupted.info.run_id)
    assert resumed.data.tags["skd.status"] == "completed"
    check_resumed_history(steps(uri, resumed.info.run_id), cut_ms, epochs)

    import optuna

    (db,) = (tmp_path / "results").glob("resume_*/optuna.db")
    study = optuna.load_study(study_name=db.parent.name, storage=f"sqlite:///{db}")
    states = [t.state for t in study.trials]
    assert len(study.trials) == samples, states
    assert all(s == optuna.trial.TrialState.COMPLETE for s in states), states
    lrs = sorted(float(r.data.params["optim.lr"]) for r in runs)
    assert lrs == pytest.approx(sorted(t.params["optim.lr"] for t in study.trials))


def test_abandoned_trial_runs_are_closed_once_the_search_ends(tmp_path: Path) -> None:
    """What a killed driver started after Ray Tune last saved its state (a child run, an Optuna
    trial) is unknown to the resumed search: once every trial has ended, it is closed as failed
    instead of staying 'running' forever; finished runs and trials are left alone."""
    import optuna
    from mlflow import MlflowClient

    from skd_ray.results.tracking import SearchRuns
    from skd_ray.search.state.study import StudyStorage
    from skd_ray.search.tuning.tuner import close_abandoned

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = SearchRuns.start(MlflowStore(uri), "abandoned", "search", {}, {})
    done = runs.start_trial("t_done", "t_done", {"optim.lr": 0.1}, {})
    runs.close(done, "completed")
    orphan = runs.start_trial("t_orphan", "t_orphan", {"optim.lr": 0.2}, {})
    db = tmp_path / "optuna.db"
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{db}", direction="maximize")
    study.tell(study.ask(), 0.9)
    study.ask()  # RUNNING, never told

    close_abandoned(runs, StudyStorage(None, tmp_path), "s")

    client = MlflowClient(uri)
    run = client.get_run(orphan)
    assert run.data.tags["skd.status"] == "failed" and run.info.status == "FAILED"
    assert "abandoned" in run.data.tags["skd.failure_reason"]
    assert client.get_run(done).data.tags["skd.status"] == "completed"
    states = [t.state for t in optuna.load_study(study_name="s", storage=f"sqlite:///{db}").trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]


def test_ctrl_c_marks_the_search_interrupted_and_resume_finishes_it(cli, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the terminal's process group): Ray Tune saves its state and returns;
    the search must not be recorded as completed, and --resume finishes the same runs. With 2
    workers per trial, so the DDP pool stops with the search and the resumed search (restored
    from Tune's saved state) starts a new one; a one-worker trial is killed and resumed above."""
    from mlflow import MlflowClient

    epochs = 3
    space = write_space(tmp_path / "space.yaml", **{"train.epochs": epochs, "train.batch_size": 16})
    args = ("--config", str(space), "--num-samples", "1", "--workers-per-trial", "2",
            "--storage", str(tmp_path / "results"), "--experiment", "ctrlc", "--seed", "0")
    log = tmp_path / "search.log"
    proc = cli.start(*args, log=log)
    uri = cli.mlflow_uri
    run = wait_for(lambda: (runs := children(uri, "ctrlc")) and steps(uri, runs[0].info.run_id) and runs[0],
                   proc, log, 240, "a logged epoch")
    output = interrupt(proc, log, "the search")
    assert proc.returncode == 130, output[-5000:]
    assert "continue with --resume" in output
    client = MlflowClient(uri)
    parent_id = run.data.tags["mlflow.parentRunId"]
    parent, child = client.get_run(parent_id), client.get_run(run.info.run_id)
    assert (parent.data.tags["skd.status"], parent.info.status) == ("interrupted", "KILLED")
    if child.data.metrics.get("epoch", 0) < epochs:  # SIGINT may land after the last epoch
        assert (child.data.tags["skd.status"], child.info.status) == ("interrupted", "KILLED")
    assert not wait_until_gone(str(cli.ray_tmp), timeout=60)

    res = cli("--resume", "--storage", str(tmp_path / "results"), "--experiment", "ctrlc", timeout=300)
    assert "with its saved settings" in res.stdout
    assert res.returncode == 0, res.stdout[-5000:]
    parent, child = client.get_run(parent_id), client.get_run(run.info.run_id)
    assert (parent.data.tags["skd.status"], parent.info.status) == ("completed", "FINISHED")
    assert (child.data.tags["skd.status"], child.info.status) == ("completed", "FINISHED")
    assert len(children(uri, "ctrlc")) == 1
    logged = [s for s, _ in steps(uri, run.info.run_id)]
    assert sorted(set(logged)) == list(range(1, epochs + 1)) and logged[0] == 1, logged
