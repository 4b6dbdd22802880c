"""Range and combination checks of the command line's numeric flags, before anything starts.

argparse only checks types: `--num-samples -1` is an int, and Ray Tune reads it as "sample
forever"; `--cpus-per-worker 0` lets every trial start at once; `--grace-period 0` and
`--workers-per-trial 0` fail 20-70 s later inside Ray. Every flag is checked here, in one
place, and flags that contradict each other (or that the chosen mode would silently ignore)
are refused with the reason. Text and paths are checked by `skd_ray.cli.inputs`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from skd_ray.cli.inputs import check_inputs
from skd_ray.errors import SkdError


@dataclass(frozen=True)
class Range:
    """A numeric flag's legal values: `low` (inclusive unless `above`), optional `high`."""

    flag: str
    low: float
    above: bool = False  # strictly greater than low
    high: float | None = None
    example: str = ""

    def check(self, value: float | None, flag: str | None = None) -> None:
        """Refuse `value` out of range, naming the flag as the user typed it (`flag`; default
        the combined form's spelling)."""
        if value is None:
            return
        flag = flag or self.flag
        too_low = value <= self.low if self.above else value < self.low
        if not math.isfinite(value) or too_low or (self.high is not None and value > self.high):
            bound = f"> {self.low:g}" if self.above else f">= {self.low:g}"
            if self.high is not None:
                bound += f" and <= {self.high:g}"
            raise SkdError(f"{flag} {value:g} is out of range (it must be {bound})",
                           f"pass e.g. {flag} {self.example}")


RANGES = {
    "num_samples": Range("--num-samples", 1, example="8"),
    "max_epochs": Range("--max-epochs", 1, example="15"),
    "workers_per_trial": Range("--workers-per-trial", 1, example="1"),
    "cpus_per_worker": Range("--cpus-per-worker", 0, above=True, example="1"),
    "gpus_per_worker": Range("--gpus-per-worker", 0, example="0.5"),
    "max_concurrent": Range("--max-concurrent", 1, example="4 (or leave it out: what fits)"),
    "grace_period": Range("--grace-period", 1, example="2"),
    "max_failures": Range("--max-failures", 0, example="2 (0: never restart a crashed trial)"),
    "seeds": Range("--seeds", 1, example="3"),
    "final_top": Range("--final-top", 1, example="3"),
    "compute_threshold": Range("--compute-threshold", 0, above=True, high=1, example="0.95"),
}


def check_ranges(args: argparse.Namespace, flag_names: Mapping[str, str] | None = None) -> None:
    """Every numeric flag within its range; GPU shares above 1 must be whole GPUs. `flag_names`
    spells an option as a subcommand does (`final_top`: `--top`)."""
    for name, rule in RANGES.items():
        rule.check(getattr(args, name, None), (flag_names or {}).get(name))
    gpus = args.gpus_per_worker
    if gpus > 1 and gpus != int(gpus):
        raise SkdError(f"--gpus-per-worker {gpus:g} is neither a fraction of one GPU nor whole GPUs",
                       "pass a value in (0, 1] or a whole number")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise SkdError(f"--seed {args.seed} is out of range (it must be in [0, 2^32))", "pass e.g. --seed 0")


# (flag that is set, flags it cannot be combined with, why). Checked in this order.
Clash = tuple[str, tuple[str, ...], str]
CLASHES: list[Clash] = [
    ("--debug", ("--resume", "--results", "--multi-objective", "--address"),
     "--debug trains one configuration in this process, without Ray or a search"),
    ("--resume", ("--results", "--config", "--method", "--dataset", "--backbone", "--set", "--multi-objective",
                  "--num-samples", "--max-epochs"),
     "--resume continues a search with the settings it was started with"),
    ("--compare", ("--debug", "--resume", "--results", "--method", "--multi-objective", "--final-top",
                   "--export-best", "--search"),
     "--compare runs one search per method and their final evaluations (--resume --experiment NAME "
     "continues one, --results --experiment NAME shows one)"),
    ("--results", ("--multi-objective", "--no-early-stopping"), "--results only reads a finished search"),
    ("--multi-objective", ("--no-early-stopping", "--sampler"),
     "--multi-objective always uses NSGA-II without early stopping"),
    ("--keep-ddp-pools", ("--train-run-per-trial",),
     "--keep-ddp-pools keeps the DDP pools that --train-run-per-trial turns off"),
    ("--optuna-storage", ("--debug", "--results", "--final-top", "--export-best"),
     "--optuna-storage is where a search keeps its Optuna study"),
]


def set_flags(args: argparse.Namespace, defaults: Callable[[str], object]) -> set[str]:
    """The flags this command line set to something other than their default."""
    out = set()
    for name, value in vars(args).items():
        if value != defaults(name) and value not in (None, False, []):
            out.add("--" + name.replace("_", "-"))
    return out


def check_combinations(args: argparse.Namespace, defaults: Callable[[str], object]) -> None:
    """Flags that contradict each other, or that the mode chosen would silently ignore."""
    given = set_flags(args, defaults)
    for flag, others, why in CLASHES:
        if flag not in given:
            continue
        for other in others:
            if other in given:
                raise SkdError(f"{flag} cannot be combined with {other}: {why}", f"drop {other} (or {flag})")
    if args.export_keep_exits and args.export_best is None:
        raise SkdError("--export-keep-exits only applies to --export-best", "add --export-best DIR or drop it")
    if args.compute_threshold is not None and not args.multi_objective:
        raise SkdError("--compute-threshold only applies to --multi-objective", "add --multi-objective or drop it")
    if args.search is not None and not (args.results or args.final_top is not None or args.export_best is not None):
        raise SkdError("--search picks a finished search for --results, --final-top or --export-best",
                       "add one of them, or use --resume --experiment NAME to continue a search")


def check_flags(args: argparse.Namespace, defaults: Callable[[str], object],
                flag_names: Mapping[str, str] | None = None) -> None:
    """All checks of this module; `defaults(name)` is the parser's default of a flag. A
    subcommand cannot spell a contradictory combination, so only its ranges and its text and
    paths (`skd_ray.cli.inputs`) can fail here."""
    check_ranges(args, flag_names)
    check_combinations(args, defaults)
    check_inputs(args, flag_names)
