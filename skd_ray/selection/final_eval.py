"""Final evaluation of a finished search: retrain its best configurations with several seeds
on train + validation and report their test accuracy (mean ± std) per configuration.

Each (configuration, seed) is one trial of a Tune run that `skd_ray.search.run_search` drives
like any search (same trial function, resources, concurrency, MLflow child runs, status
callbacks, Ctrl-C handling), but with a fixed list of trials and no early stopping. Its
parent run `final-<search>_<time>` (`skd.kind=final`, `skd.search_run_id`) holds one child
run per retraining (tags `skd.config_rank`, `skd.source_trial`, `skd.seed`) and the
per-configuration mean and std as metrics, plus the table as artifacts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skd_ray.errors import SkdError
from skd_ray.results.leaderboard import find_search_run, search_run_id, trial_rows
from skd_ray.results.names import Tags
from skd_ray.results.statuses import Status
from skd_ray.results.store import MlflowStore, StoreOfRequest
from skd_ray.results.tracking import SearchRuns, param_text
from skd_ray.search.console.ray_logs import NORMAL, RAY_LOG_FILE, ray_logs_to_file
from skd_ray.search.request import Resources, SearchRequest
from skd_ray.search.space.definition import SearchSpace
from skd_ray.search.state.saved import SAMPLE_STAMP, check_folder_names, final_search_name, safe_name
from skd_ray.selection.final_summary import (
    ConfigSummary,
    final_config,
    format_final_table,
    select_top_configs,
    shared_items,
    summarize,
)
from skd_ray.training.metrics import TEST_ACC, from_logged
from skd_ray.training.resolve import resolve_config

RANK_KEY = "final.rank"  # Tune config key: which chosen configuration (1 = best)
SEED_KEY = "train.seed"


@dataclass
class FinalSpace(SearchSpace):
    """The trial configs of a final evaluation: Tune hands each trial only (rank, seed),
    which stays readable in Tune's progress table; `to_flat` expands it to the full config."""

    configs: list[dict[str, Any]] = field(default_factory=list)

    def to_flat(self, sampled: dict[str, Any]) -> dict[str, Any]:
        return {**self.configs[int(sampled[RANK_KEY]) - 1], SEED_KEY: int(sampled[SEED_KEY])}

    def methods(self) -> list[str]:
        return sorted({str(c.get("method")) for c in self.configs})


@dataclass
class FinalRequest(Resources, StoreOfRequest):
    """What to evaluate (a search of an experiment); the resources come from `Resources`."""

    tracking_uri: str
    experiment: str
    storage: str
    top_k: int
    seeds: list[int]
    search: str | None = None  # run name or id of the search; None: the latest
    address: str | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)  # on the final parent run (a comparison's link)
    verbosity: int = NORMAL  # as a search's: Ray's own logs go to the retrainings' folder unless VERBOSE



@dataclass
class FinalOutcome:
    search_name: str
    parent_run_id: str
    experiment_dir: str
    summaries: list[ConfigSummary]
    num_errors: int
    interrupted: bool


FinalPlan = tuple[Any, list[Any], FinalSpace]  # (search parent run, chosen trial rows, their space)


def plan_final(req: FinalRequest) -> FinalPlan:
    """(search parent run, chosen trial rows, their final-training space), validated before
    anything starts: a stale or impossible configuration fails here with its key named."""
    exp_id, search = find_search_run(req.store, req.experiment,
                                     search_run_id(req.store, req.experiment, req.search))
    chosen = select_top_configs(trial_rows(req.store, exp_id, search.info.run_id), req.top_k)
    configs = [final_config(row.params) for row in chosen]
    for row, config in zip(chosen, configs):
        try:
            resolve_config(config)
        except SkdError as err:
            raise SkdError(f"trial {row.name} of {search.info.run_name}: {err.problem}", err.fix) from None
    name = safe_name(final_search_name(search.info.run_name, SAMPLE_STAMP))
    check_folder_names(req.storage, {name: "the final evaluation's folder"},
                       "pass a --storage with a shorter path (or on a file system that allows longer names)")
    objective = chosen[0].objective  # the search's: each retraining keeps its best epoch by it
    space = FinalSpace(path=f"final evaluation of {search.info.run_name}", description="", fixed=shared_items(configs),
                       params=[], metric=objective.metric, mode=objective.mode, configs=configs)
    return search, chosen, space


