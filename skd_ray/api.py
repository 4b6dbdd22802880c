"""The Python API: run a search or a comparison from Python and get its answer back as an object.

`run_search`, `compare`, `search_results` and `comparison_results` take keyword arguments named after the
command line's options (`num_samples` is `--num-samples`, `overrides` is `--set`) with the same
defaults, and go through the command line's own checks and steps (`skd_ray.cli`): an option
is parsed, checked and turned into a search request in one place, so both ways of starting a
search behave alike. The answer is read back from MLflow, exactly as `--results` reads it, so
a finished search returns the same object from `run_search(...)` as from `search_results(...)` later.

Problems the caller can fix raise `skd_ray.errors.SkdError` (naming the command-line flag of
the keyword argument, e.g. `--num-samples` for `num_samples`), never `SystemExit`. A search or
comparison interrupted with Ctrl-C raises `KeyboardInterrupt` once its runs are closed; the
command line's `--resume` continues it.

This is the top layer: it may import every other one. Importing it loads torch (through the
command line's modules) but not Ray, which is imported only when a search starts; `import
skd_ray` imports this module only when one of its names is first used.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skd_ray.cli.common import verbosity_of
from skd_ray.cli.compare_command import DEFAULT_EXPERIMENT as COMPARE_EXPERIMENT
from skd_ray.cli.compare_command import begin_compare, comparison_run_id, headline
from skd_ray.cli.flags import check_flags
from skd_ray.cli.main import build_parser, checked_space, parse_overrides, searched_experiment
from skd_ray.cli.train_commands import launch_search, search_request
from skd_ray.errors import SkdError
from skd_ray.results.leaderboard import (
    TrialRow,
    best_config,
    decode_params,
    find_search_run,
    search_run_id,
    selectable,
    trial_rows,
)
from skd_ray.results.names import Tags
from skd_ray.results.store import MlflowStore
from skd_ray.results.summary import show
from skd_ray.results.tracking import constants_of
from skd_ray.search.state.saved import safe_name
from skd_ray.selection.comparison.method_spaces import REFERENCE
from skd_ray.selection.comparison.runner import load_comparison, run_comparison
from skd_ray.selection.comparison.stats import Interval, PairedTest
from skd_ray.selection.comparison.table import MethodRow, format_text
from skd_ray.training.objective import Objective

__all__ = ["ComparisonResult", "MethodResult", "SearchResult", "TrialResult", "compare", "comparison_results",
           "run_search", "search_results"]

PathText = str | os.PathLike[str]  # a file or folder, as text or as a Path

SHOWN_VALUES = 6  # searched values in a SearchResult's one-line summary


@dataclass(frozen=True)
class TrialResult:
    """One trial of a search, as its MLflow child run holds it."""

    name: str  # the trial's number (t03), as the leaderboard and the run's name show it
    run_id: str  # its MLflow run
    status: str  # completed | early_stopped | failed | interrupted | running
    epochs: int  # epochs it trained
    value: float  # its best value of the search's objective (SearchResult.metric); NaN when no epoch ended
    exit_values: dict[str, float]  # the same per exit (exit1, ..., ensemble) of a multi-exit method
    params: dict[str, Any]  # its whole flat config (dotted keys), values decoded from MLflow's strings


@dataclass(frozen=True)
class SearchResult:
    """A search's answer: its best configuration and where every trial is in MLflow.

    `best_*` are None when no trial finished (every trial failed, or the search was stopped
    before one ended). The best trial is the leaderboard's: the highest `metric` among the
    completed and ASHA-stopped trials, ties to the earliest, as `--results`, `--final-top`
    and `--export-best` choose it."""

    experiment: str  # MLflow experiment
    search: str  # the search's name: its parent run's name and its folder under the storage
    parent_run_id: str  # the search's MLflow run; every trial's run is its child
    status: str  # the parent run's skd.status: completed | completed_with_errors | failed | interrupted | running
    best_run_id: str | None
    best_trial: str | None  # e.g. t03
    best_config: dict[str, Any] | None  # the best trial's whole flat config (dotted keys)
    best_values: dict[str, Any] | None  # the part of best_config the search varied (its searched values)
    best_value: float | None  # the best trial's `metric`
    metric: str  # what trials are ranked by: best_<metric> of the space's metric: (best_val_acc by default)
    mode: str  # max or min, the space's mode:
    trials: tuple[TrialResult, ...]  # every trial, best first
    tracking_uri: str  # the MLflow store
    directory: str | None = None  # Ray Tune's results, checkpoints and the Optuna study (None: not found)

    def __str__(self) -> str:
        head = f"search {self.search} (experiment {self.experiment!r}, {self.status}): {len(self.trials)} trials"
        if self.best_run_id is None:
            return f"{head}; no trial finished, so there is no best configuration"
        values = list((self.best_values or {}).items())
        shown = ", ".join(f"{k}={show(v)}" for k, v in values[:SHOWN_VALUES]) + \
            (", ..." if len(values) > SHOWN_VALUES else "")
        return (f"{head}; best {self.best_trial} {self.metric}={self.best_value:.4f} (MLflow run {self.best_run_id})"
                + (f": {shown}" if shown else ""))


@dataclass(frozen=True)
class MethodResult:
    """One method of a comparison: its search, and its best configuration retrained with every
    seed and scored once on the test split."""

    method: str
    search: SearchResult  # the method's search (best configuration, trials, run ids)
    final_run_id: str  # the final evaluation's MLflow run (one child run per seed)
    best_values: dict[str, Any]  # the searched values of the retrained configuration
    test_acc: dict[int, float]  # test accuracy per seed
    test: Interval  # mean, sample std, n and the 95% t interval of test_acc
    vs_reference: PairedTest | None  # difference to the reference (paired t-test); None for the reference
    time_epoch_s: float | None  # mean training seconds per epoch of the retrainings
    time_ratio: float  # that, relative to the reference (NaN when unknown)
    macs: float | None  # inference MACs per image of the deployable network
    macs_ratio: float  # that, relative to the reference (NaN when unknown)

    @property
    def best_config(self) -> dict[str, Any] | None:
        """The whole flat config of the method's best trial."""
        return self.search.best_config

    @property
    def test_acc_mean(self) -> float:
        return self.test.mean

    @property
    def test_acc_std(self) -> float:
        """Sample standard deviation over the seeds (NaN for one seed)."""
        return self.test.std


