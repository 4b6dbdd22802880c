"""The command line: debugging mode without Ray, leaderboard, and one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_debug_runs_in_process_without_ray(cli, tmp_path: Path) -> None:
    script = tmp_path / "debug_probe.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from skd_ray.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "print('RAY_IMPORTED', 'ray' in sys.modules)\n"
        "sys.exit(rc)\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(script), "--debug", "--max-epochs", "3", "--set", "model.width=8",
                          "--set", "train.threads=1"], cwd=tmp_path, env=cli.env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "RAY_IMPORTED False" in out.stdout
    epoch_lines = [line for line in out.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
    assert "exit1=" in epoch_lines[-1] and "val_acc=" in epoch_lines[-1]
    res = cli("--results", "--experiment", "skd-byot", timeout=120)
    assert res.returncode == 0, res.stdout
    assert "debug" in res.stdout and "completed" in res.stdout and "acc.exit1" in res.stdout


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


BAD_SPACE = {
    "malformed.yaml": "fixed: {method: byot\nparams: [",
    "empty_range.yaml": yaml.safe_dump({"fixed": {"method": "byot"},
                                        "params": {"method.alpha": {"type": "float", "low": 0.5, "high": 0.5}}}),
    "bad_exits.yaml": yaml.safe_dump({"fixed": {"method": "byot"},
                                      "params": {"method.exits": {"type": "subset", "choices": [1, 2, 4]}}}),
    "wrong_type.yaml": yaml.safe_dump({"fixed": {"method": "byot", "train.epochs": "many"}}),
    "unknown_key.yaml": yaml.safe_dump({"fixed": {"method": "byot", "optim.learning_rate": 0.1}}),
}


@pytest.mark.parametrize(("args", "expected"), [
    (["--method", "nope"], "unknown method 'nope'"),
    (["--dataset", "mnist3d"], "unknown dataset 'mnist3d'"),
    (["--backbone", "vgg99"], "unknown backbone 'vgg99'"),
    (["--data-dir", "/no/such/dir"], "data directory /no/such/dir does not exist"),
    (["--config", "missing.yaml"], "does not exist"),
    (["--config", "malformed.yaml"], "is not valid YAML at line"),
    (["--config", "empty_range.yaml"], "empty range"),
    (["--config", "bad_exits.yaml"], "method.exits [1, 2, 4] is impossible"),
    (["--config", "wrong_type.yaml"], "train.epochs must be an integer"),
    (["--config", "unknown_key.yaml"], "unknown config key optim.learning_rate"),
    (["--set", "optim.lr"], "is not KEY=VALUE"),
    (["--set", "method.alpha=2"], "method.alpha must lie in [0, 1]"),
    (["--results", "--experiment", "never-ran"], "no MLflow experiment named 'never-ran'"),
    (["--mlflow-uri", "http://127.0.0.1:9/"], "cannot be reached"),
    (["--mlflow-uri", "sqlite:////proc/skd/mlflow.db"], "is not writable"),
])
def test_bad_input_gives_one_error_line(cli, tmp_path: Path, args: list[str], expected: str) -> None:
    for name, text in BAD_SPACE.items():
        (tmp_path / name).write_text(text)
    mode = [] if "--results" in args else ["--debug"]  # --debug --results is itself refused
    res = cli(*mode, *args, timeout=120)
    assert res.returncode == 2, res.stdout
    lines = error_lines(res.stdout)
    assert len(lines) == 1, res.stdout
    assert expected in lines[0], lines[0]
    assert " -- fix: " in lines[0]
    assert "Traceback" not in res.stdout


@pytest.mark.slow
def test_trial_larger_than_the_cluster_is_refused(cli, tmp_path: Path) -> None:
    # 16 workers: more CPUs than this machine has, yet each worker still gets a full batch.
    res = cli("--workers-per-trial", "16", "--set", "train.batch_size=16", "--num-samples", "1",
              "--storage", str(tmp_path / "r"), timeout=180)
    assert res.returncode == 2, res.stdout[-3000:]
    (line,) = error_lines(res.stdout)
    assert "16 worker(s) x (1 CPU, 0 GPU) = 16 CPU, 0 GPU" in line
    assert re.search(r"the cluster has \d+ CPU, 0 GPU", line) and "--workers-per-trial" in line


@pytest.mark.slow
def test_unreachable_cluster_fails_fast(cli, tmp_path: Path) -> None:
    res = cli("--address", "127.0.0.1:9", "--storage", str(tmp_path / "r"), timeout=60)
    assert res.returncode == 2
    (line,) = error_lines(res.stdout)
    assert "127.0.0.1:9 cannot be reached" in line


@pytest.mark.parametrize("storage", ["/proc/skd_results", "/sys/skd_results"])
def test_unwritable_storage_is_refused_before_ray_starts(cli, storage: str) -> None:
    res = cli("--storage", storage, "--num-samples", "1", timeout=120)
    assert res.returncode == 2, res.stdout[-3000:]
    (line,) = error_lines(res.stdout)
    assert f"storage {storage} cannot be created" in line and "--storage" in line
    assert "Started a local Ray instance" not in res.stdout