def run_final_eval(req: FinalRequest, plan: FinalPlan | None = None) -> FinalOutcome:
    """Retrain the top configurations of the search with every seed; summarise on test.
    `plan` is `plan_final(req)` when the caller already made it."""
    from skd_ray.search.tuning.tuner import run_search  # local: loads Ray, which the CLI must not at import

    search, chosen, space = plan or plan_final(req)
    points = [{RANK_KEY: rank, SEED_KEY: seed} for rank in range(1, len(chosen) + 1) for seed in req.seeds]
    name = final_search_name(search.info.run_name, time.strftime("%Y%m%d-%H%M%S"))
    with ray_logs_to_file(Path(req.storage) / safe_name(name) / RAY_LOG_FILE, req.verbosity):
        outcome = run_search(SearchRequest(
            space=space, storage=req.storage, tracking_uri=req.tracking_uri, experiment=req.experiment,
            search_name=name, num_samples=len(points), address=req.address, points=points, verbosity=req.verbosity,
            **vars(req.resources()),
            extra_tags={Tags.KIND: "final", Tags.SEARCH_RUN_ID: search.info.run_id,
                        Tags.SEARCH_NAME: search.info.run_name or "", **req.extra_tags},
        ))
    req.store.log_params(outcome.parent_run_id,
               {"final.top_k": req.top_k, "final.seeds": req.seeds, "final.search_run_id": search.info.run_id})
    results = tag_final_runs(req.store, outcome.experiment_id, outcome.parent_run_id, chosen, space.configs)
    summaries = summarize(chosen, req.seeds, results)
    log_summaries(req.store, outcome.parent_run_id, summaries, search.info.run_name or "")
    return FinalOutcome(search.info.run_name or search.info.run_id, outcome.parent_run_id, outcome.experiment_dir,
                        summaries, outcome.num_errors, outcome.interrupted)


def logged_identity(flat: dict[str, Any]) -> dict[str, str]:
    """A config's params as its trial's MLflow run holds them, without the seed."""
    return {k: param_text(v) for k, v in resolve_config(flat).to_flat().items() if k != SEED_KEY}


def tag_final_runs(store: MlflowStore, experiment_id: str, parent_run_id: str, chosen: list[Any],
                   configs: list[dict[str, Any]]) -> list[tuple[int, int, float | None]]:
    """Link every retraining's child run to the configuration it retrained (tags: rank, source
    trial) and return `(rank, seed, test accuracy or None when it did not complete)` per run.
    A run is recognised by its logged params, which are its config's: MLflow is the only
    source, so this holds whether or not Tune wrote result files."""
    identities = [logged_identity(config) for config in configs]
    c = store.client
    results: list[tuple[int, int, float | None]] = []
    for run in SearchRuns(store, experiment_id, parent_run_id).children():
        params = {k: v for k, v in run.data.params.items() if k != SEED_KEY}
        rank = next((i for i, identity in enumerate(identities, 1) if identity == params), None)
        if rank is None:
            continue  # not a retraining of a chosen configuration
        source = chosen[rank - 1]
        for key, value in ((Tags.CONFIG_RANK, str(rank)), (Tags.SOURCE_TRIAL, source.name),
                           (Tags.SOURCE_RUN_ID, source.run_id)):
            c.set_tag(run.info.run_id, key, value)
        completed = run.data.tags.get(Tags.STATUS) == Status.COMPLETED
        test_acc = from_logged(run.data.metrics).get(TEST_ACC) if completed else None
        results.append((rank, int(run.data.params[SEED_KEY]), test_acc))
    return results


def log_summaries(store: MlflowStore, parent_run_id: str, summaries: list[ConfigSummary], search_name: str) -> None:
    """Per-configuration test mean/std as metrics of the final parent run; table as artifacts."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = []
    for s in summaries:
        metrics.append(Metric(f"test_acc_runs.rank{s.rank}", float(len(s.test_acc)), now, 0))
        for key, value in ((f"test_acc_mean.rank{s.rank}", s.mean), (f"test_acc_std.rank{s.rank}", s.std)):
            if value == value:  # NaN (no run finished, or one run for the std) is left out
                metrics.append(Metric(key, value, now, 0))
    c = store.client
    c.log_batch(parent_run_id, metrics=metrics)
    c.log_text(parent_run_id, json.dumps({"search": search_name, "configs": [s.as_dict() for s in summaries]},
                                         indent=2), "final_eval.json")
    c.log_text(parent_run_id, format_final_table(summaries) + "\n", "final_eval.txt")


def describe(outcome: FinalOutcome, seeds: list[int]) -> str:
    """The printed report: what was trained and the table."""
    head = (f"final evaluation of {outcome.search_name}: top {len(outcome.summaries)} configurations x "
            f"seeds {seeds}, trained on train+validation, test accuracy of the last epoch")
    return f"{head}\n{format_final_table(outcome.summaries)}\nresults in {Path(outcome.experiment_dir)}"
