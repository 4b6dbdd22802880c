"""Plots on a search's parent run and the Markdown report, from a real MLflow store (SQLite)
holding a finished search written by skd_ray.results.tracking with made-up numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from skd_ray.cli import main
from skd_ray.results import importance
from skd_ray.results.artifacts import log_search_plots, write_report
from skd_ray.results.plots import PLOTS
from skd_ray.results.store import MlflowStore
from tests.helpers.fake_search import BEST, TRIALS, write_fake_search


@pytest.fixture(autouse=True)
def importances_from_two_trials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake searches have 4 finished trials; a real one needs importance.MIN_TRIALS."""
    monkeypatch.setattr(importance, "MIN_TRIALS", 2)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One store, two searches: a cross-method one (every plot) and a one-trial one."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return {"uri": uri, "fake": write_fake_search(uri, root / "artifacts", "fake"),
            "single": write_fake_search(uri, root / "artifacts", "single", TRIALS[:1])}


def test_report_has_leaderboard_best_config_early_exit_and_plots(store: dict[str, str], tmp_path: Path) -> None:
    path = write_report(MlflowStore(store["uri"]), "fake", tmp_path / "report")
    assert path == tmp_path / "report" / "report.md"
    text = path.read_text()
    assert text.startswith("# Search `fake_20250101-000000`")
    assert "status **completed**" in text and "5 trials: 3 completed, 1 early_stopped, 1 failed" in text
    # Leaderboard: every trial, best first, failed last.
    ranks = re.findall(r"^\| (\d) \| (trial_\d+) \| (\w+) \|", text, flags=re.M)
    assert ranks == [("1", "trial_00000", "completed"), ("2", "trial_00001", "completed"),
                     ("3", "trial_00003", "completed"), ("4", "trial_00002", "early_stopped"),
                     ("5", "trial_00004", "failed")]
    assert "| 1 | trial_00000 | completed | 3 | 0.9000 | 0.7000 | 0.8000 | 0.9100 | byot | 0.3 |" in text
    # Best configuration: the searched values, and the full config as JSON.
    assert f"Trial `{BEST.name}` (completed, 3 epochs): best validation accuracy **0.9000**" in text
    assert "| method.alpha | 0.3 |" in text and "| optim.lr | 0.05 |" in text
    assert '"method.exits": [\n    1,\n    2\n  ]' in text
    # Early exit at the best epoch (2: val_acc 0.90), not at the last one (0.88).
    assert f"Trial `{BEST.name}` at its best epoch (2)" in text
    assert "| exit1 | 0.7000 | 0.300 |" in text and "| final | 0.9000 | 1.000 |" in text
    assert "| ensemble of all exits | 0.9100 | 1.100 |" in text
    assert "| dynamic early exit, threshold 0.9 | 0.8700 | 1.020 |" in text
    assert "| search.num_samples | 5 |" in text
    # Plots beside the page, linked relatively.
    for name in PLOTS:
        assert f"![{name}]({name}.png)" in text
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 1000
    assert "Not drawn" not in text


def test_plots_are_artifacts_of_the_parent_run(store: dict[str, str], capsys: pytest.CaptureFixture) -> None:
    logged = log_search_plots(MlflowStore(store["uri"]), "fake", store["fake"])
    assert logged is not None and logged.skipped == {}
    artifacts = {a.path: a.file_size for a in MlflowClient(store["uri"]).list_artifacts(store["fake"], "plots")}
    assert set(artifacts) == {f"plots/{name}.png" for name in PLOTS}
    assert all(size > 1000 for size in artifacts.values())
    assert capsys.readouterr().out.strip() == "plots: 6 logged to the search's MLflow run under plots/"


def test_plots_that_cannot_be_drawn_are_explained_in_the_parent_run(store: dict[str, str], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    logged = log_search_plots(MlflowStore(store["uri"]), "single", store["single"])
    assert logged is not None and set(logged.skipped) == {"param_importances", "parallel_coordinates",
                                                          "method_comparison"}
    out = capsys.readouterr().out
    assert "param_importances: needs at least 2 finished trials, the search has 1" in out
    client = MlflowClient(store["uri"])
    names = {a.path for a in client.list_artifacts(store["single"], "plots")}
    assert "plots/skipped.txt" in names and "plots/early_exit_tradeoff.png" in names
    skipped = Path(client.download_artifacts(store["single"], "plots/skipped.txt", str(tmp_path))).read_text()
    assert "Parameter importances (param_importances): needs at least 2 finished trials" in skipped
    report = write_report(MlflowStore(store["uri"]), "single", tmp_path / "single").read_text()
    assert "Not drawn:" in report and "- Best accuracy per method: needs finished trials of at least 2" in report


def test_a_plotting_problem_never_fails_the_search(store: dict[str, str], capsys: pytest.CaptureFixture) -> None:
    assert log_search_plots(MlflowStore(store["uri"]), "fake", "no-such-run-id") is None
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: no plots for this search (")


def test_cli_results_report_writes_the_latest_search(store: dict[str, str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    out_dir = tmp_path / "cli_report"
    assert main(["--results", "--report", str(out_dir), "--experiment", "fake", "--mlflow-uri", store["uri"]]) == 0
    out = capsys.readouterr().out
    assert "leaderboard of fake_20250101-000000" in out and f"report: {out_dir / 'report.md'}" in out
    assert "| 1 | trial_00000 |" in (out_dir / "report.md").read_text()
    assert main(["--report", str(out_dir), "--experiment", "fake", "--mlflow-uri", store["uri"]]) == 2
    assert capsys.readouterr().err.strip() == \
        "error: --report DIR writes the report of a finished search -- fix: add --results"
