"""`--compare` input mistakes end with one `error:` line and exit code 2 before Ray starts or
anything is written (the CLI runs in this process)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from skd_ray.cli import main

CASES = [
    (["--compare", "vanilla,bogus"], "unknown method 'bogus'"),
    (["--compare", "vanilla"], "at least one method besides vanilla"),
    (["--compare", "byot", "--resume"], "--compare cannot be combined with --resume"),
    (["--compare", "byot", "--method", "tfd"], "--compare cannot be combined with --method"),
    (["--compare", "byot", "--final-top", "1"], "--compare cannot be combined with --final-top"),
    (["--compare", "byot", "--seeds", "0"], "--seeds 0 is out of range"),
    (["--compare", "byot", "--dataset", "nope"], "nope"),
    (["--compare", "byot", "--config", "missing.yaml"], "comparison recipe missing.yaml does not exist"),
    (["--compare", "byot", "--set", "method.alpha=5"], "method.alpha"),
]


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_compare_input_is_one_error_line_before_ray(args: list[str], expected: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    code = main([*args, "--storage", str(tmp_path / "results"), "--mlflow-uri", f"sqlite:///{tmp_path}/m.db"])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, out + err
    assert len(lines) == 1 and expected in lines[0] and " -- fix: " in lines[0], err
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()
    assert not (tmp_path / "results").exists() and not (tmp_path / "m.db").exists()