@dataclass(frozen=True)
class ComparisonResult:
    """A finished comparison: per method (the reference first) its search, its test accuracy
    over the seeds and its difference to the reference, as its printed table shows them."""

    experiment: str
    name: str  # the comparison's name: its MLflow run's name and its folder under the storage
    run_id: str  # the comparison's MLflow run (table, CSV, JSON and plot as artifacts)
    reference: str  # vanilla
    seeds: tuple[int, ...]
    methods: dict[str, MethodResult]  # in the comparison's order, the reference first
    tracking_uri: str
    directory: str | None = None  # the comparison's saved state and its searches' folders (None: not found)
    table: str = field(default="", repr=False)  # the table the command line prints

    def __str__(self) -> str:
        return f"{headline(self.name, [])}\n{self.table}"


def run_search(config: PathText | None = None, *, method: str | None = None, dataset: str | None = None,
           data_dir: PathText | None = None, backbone: str | None = None,
           overrides: Mapping[str, Any] | None = None, num_samples: int = 8, max_epochs: int | None = None,
           workers_per_trial: int = 1, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
           max_concurrent: int | None = None, max_failures: int = 2, resource_wait_timeout: float = 900.0,
           tracking_outage_limit: float = 900.0,
           grace_period: int = 2, sampler: str = "tpe", early_stopping: bool = True, default_trial: bool = True,
           always_ray_train: bool = False, train_run_per_trial: bool = False, keep_ddp_pools: bool = False,
           address: str | None = None, storage: PathText = "skd_results", mlflow_uri: str | None = None,
           optuna_storage: str | None = None, experiment: str | None = None, seed: int | None = None,
           quiet: bool = False, verbose: bool = False) -> SearchResult:
    """Run a hyperparameter search on Ray Tune + Optuna, as `run_search.py` with the same options
    does, and return its answer read back from MLflow.

    `config` is the search-space file (default `search_spaces/<method>.yaml`, byot without
    either); `overrides` fixes config values (`{"optim.lr": 0.1}`, the command line's `--set`),
    after `dataset`, `backbone`, `max_epochs` and `seed`. `early_stopping=False` and
    `default_trial=False` are `--no-early-stopping` and `--no-default-trial`; `optuna_storage`
    (`--optuna-storage`) is the database of the search's Optuna study, e.g.
    `postgresql://USER@HOST/optuna` (default: `optuna.db` in its folder). Everything is
    checked before Ray starts (local, or the cluster at `address`); Ray stays up in this
    process for the next call."""
    args, defaults = command_line(
        config=config, method=method, dataset=dataset, data_dir=data_dir, backbone=backbone, num_samples=num_samples,
        max_epochs=max_epochs, workers_per_trial=workers_per_trial, cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker, max_concurrent=max_concurrent, max_failures=max_failures,
        resource_wait_timeout=resource_wait_timeout, tracking_outage_limit=tracking_outage_limit,
        grace_period=grace_period, sampler=sampler,
        no_early_stopping=not early_stopping, no_default_trial=not default_trial, always_ray_train=always_ray_train,
        train_run_per_trial=train_run_per_trial, keep_ddp_pools=keep_ddp_pools, address=address, storage=storage,
        mlflow_uri=mlflow_uri, optuna_storage=optuna_storage, experiment=experiment, seed=seed, quiet=quiet,
        verbose=verbose)
    check_flags(args, defaults)
    store = MlflowStore.of(args.mlflow_uri)
    space, experiment_name = checked_space(args, dict(overrides or {}))
    outcome = launch_search(search_request(args, space, store, experiment_name))
    if outcome.interrupted:
        raise KeyboardInterrupt(f"search of experiment {experiment_name!r} interrupted: finished trials are kept in "
                                f"MLflow; `run_search.py --resume --experiment {experiment_name}` continues it")
    return read_search(store, experiment_name, outcome.parent_run_id, outcome.experiment_dir)


