"""The documentation (README.md and docs/*.md) and the parsers name the same flags: every
`--flag` the documentation shows exists in run_search.py or an `skd-ray` command (or belongs to
another program it quotes, or to a benchmark script), and every flag of either parser is
documented somewhere in it."""

from __future__ import annotations

import re
from pathlib import Path

from skd_ray.cli.commands import build_command_parser, subparsers_of
from skd_ray.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
# Flags of other programs that the documentation quotes (ray, mlflow, pip, pytest, chromium, ...).
OTHER_PROGRAMS = {"--head", "--port", "--address", "--num-cpus", "--num-gpus", "--block", "--autoscaling-config",
                  "--backend-store-uri", "--host", "--default-artifact-root", "--artifacts-destination",
                  "--working-dir", "--runtime-env", "--runtime-env-json", "--no-wait", "--follow", "--storage",
                  "--headless", "--screenshot", "--window-size", "--upgrade", "--quiet", "--help", "--version",
                  "--set", "--dashboard-host", "--dashboard-port", "--include-dashboard", "--serve-artifacts",
                  "--synthetic", "--backbone", "--batch-size", "--warmup", "--epochs", "--trials", "--space",
                  "--val-fraction", "--repeats", "--seed", "--grace-period", "--reduction-factor", "--entrypoint",
                  "--submission-id", "--disable-usage-stats", "--node-ip-address", "--index-url"}
BENCHMARKS = ROOT / "benchmarks"


def parser_flags() -> set[str]:
    """The long flags of run_search.py's combined form and of every `skd-ray` command."""
    parsers = [build_parser(), *subparsers_of(build_command_parser()).values()]
    return {opt for parser in parsers for action in parser._actions for opt in action.option_strings
            if opt.startswith("--")}


def flags_in(path: Path) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", path.read_text()))


def documented_flags() -> set[str]:
    """Every `--flag` that README.md or a page in docs/ names."""
    return set().union(*(flags_in(path) for path in [README, *DOCS]))


def benchmark_flags() -> set[str]:
    """Flags of the scripts in benchmarks/, which docs/performance.md quotes."""
    return {flag for path in BENCHMARKS.glob("*.py")
            for flag in re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", path.read_text())}


def test_the_docs_are_found() -> None:
    assert README.is_file() and len(DOCS) >= 3, DOCS


def test_every_flag_the_docs_name_exists_or_belongs_to_another_program() -> None:
    for path in [README, *DOCS]:
        unknown = flags_in(path) - parser_flags() - OTHER_PROGRAMS - benchmark_flags()
        assert not unknown, f"{path.relative_to(ROOT)} names flags no parser has: {sorted(unknown)}"


def test_every_flag_of_the_parsers_is_documented() -> None:
    undocumented = parser_flags() - documented_flags() - {"--help"}
    assert not undocumented, f"flags missing from README.md and docs/*.md: {sorted(undocumented)}"
