"""README and the parsers name the same flags: every `--flag` the README shows for
run_search.py or an `skd-ray` command exists, and every flag of either is documented in the
README."""

from __future__ import annotations

import re
from pathlib import Path

from skd_ray.cli.commands import build_command_parser, subparsers_of
from skd_ray.cli.main import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
# Flags of other programs that the README quotes (ray, mlflow, pip, pytest, chromium, ...).
OTHER_PROGRAMS = {"--head", "--port", "--address", "--num-cpus", "--num-gpus", "--block", "--autoscaling-config",
                  "--backend-store-uri", "--host", "--default-artifact-root", "--artifacts-destination",
                  "--working-dir", "--runtime-env", "--runtime-env-json", "--no-wait", "--follow", "--storage",
                  "--headless", "--screenshot", "--window-size", "--upgrade", "--quiet", "--help", "--version",
                  "--set", "--dashboard-host", "--dashboard-port", "--include-dashboard", "--serve-artifacts",
                  "--synthetic", "--backbone", "--batch-size", "--warmup", "--epochs", "--trials", "--space",
                  "--val-fraction", "--repeats", "--seed", "--grace-period", "--reduction-factor", "--entrypoint",
                  "--submission-id", "--disable-usage-stats", "--node-ip-address"}
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def parser_flags() -> set[str]:
    """The long flags of run_search.py's combined form and of every `skd-ray` command."""
    parsers = [build_parser(), *subparsers_of(build_command_parser()).values()]
    return {opt for parser in parsers for action in parser._actions for opt in action.option_strings
            if opt.startswith("--")}


def readme_flags() -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README.read_text()))


def benchmark_flags() -> set[str]:
    """Flags of the scripts in benchmarks/, which the README's Performance section quotes."""
    return {flag for path in BENCHMARKS.glob("*.py")
            for flag in re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", path.read_text())}


def test_every_flag_the_readme_names_exists_or_belongs_to_another_program() -> None:
    unknown = readme_flags() - parser_flags() - OTHER_PROGRAMS - benchmark_flags()
    assert not unknown, f"README names flags run_search.py does not have: {sorted(unknown)}"


def test_every_flag_of_run_search_is_in_the_readme() -> None:
    undocumented = parser_flags() - readme_flags() - {"--help"}
    assert not undocumented, f"flags missing from README.md: {sorted(undocumented)}"