def search_results(experiment: str | None = None, search: str | None = None, *, mlflow_uri: str | None = None,
            storage: PathText = "skd_results") -> SearchResult:
    """The answer of a search that ran before (from Python or the command line), read from
    MLflow only, as `--results` reads it: the latest search of `experiment` (default
    `skd-byot`, the default search's), or the one named `search` (its name or parent run id).
    `storage` is only used to find the search's folder."""
    store = MlflowStore.of(mlflow_uri)
    experiment = experiment or searched_experiment(command_line()[0])
    parent_run_id = search_run_id(store, experiment, search)
    _, parent = find_search_run(store, experiment, parent_run_id)
    folder = Path(storage).resolve() / safe_name(parent.info.run_name or "")
    return read_search(store, experiment, parent.info.run_id, str(folder) if folder.is_dir() else None)


def compare(methods: Sequence[str] | str, *, config: PathText | None = None, dataset: str | None = None,
            data_dir: PathText | None = None, backbone: str | None = None,
            overrides: Mapping[str, Any] | None = None, num_samples: int = 8, max_epochs: int | None = None,
            seeds: int = 3, workers_per_trial: int = 1, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
            max_concurrent: int | None = None, max_failures: int = 2, resource_wait_timeout: float = 900.0,
            grace_period: int = 2, sampler: str = "tpe", early_stopping: bool = True, default_trial: bool = True,
            always_ray_train: bool = False, train_run_per_trial: bool = False, keep_ddp_pools: bool = False,
            address: str | None = None, storage: PathText = "skd_results", mlflow_uri: str | None = None,
            optuna_storage: str | None = None, experiment: str | None = None, seed: int | None = None,
            quiet: bool = False, verbose: bool = False) -> ComparisonResult:
    """Compare self-KD methods as `run_search.py --compare` does: one search per method on the
    shared recipe (`config`, default `search_spaces/compare.yaml`) with the same budget, then
    each method's best configuration retrained with `seeds` seeds (`seed`, `seed`+1, ...) and
    tested; vanilla is always included, as the reference. `methods` is a list of names or a
    comma-separated string. Returns the comparison read back from its MLflow run."""
    names = methods if isinstance(methods, str) else ",".join(methods)
    args, defaults = command_line(
        compare=names, config=config, dataset=dataset, data_dir=data_dir, backbone=backbone,
        num_samples=num_samples, max_epochs=max_epochs, seeds=seeds, workers_per_trial=workers_per_trial,
        cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, max_concurrent=max_concurrent,
        max_failures=max_failures, resource_wait_timeout=resource_wait_timeout, grace_period=grace_period,
        sampler=sampler, no_early_stopping=not early_stopping, no_default_trial=not default_trial,
        always_ray_train=always_ray_train, train_run_per_trial=train_run_per_trial, keep_ddp_pools=keep_ddp_pools,
        address=address, storage=storage, mlflow_uri=mlflow_uri, optuna_storage=optuna_storage,
        experiment=experiment, seed=seed, quiet=quiet, verbose=verbose)
    check_flags(args, defaults)
    store = MlflowStore.of(args.mlflow_uri)
    state, folder = begin_compare(args, store, {**parse_overrides(args), **dict(overrides or {})})
    outcome = run_comparison(state, folder, args.address, verbosity_of(args))
    if outcome.interrupted:
        raise KeyboardInterrupt(f"comparison {state.name} interrupted: finished searches and final evaluations are "
                                f"kept ({folder}); `run_search.py --resume --experiment {state.experiment}` "
                                "continues it")
    return read_comparison(store, state.experiment, state.parent_run_id, folder)


