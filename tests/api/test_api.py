"""The Python API (`skd_ray.run_search`, `compare`, `search_results`): what `import skd_ray` costs, that its
options match the command line's, that bad input raises SkdError before Ray starts, and one
real search (Ray, Optuna, MLflow) whose answer is checked against what MLflow holds."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import skd_ray
from skd_ray.errors import SkdError
from tests.helpers.cli_run import REPO
from tests.helpers.searches import write_space

# API keyword -> (argparse destination, whether the API's value is the flag's negation).
RENAMED = {"early_stopping": ("no_early_stopping", True), "default_trial": ("no_default_trial", True),
           "methods": ("compare", False)}


def test_import_loads_no_heavy_library() -> None:
    """`import skd_ray` (a Ray worker, a plugin, a tool reading __version__) loads neither Ray,
    Optuna, MLflow nor torch: the API is imported on first use."""
    code = ("import sys, skd_ray; skd_ray.__version__; "
            "print(sorted(m for m in ('ray', 'optuna', 'mlflow', 'torch', 'skd_ray.api') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_public_names_are_the_api_and_leave_the_subpackages_alone() -> None:
    """The functions are named apart from the subpackages (skd_ray.search, skd_ray.results), so
    importing those binds nothing over them."""
    import skd_ray.results.leaderboard  # noqa: F401
    import skd_ray.search.space.definition  # noqa: F401
    from skd_ray import api

    assert skd_ray.run_search is api.run_search and skd_ray.search_results is api.search_results
    assert skd_ray.search.space.definition.load_space and skd_ray.results.leaderboard.trial_rows
    assert skd_ray.SearchResult is api.SearchResult and skd_ray.compare is api.compare
    assert set(skd_ray.__all__) == set(dir(skd_ray)) & set(skd_ray.__all__)


@pytest.mark.parametrize("function", ["run_search", "compare"])
def test_defaults_are_the_command_lines(function: str) -> None:
    from skd_ray.cli.main import build_parser

    parser = build_parser()
    for name, param in inspect.signature(getattr(skd_ray, function)).parameters.items():
        if name in ("overrides", "methods"):
            continue
        dest, negated = RENAMED.get(name, (name, False))
        expected = parser.get_default(dest)
        assert (not expected if negated else expected) == param.default, f"{function}({name}=...)"


@pytest.mark.parametrize("options", [{"num_samples": 0}, {"method": "no_such_method"}, {"quiet": True, "verbose": True},
                                     {"sampler": "grid"}, {"max_epochs": 1.5}, {"overrides": {"optim.lr": -1.0}},
                                     {"optuna_storage": "redis://127.0.0.1:6379"},
                                     {"optuna_storage": "postgresql://postgres@127.0.0.1:9/optuna"}])
def test_bad_input_raises_skd_error_before_ray_starts(options: dict, tmp_path: Path) -> None:
    with pytest.raises(SkdError):
        skd_ray.run_search(storage=tmp_path / "results", mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", **options)
    assert not (tmp_path / "results").exists()


SEARCH_SCRIPT = """
import dataclasses, json, sys
import skd_ray

result = skd_ray.run_search(config=sys.argv[1], overrides={"model.width": 4}, num_samples=2, max_epochs=2, seed=0,
                        storage=sys.argv[2], mlflow_uri=sys.argv[3], experiment="api", quiet=True)
print(result)
with open(sys.argv[4], "w") as fh:
    json.dump(dataclasses.asdict(result), fh)
"""


def run_search_script(cli, args: list[str], timeout: float) -> str:
    """Run SEARCH_SCRIPT as a user's script: its own process group, Ray's files in the test's
    own RAY_TMPDIR (the `cli` fixture removes them), killed when it outlives `timeout`."""
    script = cli.workdir / "api_search.py"
    script.write_text(textwrap.dedent(SEARCH_SCRIPT))
    res = cli.run([sys.executable, str(script), *args], timeout)
    assert res.returncode == 0, res.stdout[-5000:]
    return res.stdout


@pytest.mark.slow
def test_search_returns_what_mlflow_holds_and_results_reads_it_back(cli, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from skd_ray.results.leaderboard import decode_params

    space = write_space(tmp_path / "space.yaml")
    answer = tmp_path / "result.json"
    out = run_search_script(cli, [str(space), str(tmp_path / "results"), cli.mlflow_uri, str(answer)], timeout=400)
    found = json.loads(answer.read_text())
    assert found["best_run_id"] in out and found["search"] in out, out[-3000:]

    client = MlflowClient(cli.mlflow_uri)
    parent = client.get_run(found["parent_run_id"])
    assert parent.data.tags["skd.kind"] == "search" and parent.info.run_name == found["search"]
    assert found["status"] == parent.data.tags["skd.status"] == "completed"
    best = client.get_run(found["best_run_id"])
    assert best.data.tags["mlflow.parentRunId"] == found["parent_run_id"]
    assert best.data.tags["skd.kind"] == "trial" and best.data.tags["skd.trial_name"] == found["best_trial"]
    # A trial logs its searched values; the search's constants are on its parent (config.<key>).
    constants = {k.removeprefix("config."): v for k, v in parent.data.params.items() if k.startswith("config.")}
    assert decode_params(best.data.params) == found["best_values"]
    assert decode_params({**constants, **best.data.params}) == found["best_config"]
    assert found["best_config"]["model.width"] == 4 and found["best_config"]["train.epochs"] == 2
    assert found["best_value"] == pytest.approx(best.data.metrics["best/val/acc"])
    assert (found["metric"], found["mode"]) == ("best_val_acc", "max")
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(t["run_id"] for t in found["trials"]) == sorted(r.info.run_id for r in children)
    assert len(children) == 2 and found["trials"][0]["run_id"] == found["best_run_id"]
    assert max(t["value"] for t in found["trials"]) == found["best_value"]
    assert Path(found["directory"], "optuna.db").is_file() and found["tracking_uri"] == cli.mlflow_uri

    again = skd_ray.search_results(experiment="api", mlflow_uri=cli.mlflow_uri, storage=tmp_path / "results")
    assert (again.best_run_id, again.best_config, again.best_value, again.directory) == \
        (found["best_run_id"], found["best_config"], found["best_value"], found["directory"])
    named = skd_ray.search_results(experiment="api", search=found["search"], mlflow_uri=cli.mlflow_uri)
    assert named.parent_run_id == found["parent_run_id"] and [t.run_id for t in named.trials] == \
        [t["run_id"] for t in found["trials"]]
