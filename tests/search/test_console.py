"""The search's console (event lines, progress line, -q/-v, Ray's logs in a file) and the
summary a finished search writes onto its MLflow runs, without starting Ray."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from skd_ray.cli.common import browse_command, runs_table_url
from skd_ray.cli.main import build_parser
from skd_ray.cli.train_commands import verbosity_of
from skd_ray.results.names import Tags
from skd_ray.results.store import MlflowStore
from skd_ray.results.summary import summarise_search, trial_run_name
from skd_ray.search.console.progress import SearchProgress
from skd_ray.search.console.ray_logs import NORMAL, QUIET, VERBOSE, ray_logs_to_file, tune_verbosity
from skd_ray.search.space.definition import load_space
from skd_ray.search.tuning import numbering
from skd_ray.search.tuning.optuna_study import objective_metric
from tests.helpers.fake_search import BEST, TRIALS, write_fake_search

REPO = Path(__file__).resolve().parents[2]


class Out(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def trial(trial_id: str, status: str = "RUNNING", config: dict | None = None, last: dict | None = None):
    return SimpleNamespace(trial_id=trial_id, status=status, config=config or {}, last_result=last or {},
                           error_msg=None)


def progress(out: Out, monkeypatch: pytest.MonkeyPatch) -> SearchProgress:
    space = load_space(REPO / "search_spaces" / "byot.yaml", {})
    p = SearchProgress(space, num_samples=3, max_epochs=12, metric="val_acc", mode="max")
    monkeypatch.setattr(SearchProgress, "out", property(lambda self: out))
    return p


@pytest.mark.parametrize("tty", [False, True])
def test_one_line_per_trial_event_and_no_control_characters_off_a_terminal(tty, monkeypatch) -> None:
    numbering.NUMBERS.clear()
    numbering.register("a", 0)
    numbering.register("b", 1)
    out = Out(tty)
    p = progress(out, monkeypatch)
    a = trial("a", config={"optim.lr": 0.05})
    b = trial("b")
    p.on_trial_start(0, [a], a)
    p.on_trial_result(0, [a], a, {"epoch": 1, "val_acc": 0.5, "best_val_acc": 0.5})
    p.on_trial_start(0, [a, b], b)
    p.on_trial_result(0, [a, b], b, {"epoch": 2, "val_acc": 0.7, "best_val_acc": 0.8})
    b.status, b.last_result = "TERMINATED", {"epoch": 2}
    p.on_trial_complete(0, [a, b], b)
    a.status, a.last_result = "TERMINATED", {"epoch": 12}
    p.on_trial_result(0, [a, b], a, {"epoch": 12, "val_acc": 0.9, "best_val_acc": 0.95})
    p.on_trial_complete(0, [a, b], a)
    p.on_experiment_end([a, b])
    text = out.getvalue()
    assert "t00 started   lr=0.05" in text
    assert "t01 stopped by ASHA after epoch 2 (best val_acc 0.8000)" in text
    assert "t00 finished  best val_acc 0.9500 at epoch 12 of 12" in text
    assert "search ended: 2 done, 0 running, 1 pending | best val_acc 0.9500 (t00)" in text
    if tty:
        assert "\r\033[K" in text
    else:
        assert "\033" not in text and "\r" not in text
        assert text.count("\n") == 5 + text.count("progress:")


def test_progress_line_counts_and_eta(monkeypatch) -> None:
    numbering.NUMBERS.clear()
    p = progress(Out(False), monkeypatch)
    trials = [trial("x", "TERMINATED"), trial("y", "RUNNING")]
    text = p.progress_text(trials)
    assert text.startswith("progress: 1 done, 1 running, 1 pending | best val_acc -")
    assert "ETA ~" in text


def test_verbosity_flags() -> None:
    parse = build_parser().parse_args
    assert verbosity_of(parse([])) == NORMAL
    assert verbosity_of(parse(["-q"])) == QUIET
    assert verbosity_of(parse(["-v"])) == VERBOSE
    with pytest.raises(SystemExit):
        parse(["-q", "-v"])
    assert tune_verbosity(NORMAL) == 0 and tune_verbosity(QUIET) == 0 and tune_verbosity(VERBOSE) is None


def test_ray_logs_go_to_the_file_not_the_console(tmp_path: Path, capsys) -> None:
    log_file = tmp_path / "search" / "ray.log"
    with ray_logs_to_file(log_file, NORMAL) as used:
        logging.getLogger("ray.tune.execution").warning("a warning from Tune")
    assert used == log_file and "a warning from Tune" in log_file.read_text()
    captured = capsys.readouterr()
    assert "a warning from Tune" not in captured.out + captured.err
    with ray_logs_to_file(log_file, VERBOSE) as used:
        assert used is None


def test_optuna_learns_the_best_epoch_of_the_objective_in_its_direction() -> None:
    assert objective_metric("val_acc", "max") == "best_val_acc"
    assert objective_metric("val_acc.exit1", "max") == "best_val_acc.exit1"
    assert objective_metric("val_loss", "min") == "best_val_loss"  # the engine keeps its minimum
    assert objective_metric("best_val_acc", "max") == "best_val_acc"


def test_browse_hint_is_runnable_and_opens_the_runs_table(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    write_fake_search(uri, tmp_path / "artifacts", "fake")
    assert " -m mlflow ui --backend-store-uri " in browse_command(MlflowStore(uri))
    assert runs_table_url(MlflowStore(uri), "fake").endswith("/#/experiments/1/runs?workflowType=machine_learning")
    assert "experiment 'nope'" in runs_table_url(MlflowStore(uri), "nope")


def test_trial_run_name_shows_the_trial_and_an_asha_stop() -> None:
    values = {"method.exits": [1, 2], "method.alpha": 0.3, "method.temperature": 5.712, "optim.lr": 0.0123}
    assert trial_run_name("t03", "byot", values, "completed", 12) == "t03 byot alpha=0.3 T=5.71 lr=0.0123"
    # The mark follows the number: a narrow column of MLflow's runs table still shows it.
    assert trial_run_name("t04", "byot", values, "early_stopped", 2) == "t04 [ASHA@2] byot alpha=0.3 T=5.71 lr=0.0123"
    assert trial_run_name("t05", "vanilla", {}, "failed", 0) == "t05 [failed] vanilla"


def test_parent_run_summarises_the_search(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = write_fake_search(uri, tmp_path / "artifacts", "fake")
    c = MlflowClient(uri)
    exp_id = c.get_experiment_by_name("fake").experiment_id
    summary = summarise_search(MlflowStore(uri), exp_id, parent, "fake_20250101-000000", 3,
                               ["method.alpha", "optim.lr"])
    run = c.get_run(parent)
    m, tags = run.data.metrics, run.data.tags
    # Under the trials' grouped names, so MLflow's runs table and charts line them up.
    assert m["best/val/acc"] == pytest.approx(max(BEST.val_acc))
    assert m["best/val/acc.exit1"] == pytest.approx(max(BEST.val_acc) - 0.2)
    assert m["trials/completed"] == 3 and m["trials/early_stopped"] == 1 and m["trials/failed"] == 1
    ran = [t for t in TRIALS if t.val_acc]
    assert m["epochs/trained"] == sum(len(t.val_acc) for t in ran)
    assert m["epochs/without_early_stopping"] == 3 * len(ran)
    best_run = tags["skd.best_run_id"]
    assert c.get_run(best_run).data.tags[Tags.TRIAL_NAME] == tags["skd.best_trial"] == summary.best.name
    assert tags["skd.best.method.alpha"] == "0.3" and tags["skd.best.optim.lr"] == "0.05"
    assert f"#/experiments/{exp_id}/runs/{best_run}" in tags[Tags.NOTE]
    children = c.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    names = {r.info.run_name for r in children}
    assert any(" [ASHA@2] " in n for n in names) and any(" [failed] " in n for n in names)
    assert all(r.data.tags[Tags.NOTE].startswith("Trial **") for r in children)