def comparison_results(experiment: str = COMPARE_EXPERIMENT, comparison: str | None = None, *,
                       mlflow_uri: str | None = None,
                       storage: PathText = "skd_results") -> ComparisonResult:
    """A comparison that finished before, read from its MLflow run as `--results --experiment
    skd-compare` reads it: the latest of `experiment`, or the one named `comparison` (its name
    or run id). `storage` is only used to find its folder."""
    store = MlflowStore.of(mlflow_uri)
    run_id = comparison_run_id(store, experiment, comparison)
    if run_id is None:
        which = f"no comparison named {comparison!r}" if comparison else "no comparison"
        raise SkdError(f"experiment {experiment!r} in {store} holds {which}",
                       "pass the experiment (and mlflow_uri) the comparison wrote to")
    return read_comparison(store, experiment, run_id, None, storage)


def command_line(**options: Any) -> tuple[argparse.Namespace, Callable[[str], Any]]:
    """The command line's parsed options with `options` (argparse destinations) set, and its
    defaults: the API starts from exactly what `run_search.py` alone would parse. A value of the
    wrong type or outside a flag's choices is refused here, as argparse refuses it there."""
    parser = build_parser()
    args = parser.parse_args([])
    actions = {a.dest: a for a in parser._actions}
    for name, value in options.items():
        if name not in actions:
            raise TypeError(f"unknown command-line option {name!r}")
        action = actions[name]
        if isinstance(value, os.PathLike):  # config, data_dir, storage: a Path is as good as its text
            value = os.fspath(value)
        if value is not None and action.type in (int, float):
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if not numeric or (action.type is int and not isinstance(value, int)):
                raise SkdError(f"{name}={value!r} is not {'an integer' if action.type is int else 'a number'}",
                               f"pass {name} as a Python {action.type.__name__}")
        if value is not None and action.choices is not None and value not in action.choices:
            raise SkdError(f"{name}={value!r} is not one of {', '.join(map(str, action.choices))}",
                           f"pass e.g. {name}={next(iter(action.choices))!r}")
        setattr(args, name, value)
    if args.quiet and args.verbose:
        raise SkdError("quiet and verbose exclude each other", "pass at most one of them")
    return args, parser.get_default


