"""`skd-ray COMMAND`: one subcommand per job, each with only its own options, parsed into the
same request as the combined form of `run_search.py`, which keeps working and names the new
spelling in one `note:` line. Everything runs in this process; the one run that trains is a
1-epoch `debug` of a 4-channel network."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest

from skd_ray.cli import main, tool_main
from skd_ray.cli.commands import COMMANDS, build_command_parser, build_parser, parse_command_line, subparsers_of

# Every command's long options: the design, in one table.
TRAIN = {"--config", "--method", "--dataset", "--data-dir", "--backbone", "--set", "--seed", "--max-epochs"}
SAMPLING = {"--num-samples", "--grace-period", "--sampler", "--no-early-stopping", "--no-default-trial"}
CLUSTER = {"--address", "--workers-per-trial", "--cpus-per-worker", "--gpus-per-worker", "--max-concurrent",
           "--max-failures", "--resource-wait-timeout", "--tracking-outage-limit", "--always-ray-train",
           "--train-run-per-trial",
           "--keep-ddp-pools"}
STORE = {"--storage", "--mlflow-uri", "--optuna-storage", "--experiment"}
OUTPUT = {"--quiet", "--verbose"}
OPTIONS = {
    "search": TRAIN | SAMPLING | CLUSTER | STORE | OUTPUT,
    "debug": TRAIN | {"--mlflow-uri", "--experiment"},
    "results": {"--mlflow-uri", "--experiment", "--search", "--report"},
    "resume": STORE | {"--address", "--resource-wait-timeout", "--tracking-outage-limit"} | OUTPUT,
    "final": {"--top", "--seeds", "--seed", "--search", "--address", "--workers-per-trial", "--cpus-per-worker",
              "--gpus-per-worker", "--max-concurrent"} | (STORE - {"--optuna-storage"}) | OUTPUT,
    "compare": (TRAIN - {"--method"}) | {"--seeds"} | SAMPLING | CLUSTER | STORE | OUTPUT,
    "export": {"--keep-exits", "--search", "--mlflow-uri", "--experiment"},
    "pareto": TRAIN | {"--compute-threshold", "--num-samples", "--no-default-trial"} | CLUSTER | STORE | OUTPUT,
}
# The combined form's mode flags: no subcommand has them (the command is the mode).
MODE_FLAGS = {"--debug", "--results", "--resume", "--compare", "--final-top", "--export-best",
              "--export-keep-exits", "--multi-objective"}


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")} - {"--help"}


def help_text(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == 0
    return capsys.readouterr().out


def flags_in(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))


def test_every_command_has_exactly_its_options() -> None:
    commands = subparsers_of(build_command_parser())
    assert set(commands) == set(OPTIONS) == set(COMMANDS)
    for name, parser in commands.items():
        assert long_options(parser) == OPTIONS[name], name
        assert not long_options(parser) & MODE_FLAGS, name


def test_a_commands_defaults_are_the_combined_forms() -> None:
    """One definition per option: the same default (and type) under either spelling."""
    combined = build_parser()
    for name, parser in subparsers_of(build_command_parser()).items():
        for action in parser._actions:
            if action.dest not in ("help", "final_top", "compare", "export_best"):
                assert action.default == combined.get_default(action.dest), (name, action.dest)


@pytest.mark.parametrize(("command", "listed", "absent"), [
    ("results", {"--experiment", "--search", "--report", "--mlflow-uri"},
     {"--num-samples", "--address", "--storage", "--set", "--results"}),
    ("debug", {"--config", "--method", "--set", "--max-epochs", "--mlflow-uri"},
     {"--address", "--num-samples", "--storage", "--quiet", "--debug"}),
    ("search", {"--num-samples", "--address", "--sampler", "--storage", "--quiet"},
     {"--report", "--search", "--top", "--compute-threshold", "--results", "--debug", "--resume"}),
    ("resume", {"--experiment", "--storage", "--address", "--resource-wait-timeout"},
     {"--config", "--num-samples", "--max-epochs", "--resume"}),
    ("final", {"--top", "--seeds", "--search", "--workers-per-trial"},
     {"--num-samples", "--final-top", "--config", "--sampler"}),
    ("compare", {"--seeds", "--num-samples", "--config", "--storage"}, {"--method", "--compare", "--search"}),
    ("export", {"--keep-exits", "--search", "--experiment"},
     {"--export-best", "--export-keep-exits", "--address", "--storage"}),
    ("pareto", {"--compute-threshold", "--num-samples", "--method"},
     {"--sampler", "--no-early-stopping", "--grace-period", "--multi-objective"}),
])
def test_help_lists_only_the_commands_options(command: str, listed: set[str], absent: set[str],
                                              capsys: pytest.CaptureFixture) -> None:
    text = help_text([command, "--help"], capsys)
    assert text.startswith(f"usage: skd-ray {command} ")
    shown = flags_in(text)
    assert listed <= shown, listed - shown
    assert not absent & shown, absent & shown


def test_skd_ray_alone_prints_the_commands(capsys: pytest.CaptureFixture) -> None:
    assert tool_main([]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: skd-ray ")
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", text, re.M), name
    assert "--num-samples" not in text  # an overview, not every option
    assert tool_main(["--help"]) == 0 and capsys.readouterr().out == text


@pytest.mark.parametrize(("argv", "flag", "owners"), [
    (["results", "--num-samples", "3"], "--num-samples", "search, compare, pareto"),
    (["debug", "--address", "auto"], "--address", "search, resume, final, compare, pareto"),
    (["search", "--report", "r"], "--report", "results"),
    (["final", "--top", "1", "--sampler", "random"], "--sampler", "search, compare"),
    (["export", "out", "--storage", "s"], "--storage", "search, resume, final, compare, pareto"),
    (["resume", "--config", "x.yaml"], "--config", "search, debug, compare, pareto"),
    (["pareto", "--no-early-stopping"], "--no-early-stopping", "search, compare"),
    (["compare", "byot", "--method", "tfd"], "--method", "search, debug, pareto"),
    (["results", "--results"], "--results", None),
])
def test_another_commands_option_is_refused_by_argparse(argv: list[str], flag: str, owners: str | None,
                                                        capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert f"skd-ray {argv[0]}: error: unrecognized arguments: {flag}" in err, err
    if owners:
        assert f"({flag} is an option of {owners})" in err, err


def test_unknown_command_names_the_commands(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as ended:
        tool_main(["serach"])
    assert ended.value.code == 2
    assert "invalid choice: 'serach'" in capsys.readouterr().err


def test_final_without_top_is_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as ended:
        main(["final", "--experiment", "skd-byot"])
    assert ended.value.code == 2
    assert "required: --top" in capsys.readouterr().err


@pytest.mark.parametrize(("new", "old"), [
    (["search", "--method", "tfd", "--num-samples", "3", "--set", "optim.lr=0.1", "--set", "train.epochs=2",
      "--workers-per-trial", "2", "--gpus-per-worker", "0.5", "--storage", "s", "-q"],
     ["--method", "tfd", "--num-samples", "3", "--set", "optim.lr=0.1", "--set", "train.epochs=2",
      "--workers-per-trial", "2", "--gpus-per-worker", "0.5", "--storage", "s", "-q"]),
    (["search"], []),
    (["debug", "--backbone", "resnet20", "--max-epochs", "1"],
     ["--debug", "--backbone", "resnet20", "--max-epochs", "1"]),
    (["results", "--experiment", "e", "--report", "r", "--search", "s1"],
     ["--results", "--experiment", "e", "--report", "r", "--search", "s1"]),
    (["resume", "--experiment", "e", "--address", "auto", "-v"], ["--resume", "--experiment", "e", "--address", "auto",
                                                                   "-v"]),
    (["final", "--top", "2", "--seeds", "4", "--seed", "7"], ["--final-top", "2", "--seeds", "4", "--seed", "7"]),
    (["compare", "byot,tfd", "--seeds", "2", "--num-samples", "4"],
     ["--compare", "byot,tfd", "--seeds", "2", "--num-samples", "4"]),
    (["export", "out", "--keep-exits"], ["--export-best", "out", "--export-keep-exits"]),
    (["pareto", "--compute-threshold", "0.9"], ["--multi-objective", "--compute-threshold", "0.9"]),
])
def test_a_command_parses_to_the_combined_forms_request(new: list[str], old: list[str]) -> None:
    parsed = parse_command_line(new)
    assert parsed.args == parse_command_line(old).args
    assert parsed.note is None
    assert vars(parsed.args).keys() == vars(build_parser().parse_args([])).keys()


def run_capturing(argv: list[str], capsys: pytest.CaptureFixture, entry=main) -> tuple[int, list[str], list[str]]:
    """Exit code, `error:` lines and `note:` lines of one in-process command."""
    code = entry(argv)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert "Traceback" not in out + err
    return code, [x for x in lines if x.startswith("error:")], [x for x in lines if x.startswith("note:")]


BAD_BOTH_WAYS = [
    (["search", "--method", "nope"], ["--method", "nope"], "unknown method 'nope'"),
    (["search", "--num-samples", "0"], ["--num-samples", "0"], "--num-samples 0 is out of range"),
    (["debug", "--set", "optim.lr"], ["--debug", "--set", "optim.lr"], "is not KEY=VALUE"),
    (["compare", "vanilla"], ["--compare", "vanilla"], "at least one method besides vanilla"),
    (["pareto", "--method", "vanilla"], ["--multi-objective", "--method", "vanilla"],
     "--multi-objective needs a method with early exits"),
    (["results", "--experiment", "never-ran"], ["--results", "--experiment", "never-ran"],
     "no MLflow experiment named 'never-ran'"),
]


@pytest.mark.parametrize(("new", "old", "expected"), BAD_BOTH_WAYS, ids=[" ".join(c[0]) for c in BAD_BOTH_WAYS])
def test_bad_input_gives_the_same_error_line_both_ways(new: list[str], old: list[str], expected: str,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    where = ["--storage", str(tmp_path / "results"), "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    if new[0] in ("debug", "results"):
        where = where[2:]
    code_new, errors_new, notes_new = run_capturing([*new, *where], capsys)
    code_old, errors_old, notes_old = run_capturing([*old, *where], capsys)
    assert code_new == code_old == 2
    assert len(errors_new) == 1 and errors_new == errors_old, (errors_new, errors_old)
    assert expected in errors_new[0] and " -- fix: " in errors_new[0]
    assert notes_new == []
    assert len(notes_old) == (0 if new[0] == "search" else 1), notes_old
    assert not (tmp_path / "results").exists()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


@pytest.mark.parametrize(("argv", "note", "expected"), [
    (["--debug", "--resume"], "`--debug` is now `skd-ray debug`", "--debug cannot be combined with --resume"),
    (["--resume", "--config", "x.yaml"], "`--resume` is now `skd-ray resume`", "--resume cannot be combined"),
    (["--final-top", "0"], "`--final-top K` is now `skd-ray final --top K`", "--final-top 0 is out of range"),
    (["--compare", "byot", "--seeds", "0"], "`--compare METHODS` is now `skd-ray compare METHODS`",
     "--seeds 0 is out of range"),
    (["--export-best", "out", "--debug"], "`--export-best DIR` is now `skd-ray export DIR`",
     "cannot be combined with --debug"),
    (["--multi-objective", "--compute-threshold", "1.5"], "`--multi-objective` is now `skd-ray pareto`",
     "--compute-threshold 1.5"),
    (["--results", "--multi-objective"], "`--results` is now `skd-ray results`", "--results cannot be combined"),
])
def test_the_combined_form_works_and_names_the_command(argv: list[str], note: str, expected: str,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    code, errors, notes = run_capturing(argv, capsys)
    assert code == 2 and len(errors) == 1 and expected in errors[0], errors
    assert len(notes) == 1 and note in notes[0] and "run_search.py keeps accepting" in notes[0], notes


def test_a_subcommand_names_its_own_spelling_in_errors(capsys: pytest.CaptureFixture) -> None:
    code, errors, _ = run_capturing(["final", "--top", "0"], capsys)
    assert code == 2 and errors == ["error: --top 0 is out of range (it must be >= 1) -- fix: pass e.g. --top 3"]


def test_skd_ray_with_only_options_is_a_search_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    code, errors, notes = run_capturing(["--num-samples", "0"], capsys, tool_main)
    assert code == 2 and "--num-samples 0 is out of range" in errors[0]
    assert notes == ["note: `skd-ray [options]` is now `skd-ray search [options]`"]


def test_debug_then_results_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["debug", "--max-epochs", "1", "--set", "model.width=4", "--set", "train.threads=1",
                 "--mlflow-uri", uri, "--experiment", "sub-debug"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "note:" not in err
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch ")] == ["1/1"]
    assert "debug run finished" in out

    code = main(["results", "--experiment", "sub-debug", "--mlflow-uri", uri, "--report", str(tmp_path / "report")])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "leaderboard of debug-" in out and "completed" in out and "acc.exit1" in out
    assert (tmp_path / "report" / "report.md").is_file()
    assert not (tmp_path / "skd_results").exists()  # neither command has a storage folder
