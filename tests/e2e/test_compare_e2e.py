"""A method comparison end to end with real Ray, Optuna and MLflow: vanilla against TFD (2
trials of 1 epoch each, 2 seeds, digits, a width-8 model), interrupted with Ctrl-C while the
second method's search runs, resumed and killed (SIGKILL) once the final evaluations start, then
resumed again: the finished search is kept, the interrupted one continues in its own runs, the
killed final evaluation is closed and run again, and the comparison ends with its table,
artifacts and report."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.runs import interrupt, wait_for, wait_until_gone

pytestmark = pytest.mark.slow

EXPERIMENT = "cmp"


def client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(uri)


def runs(uri: str, filter_string: str) -> list[Any]:
    c = client(uri)
    exp = c.get_experiment_by_name(EXPERIMENT)
    return [] if exp is None else c.search_runs([exp.experiment_id], filter_string, max_results=1000)


def state_file(storage: Path) -> Path:
    found = list(storage.glob(f"{EXPERIMENT}_*/skd_compare.json"))
    assert len(found) == 1, found
    return found[0]


def tfd_trial_running(uri: str) -> bool:
    searches = runs(uri, "tags.`skd.kind` = 'search' and tags.`skd.compare_method` = 'tfd'")
    return bool(searches) and bool(runs(uri, f"tags.`mlflow.parentRunId` = '{searches[0].info.run_id}'"))


def test_compare_interrupted_then_resumed(cli, tmp_path: Path) -> None:
    storage = tmp_path / "results"
    uri = cli.mlflow_uri
    log = tmp_path / "compare.log"
    proc = cli.start("--compare", "tfd", "--num-samples", "2", "--max-epochs", "1", "--seeds", "2",
                     "--dataset", "digits", "--set", "model.width=8", "--storage", str(storage),
                     "--experiment", EXPERIMENT, "--seed", "0", log=log)
    wait_for(lambda: json.loads(state_file(storage).read_text())["steps"][0]["search_done"], proc, log, 240,
             "vanilla's finished search")
    wait_for(lambda: tfd_trial_running(uri), proc, log, 120, "a trial of tfd's search")
    output = interrupt(proc, log, "the comparison")
    assert proc.returncode == 130, output[-5000:]
    assert f"continue with --resume --experiment {EXPERIMENT}" in output
    state = json.loads(state_file(storage).read_text())
    assert [s["method"] for s in state["steps"]] == ["vanilla", "tfd"]
    assert state["steps"][0]["search_done"] and not state["steps"][1]["final_done"]
    (compare_run,) = runs(uri, "tags.`skd.kind` = 'compare'")
    assert compare_run.data.tags["skd.status"] == "interrupted"
    vanilla_search = state["steps"][0]["search_run_id"]

    # Resumed, then killed (SIGKILL, as a lost driver) once the first final evaluation starts.
    log2 = tmp_path / "resume.log"
    proc = cli.start("--resume", "--storage", str(storage), "--experiment", EXPERIMENT, log=log2)
    wait_for(lambda: runs(uri, "tags.`skd.kind` = 'final'"), proc, log2, 300, "a final evaluation")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "searches done: vanilla" in log2.read_text()
    assert not wait_until_gone(str(cli.ray_tmp), 60), "the killed driver's Ray outlived it"

    res = cli("--resume", "--storage", str(storage), "--experiment", EXPERIMENT, timeout=400)
    assert res.returncode == 0, log2.read_text()[-3000:] + "\n--- resume:\n" + res.stdout[-6000:]
    assert "resuming comparison" in res.stdout and "searches done: vanilla, tfd" in res.stdout
    assert "p (paired t)" in res.stdout and "\ntfd " in res.stdout
    assert "Configuration for experiment" not in res.stdout and "tensorboard" not in res.stdout, res.stdout[-3000:]

    state = json.loads(state_file(storage).read_text())
    assert state["finished"] and all(s["search_done"] and s["final_done"] for s in state["steps"])
    assert state["steps"][0]["search_run_id"] == vanilla_search  # kept, not searched again
    searches = runs(uri, "tags.`skd.kind` = 'search'")
    assert sorted(r.data.tags["skd.compare_method"] for r in searches) == ["tfd", "vanilla"]
    for search in searches:  # every search ran its 2 trials once, in its own runs
        trials = runs(uri, f"tags.`mlflow.parentRunId` = '{search.info.run_id}'")
        assert len(trials) == 2 and {t.data.tags["skd.status"] for t in trials} <= {"completed", "early_stopped"}
        assert search.data.tags["mlflow.parentRunId"] == compare_run.info.run_id
    finals = runs(uri, "tags.`skd.kind` = 'final'")
    kept = [r for r in finals if r.data.tags.get("skd.status") == "completed"]
    assert sorted(r.data.tags["skd.compare_method"] for r in kept) == ["tfd", "vanilla"]
    assert {r.info.run_id for r in kept} == {s["final_run_id"] for s in state["steps"]}
    superseded = [r for r in finals if r not in kept]
    assert superseded, "the kill landed in no final evaluation"
    for final in superseded:  # the killed final evaluation is closed, not left running
        assert final.data.tags.get("skd.status") == "failed" and "retrained" in final.data.tags["skd.failure_reason"]
        assert final.info.status == "FAILED"
    for final in kept:
        retrained = runs(uri, f"tags.`mlflow.parentRunId` = '{final.info.run_id}'")
        assert sorted(int(r.data.params["train.seed"]) for r in retrained) == [0, 1]
        assert all(0 <= r.data.metrics["test/acc"] <= 1 for r in retrained)

    done = client(uri).get_run(compare_run.info.run_id)
    assert done.data.tags["skd.status"] == "completed"
    assert done.data.tags["skd.compare.search.vanilla"] == vanilla_search
    assert vanilla_search in done.data.tags["mlflow.note.content"]
    artifacts = {a.path for a in client(uri).list_artifacts(compare_run.info.run_id)}
    assert {"comparison.md", "comparison.csv", "comparison.json", "comparison.png"} <= artifacts
    for method in ("vanilla", "tfd"):
        assert 0 <= done.data.metrics[f"test_acc_mean.{method}"] <= 1
    assert "p_value.tfd" in done.data.metrics or "diff_vs_vanilla.tfd" in done.data.metrics

    report = tmp_path / "report"
    res = cli("--results", "--report", str(report), "--experiment", EXPERIMENT, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "| vanilla |" in (report / "report.md").read_text()
    with open(report / "comparison.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["vanilla", "tfd"]
    assert all(r["seeds_finished"] == "2" for r in table)
    assert (report / "comparison.png").stat().st_size > 0