def read_search(store: MlflowStore, experiment: str, parent_run_id: str, directory: str | None) -> SearchResult:
    """A search's answer from MLflow: its parent run, its trials ranked as the leaderboard ranks
    them, and the best one's config."""
    experiment_id, parent = find_search_run(store, experiment, parent_run_id)
    rows = trial_rows(store, experiment_id, parent.info.run_id)
    chosen = selectable(rows)
    best = chosen[0] if chosen else None
    config = best_config(rows) if best is not None else None
    constants = constants_of(parent.data.params)
    objective = Objective.from_flat(constants)
    return SearchResult(
        experiment=experiment, search=parent.info.run_name or parent.info.run_id, parent_run_id=parent.info.run_id,
        status=parent.data.tags.get(Tags.STATUS, parent.info.status.lower()),
        best_run_id=best.run_id if best else None, best_trial=best.name if best else None, best_config=config,
        best_values={k: v for k, v in config.items() if k not in constants} if config is not None else None,
        best_value=best.value if best else None, metric=objective.best_key, mode=objective.mode,
        trials=tuple(trial_result(r) for r in rows), tracking_uri=store.uri, directory=directory)


def trial_result(row: TrialRow) -> TrialResult:
    return TrialResult(row.name, row.run_id, row.status, row.epochs, row.value, dict(row.exit_acc),
                       decode_params(row.params))


def read_comparison(store: MlflowStore, experiment: str, run_id: str, folder: Path | None,
                    storage: PathText | None = None) -> ComparisonResult:
    """A finished comparison from its run's `comparison.json` (what its table and report are
    made of) and its methods' searches; `folder` (or `storage`) is where its state was saved."""
    try:
        payload, rows = load_comparison(store, run_id)
    except Exception as err:  # noqa: BLE001 - an unfinished comparison has no table yet
        raise SkdError(f"comparison run {run_id} has no table ({type(err).__name__}); it has not finished",
                       "finish it with `run_search.py --resume --experiment NAME`") from None
    name = str(payload.get("name", run_id))
    if folder is None and storage is not None:
        found = Path(storage).resolve() / safe_name(name)
        folder = found if found.is_dir() else None
    methods = {row.method: method_result(store, experiment, row, folder) for row in rows}
    return ComparisonResult(experiment=experiment, name=name, run_id=run_id, reference=REFERENCE,
                            seeds=tuple(int(s) for s in payload.get("seeds", [])), methods=methods,
                            tracking_uri=store.uri,
                            directory=str(folder) if folder is not None else None, table=format_text(rows))


def method_result(store: MlflowStore, experiment: str, row: MethodRow, folder: Path | None) -> MethodResult:
    res = row.result
    search_dir = folder / safe_name(res["search_name"]) if folder is not None and res.get("search_name") else None
    found = search_dir if search_dir is not None and search_dir.is_dir() else None
    return MethodResult(
        method=row.method, search=read_search(store, experiment, res["search_run_id"], str(found) if found else None),
        final_run_id=str(res.get("final_run_id", "")), best_values=dict(res.get("params", {})),
        test_acc=row.accuracies, test=row.test, vs_reference=row.vs_reference,
        time_epoch_s=finite_or_none(res.get("time_epoch_s")), time_ratio=row.time_ratio,
        macs=finite_or_none(res.get("macs")), macs_ratio=row.macs_ratio)


def finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
