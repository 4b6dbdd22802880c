"""One-line errors of --final-top, --export-best and --multi-objective, before Ray starts."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("args", "expected"), [
    (["--method", "vanilla", "--multi-objective"], "--multi-objective needs a method with early exits"),
    (["--multi-objective", "--compute-threshold", "0.97"], "--compute-threshold 0.97 is not among"),
    (["--final-top", "2", "--experiment", "nothing"], "no MLflow experiment named 'nothing'"),
    (["--export-best", "out", "--debug"], "cannot be combined with --debug"),
])
def test_bad_use_is_one_error_line_and_exit_2(cli, args: list[str], expected: str) -> None:
    res = cli(*args, timeout=120)
    errors = [line for line in res.stdout.splitlines() if line.startswith("error:")]
    assert res.returncode == 2, res.stdout[-3000:]
    assert len(errors) == 1 and expected in errors[0] and " -- fix: " in errors[0], res.stdout[-3000:]
    assert "Ray" not in res.stdout and not (cli.workdir / "skd_results").exists()
