"""The two spellings of the command line and how both become one request.

`skd-ray COMMAND [options]` has one subcommand per job (search, debug, results, resume, final,
compare, export, pareto), each with only the options that job uses, so a contradictory
combination cannot be typed and `skd-ray COMMAND --help` is short. `run_search.py [options]`
(and `skd-ray [options]`) is the combined form of before: one parser, the job chosen by mode
flags (`--results`, `--resume`, ...), contradictions refused by `skd_ray.cli.flags`. It keeps
working, and a mode flag there prints one `note:` line naming its subcommand.

A subcommand's options are parsed into the combined form's Namespace (every destination at
its default, the mode flag set), so both spellings run through the same checks and the same
functions (`skd_ray.cli.main.run`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from skd_ray.cli.options import CLUSTER, OUTPUT, SEARCH, STORE, TRAIN, Group, add_groups, options

SEARCH_SCRIPT = "run_search.py"
TOOL = "skd-ray"


def build_parser(prog: str = SEARCH_SCRIPT) -> argparse.ArgumentParser:
    """The combined form: every option in one parser, the mode chosen by flags."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Search self-knowledge-distillation hyperparameters with Ray Tune + Optuna, tracked in MLflow.",
        epilog=f"One command per job, each with its own options: {TOOL} {{{','.join(COMMANDS)}}} "
               f"(`{TOOL} COMMAND --help`).")
    known = options()
    for dest in ("config", "method", "compare", "dataset", "data_dir", "backbone", "num_samples", "max_epochs",
                 "workers_per_trial", "always_ray_train", "train_run_per_trial", "keep_ddp_pools",
                 "cpus_per_worker", "gpus_per_worker", "max_concurrent", "max_failures", "resource_wait_timeout",
                 "tracking_outage_limit", "grace_period", "sampler", "no_early_stopping", "no_default_trial",
                 "address", "storage", "mlflow_uri", "optuna_storage", "experiment", "seed", "set", "debug",
                 "results", "report", "resume"):
        known[dest].add_to(p, dest, combined=True)
    loud = p.add_mutually_exclusive_group()
    for dest in OUTPUT.dests:
        known[dest].add_to(loud, dest, combined=True)
    add_groups(p, [Group("after a search (use its --experiment, --storage and --mlflow-uri)",
                         ("search", "final_top", "seeds", "export_best", "export_keep_exits")),
                   Group("multi-objective search", ("multi_objective", "compute_threshold"))], combined=True)
    return p


@dataclass(frozen=True)
class Command:
    """One subcommand: its job in a line, the combined form's mode it is (`mode`: values it
    sets; `old`/`new`: the mode flag and the subcommand as written in the note), its options."""

    summary: str
    groups: tuple[Group, ...]
    mode: dict[str, Any] = field(default_factory=dict)
    old: tuple[str, str] | None = None  # (destination, the combined form's spelling)
    new: str = ""
    details: str = ""
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-option argparse settings


THE_SEARCH = Group("the finished search", ("search",))
FINISHED_STORE = STORE.only("mlflow_uri", "experiment")
FINAL_STORE = STORE.only("storage", "mlflow_uri", "experiment")  # a final evaluation samples nothing: no study
COMPARE_SETTINGS = {"config": {"help": "the shared recipe (default: search_spaces/compare.yaml); each method's "
                                       "own space file is read from its folder"},
                    "experiment": {"help": "MLflow experiment name (default: skd-compare)"}}

COMMANDS: dict[str, Command] = {
    "search": Command(
        "search hyperparameters on Ray Tune + Optuna, tracked in MLflow (the same as run_search.py)",
        (TRAIN, SEARCH, CLUSTER, STORE, OUTPUT)),
    "debug": Command(
        "train one configuration in this process, without Ray (breakpoints work)",
        (TRAIN, FINISHED_STORE), mode={"debug": True}, old=("debug", "--debug"), new="debug",
        details="The search space's defaults, with the values the options below fix, are trained by the same "
                "engine, one line per epoch; the run is logged to MLflow like a search with one trial."),
    "results": Command(
        "print a finished search's leaderboard (or a comparison's table) from MLflow; runs nothing",
        (FINISHED_STORE, THE_SEARCH, Group("report page", ("report",))), mode={"results": True},
        old=("results", "--results"), new="results"),
    "resume": Command(
        "continue the latest search (or comparison) of --experiment with the settings it was started with",
        (STORE, CLUSTER.only("address", "resource_wait_timeout", "tracking_outage_limit"), OUTPUT),
        mode={"resume": True},
        old=("resume", "--resume"), new="resume",
        details="Only where things are (--storage, --mlflow-uri, --address) comes from this command line."),
    "final": Command(
        "retrain a finished search's best configurations with several seeds and report their test accuracy",
        (Group("final evaluation", ("final_top", "seeds", "seed")), THE_SEARCH, FINAL_STORE,
         CLUSTER.only("address", "workers_per_trial", "cpus_per_worker", "gpus_per_worker", "max_concurrent"),
         OUTPUT),
        old=("final_top", "--final-top K"), new="final --top K",
        extra={"final_top": {"required": True}, "seed": {"help": "the first seed (default 0)"}}),
    "compare": Command(
        "compare self-KD methods: one search each on a shared recipe, each best configuration tested over seeds",
        (Group("methods", ("compare", "seeds")), TRAIN.only(*(d for d in TRAIN.dests if d != "method")), SEARCH,
         CLUSTER, STORE, OUTPUT),
        old=("compare", "--compare METHODS"), new="compare METHODS",
        details="`resume --experiment NAME` continues an interrupted comparison, `results --experiment NAME` "
                "shows a finished one.",
        extra=COMPARE_SETTINGS),
    "export": Command(
        "write a finished search's best model for plain PyTorch to a folder",
        (Group("export", ("export_best", "export_keep_exits")), THE_SEARCH, FINISHED_STORE),
        old=("export_best", "--export-best DIR"), new="export DIR"),
    "pareto": Command(
        "multi-objective search: validation accuracy against compute of the early-exit policy (Pareto front)",
        (TRAIN, Group("objectives", ("compute_threshold",)), SEARCH.only("num_samples", "no_default_trial"), CLUSTER,
         STORE, OUTPUT),
        mode={"multi_objective": True}, old=("multi_objective", "--multi-objective"), new="pareto",
        details="Optuna's NSGA-II, no ASHA (it would rank trials by one objective); methods with early exits only."),
}


