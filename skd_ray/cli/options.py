"""Every command-line option, defined once, and the groups the commands are built from.

`run_search.py` (the combined form: one parser, modes chosen by flags) and each `skd-ray`
subcommand add the same `Option`s, so a flag's help, type and default exist in one place and
both forms parse to the same destinations. An option that belongs to one mode of the combined
form names it (`only_with`); its help there says so ("with --results: ..."), while the
subcommand that owns it needs no such prefix. A mode's own argument may be spelled
differently under its subcommand (`sub_flags`: `--final-top K` is `final --top K`,
`--export-best DIR` is `export DIR`).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from skd_ray.data import dataset_names
from skd_ray.methods import method_names
from skd_ray.models import backbone_names

POSITIONAL: tuple[str, ...] = ()  # `sub_flags` of an option that is a positional argument under its subcommand


@dataclass(frozen=True)
class Option:
    """One option: its spelling in the combined form, its argparse settings, its help."""

    flags: tuple[str, ...]
    help: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # type, default, metavar, action, choices
    sub_flags: tuple[str, ...] | None = None  # its spelling under a subcommand; None: the same
    only_with: str = ""  # the combined form's mode flag(s) it applies to

    def add_to(self, parser: Any, dest: str, *, combined: bool, **extra: Any) -> None:
        """Add this option to `parser` (a parser or a group) as the combined form or a
        subcommand spells it; `extra` adds or replaces argparse settings (help, required)."""
        settings = {"help": self.help, **self.settings, **extra}
        if combined and self.only_with and settings["help"]:
            settings["help"] = f"with {self.only_with}: {settings['help']}"
        flags = self.flags if combined or self.sub_flags is None else self.sub_flags
        if flags == POSITIONAL:
            settings.pop("required", None)
            parser.add_argument(dest, **settings)
        else:
            parser.add_argument(*flags, dest=dest, **settings)


def option(*flags: str, help: str | None = None, sub: tuple[str, ...] | None = None, only_with: str = "",
           **settings: Any) -> Option:
    return Option(flags, help, settings, sub, only_with)


def options() -> dict[str, Option]:
    """All options by argparse destination. Built on each call: the method, dataset and
    backbone names in the help include plugins registered since."""
    return {
        # what to train
        "config": option("--config", help="search-space file (default: search_spaces/<method>.yaml)"),
        "method": option("--method", help=f"self-KD method: {', '.join(method_names())} (default: the space's; "
                                          "byot without --config)"),
        "compare": option("--compare", metavar="METHODS", sub=POSITIONAL,
                          help="compare methods, e.g. vanilla,byot,tfd: one search each on a shared recipe "
                               "(--config, default search_spaces/compare.yaml), the best configuration of each "
                               "retrained with --seeds seeds and tested; vanilla is always the reference"),
        "dataset": option("--dataset", help=f"{' | '.join(dataset_names())} | package.module:factory (your own "
                                            "data: factory(data_dir=...) returns (train, test) as (images, labels) "
                                            "or Datasets)"),
        "data_dir": option("--data-dir", help="where the dataset's files are"),
        "backbone": option("--backbone", help=f"{' | '.join(backbone_names())} | wrn_<depth>_<k> (e.g. wrn_16_2) | "
                                              "timm:<model> (e.g. timm:convnext_atto) | package.module:factory "
                                              "(your own network; see --set model.stages=...)"),
        "seed": option("--seed", type=int, help="training seed (train.seed) and Optuna sampler seed"),
        "set": option("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="fix a config value, e.g. --set optim.lr=0.1 (repeatable)"),
        "max_epochs": option("--max-epochs", type=int, help="epoch budget of a full trial (ASHA's max_t)"),
        # how a search samples and stops trials
        "num_samples": option("--num-samples", type=int, default=8, help="number of trials (default 8)"),
        "grace_period": option("--grace-period", type=int, default=2,
                               help="epochs before ASHA may stop a trial (1 pays off in wide spaces, where bad "
                                    "configurations show in the first epoch; see docs/performance.md)"),
        "sampler": option("--sampler", choices=("tpe", "random"), default="tpe",
                          help="Optuna sampler of a single-objective search (random: a baseline)"),
        "no_early_stopping": option("--no-early-stopping", action="store_true",
                                    help="run every trial to --max-epochs (no ASHA)"),
        "no_default_trial": option("--no-default-trial", action="store_true",
                                   help="do not start with the space's defaults (the published settings) as the "
                                        "first trial"),
        # cluster and resources
        "address": option("--address", help="Ray cluster address (e.g. auto); default: start a local Ray"),
        "workers_per_trial": option("--workers-per-trial", type=int, default=1,
                                    help="Ray Train (DDP) workers per trial"),
        "cpus_per_worker": option("--cpus-per-worker", type=float, default=1.0),
        "gpus_per_worker": option("--gpus-per-worker", type=float, default=0.0,
                                  help="fractions pack trials on one GPU"),
        "max_concurrent": option("--max-concurrent", type=int,
                                 help="cap on trials running at once (default: what fits, or on an autoscaling "
                                      "cluster what its node types can grow to)"),
        "max_failures": option("--max-failures", type=int, default=2, metavar="N",
                               help="times a trial is restarted from its last checkpoint after a crash (default 2; "
                                    "deterministic errors such as a NaN loss or bad data are not retried)"),
        "resource_wait_timeout": option("--resource-wait-timeout", type=float, default=900.0, metavar="SECONDS",
                                        help="give up (interrupted, to be resumed) when trials have waited this "
                                             "long for resources without any progress (default 900)"),
        "tracking_outage_limit": option("--tracking-outage-limit", type=float, default=900.0, metavar="SECONDS",
                                        help="stop the search (interrupted, to be resumed) when its MLflow server or "
                                             "database has not answered for this long (default 900); trials "
                                             "wait for it until then"),
        "always_ray_train": option("--always-ray-train", action="store_true",
                                   help="run 1-worker trials through Ray Train too (default: in the Tune trial "
                                        "process, which starts in under a second)"),
        "train_run_per_trial": option("--train-run-per-trial", action="store_true",
                                      help="start a new Ray Train run for every multi-worker trial (default: "
                                           "persistent DDP worker pools, one per concurrent trial, reused by every "
                                           "trial)"),
        "keep_ddp_pools": option("--keep-ddp-pools", action="store_true",
                                 help="train multi-worker trials in DDP pools on an autoscaling cluster too "
                                      "(default there: a Train run per trial, since a pool keeps its nodes up "
                                      "until the search ends)"),
        # where results are kept
        "storage": option("--storage", default="skd_results",
                          help="Ray results and checkpoints (shared on clusters)"),
        "mlflow_uri": option("--mlflow-uri", help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)"),
        "optuna_storage": option("--optuna-storage", metavar="URL",
                                 help="database of the search's Optuna study, e.g. postgresql://USER@HOST:5432/optuna "
                                      "(default: optuna.db in the search's folder; a resume uses the search's own "
                                      "unless given)"),
        "experiment": option("--experiment",
                             help="MLflow experiment name (default: skd-<space file name>, e.g. skd-byot)"),
        # the combined form's modes (a subcommand each)
        "debug": option("--debug", action="store_true", help="run one configuration in-process, no Ray"),
        "results": option("--results", action="store_true", help="print the latest search's leaderboard"),
        "report": option("--report", metavar="DIR", only_with="--results",
                         help="also write report.md (settings, leaderboard, best config, early exit) and its PNG "
                              "plots to DIR"),
        "resume": option("--resume", action="store_true", help="continue the latest search of --experiment"),
        # output
        "quiet": option("-q", "--quiet", action="store_true", help="print only the search's final summary"),
        "verbose": option("-v", "--verbose", action="store_true",
                          help="also print Ray Tune's status tables and Ray's logs (default: one line per trial "
                               "event)"),
        # a finished search
        "search": option("--search", metavar="NAME", only_with="--results, --final-top or --export-best",
                         help="the search to act on: its run name (printed by the search) or MLflow run id "
                              "(default: the latest search of --experiment)"),
        "final_top": option("--final-top", type=int, metavar="K", sub=("--top",),
                            help="retrain the K best configurations on train+validation with --seeds seeds each "
                                 "and report their test accuracy (mean ± std)"),
        "seeds": option("--seeds", type=int, default=3, metavar="S", only_with="--final-top or --compare",
                        help="seeds per configuration: --seed, --seed+1, ... (default 3)"),
        "export_best": option("--export-best", metavar="DIR", sub=POSITIONAL,
                              help="write the best trial's deployable model (torch.export program, state_dict, "
                                   "config, metadata) to DIR"),
        "export_keep_exits": option("--export-keep-exits", action="store_true", sub=("--keep-exits",),
                                    only_with="--export-best",
                                    help="keep every exit (the model returns all exits' logits)"),
        # multi-objective search
        "multi_objective": option("--multi-objective", action="store_true",
                                  help="search validation accuracy (max) against compute (min) of the dynamic "
                                       "early-exit policy with NSGA-II, no ASHA; prints the Pareto front"),
        "compute_threshold": option("--compute-threshold", type=float, metavar="T", only_with="--multi-objective",
                                    help="confidence threshold of the dynamic early-exit policy (default 0.95; "
                                         "one of eval.thresholds)"),
    }


@dataclass(frozen=True)
class Group:
    """Options shown together under a title; `exclusive`: at most one of them per command."""

    title: str
    dests: tuple[str, ...]
    exclusive: bool = False

    def only(self, *dests: str) -> Group:
        """This group restricted to `dests` (a command that uses part of it)."""
        unknown = set(dests) - set(self.dests)
        assert not unknown, f"{sorted(unknown)} are not in group {self.title!r}"
        return Group(self.title, tuple(d for d in self.dests if d in dests), self.exclusive)


TRAIN = Group("what to train", ("config", "method", "dataset", "data_dir", "backbone", "set", "seed", "max_epochs"))
SEARCH = Group("how trials are sampled and stopped",
               ("num_samples", "grace_period", "sampler", "no_early_stopping", "no_default_trial"))
CLUSTER = Group("cluster and resources", ("address", "workers_per_trial", "cpus_per_worker", "gpus_per_worker",
                                          "max_concurrent", "max_failures", "resource_wait_timeout",
                                          "tracking_outage_limit", "always_ray_train", "train_run_per_trial",
                                          "keep_ddp_pools"))
STORE = Group("where results are kept", ("storage", "mlflow_uri", "optuna_storage", "experiment"))
OUTPUT = Group("output", ("quiet", "verbose"), exclusive=True)


def add_groups(parser: argparse.ArgumentParser, groups: Iterable[Group], *, combined: bool = False,
               **extra: dict[str, Any]) -> None:
    """Add `groups` to `parser`; `extra[dest]` adds or replaces argparse settings of one option
    for this parser alone (compare's --config is its recipe)."""
    known = options()
    for group in groups:
        section = parser.add_argument_group(group.title)
        target = section.add_mutually_exclusive_group() if group.exclusive else section
        for dest in group.dests:
            known[dest].add_to(target, dest, combined=combined, **extra.get(dest, {}))