def build_command_parser() -> argparse.ArgumentParser:
    """`skd-ray COMMAND ...`: one subparser per command, built from the shared groups."""
    top = argparse.ArgumentParser(
        prog=TOOL, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Self-knowledge-distillation methods and their hyperparameter search on Ray Tune + Optuna, "
                    "tracked in MLflow.",
        epilog=f"`{TOOL} COMMAND --help` lists the options of COMMAND.\n"
               f"`{SEARCH_SCRIPT} [options]` is `{TOOL} search [options]` and still accepts the combined flags "
               "of before\n(--debug, --results, --resume, --final-top, --compare, --export-best, "
               "--multi-objective).")
    sub = top.add_subparsers(dest="command", title="commands", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        parser = sub.add_parser(name, help=command.summary, description=f"{command.summary}. {command.details}".strip())
        add_groups(parser, command.groups, **command.extra)
    return top


def subparsers_of(top: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The command parsers of `build_command_parser()`, by name."""
    return next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices


def owners_hint(unknown: list[str], commands: dict[str, argparse.ArgumentParser]) -> str:
    """Which commands take the first unknown option, e.g. ` (--num-samples is an option of
    search, compare, pareto)`; empty when none does."""
    flag = next((word.split("=", 1)[0] for word in unknown if word.startswith("-")), None)
    owners = [name for name, parser in commands.items() if flag in parser._option_string_actions]
    return f" ({flag} is an option of {', '.join(owners)})" if owners else ""


def as_combined(parsed: argparse.Namespace) -> argparse.Namespace:
    """A subcommand's options in the combined form's terms: every destination the combined
    parser has, at its default unless the subcommand set it, and the command's mode flag."""
    args = build_parser().parse_args([])
    command = COMMANDS[parsed.command]
    for dest, value in vars(parsed).items():
        if dest != "command":
            setattr(args, dest, value)
    for dest, value in command.mode.items():
        setattr(args, dest, value)
    return args


def given(value: Any) -> bool:
    """A mode flag's value that says it was typed: True, a number (`--final-top 0` too: it is
    refused later) or a text; not its default (None, or False for a switch)."""
    return value is not None and value is not False


def note_of(args: argparse.Namespace, prog: str) -> str | None:
    """The one line a combined-form command prints naming the subcommand(s) it now is."""
    used = [(old, command.new) for command in COMMANDS.values() if command.old
            for dest, old in [command.old] if given(getattr(args, dest))]
    if used:
        return "note: " + "; ".join(f"`{old}` is now `{TOOL} {new}`" for old, new in used) + \
            f" ({prog} keeps accepting the combined form)"
    if prog == TOOL:
        return f"note: `{TOOL} [options]` is now `{TOOL} search [options]`"
    return None


@dataclass(frozen=True)
class Parsed:
    """A command line in the combined form's terms, the note line the combined form prints
    (None for a subcommand, or a plain search of run_search.py), and the options a subcommand
    spells differently (destination -> its flag there), for the errors that name them."""

    args: argparse.Namespace
    note: str | None = None
    flag_names: dict[str, str] = field(default_factory=dict)


def parse_command_line(argv: list[str], prog: str = SEARCH_SCRIPT) -> Parsed:
    """Parse either spelling. A first word that is no option is a subcommand's name (argparse
    names the choices if it is not); anything else is the combined form."""
    if argv and not argv[0].startswith("-"):
        top = build_command_parser()
        if argv[0] not in COMMANDS:
            top.parse_args(argv)  # exits: names the commands
        # The subcommand's own parser, so that an option it lacks is refused with its usage line.
        commands = subparsers_of(top)
        parser = commands[argv[0]]
        parsed, unknown = parser.parse_known_args(argv[1:], argparse.Namespace(command=argv[0]))
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}{owners_hint(unknown, commands)}")
        known = options()
        renamed = {dest: known[dest].sub_flags[0] for group in COMMANDS[parsed.command].groups
                   for dest in group.dests if known[dest].sub_flags}
        return Parsed(as_combined(parsed), None, renamed)
    args = build_parser(prog).parse_args(argv)
    return Parsed(args, note_of(args, prog))
