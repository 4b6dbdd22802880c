"""Results read back from MLflow: the leaderboard of a search and its best configuration.

The leaderboard is built from MLflow only (not from Ray's files), so `--results` works on
any machine that can reach the tracking store, long after the cluster is gone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from skd_ray.errors import SkdError
from skd_ray.results.names import Tags
from skd_ray.results.statuses import SELECTABLE, Status
from skd_ray.results.store import MlflowStore
from skd_ray.results.tracking import constants_of, trial_params
from skd_ray.training.metrics import BEST_EPOCH, BEST_VAL_ACC, EPOCH, VAL_ACC, exit_accuracies, from_logged
from skd_ray.training.objective import Objective


@dataclass
class TrialRow:
    """One trial of a search as the leaderboard shows it."""

    name: str
    run_id: str
    status: str
    epochs: int
    best_val_acc: float
    exit_acc: dict[str, float]
    params: dict[str, str]
    start_time: int = 0  # ms since the epoch: the order in which the search started its trials
    objective: Objective = field(default_factory=Objective)  # what the search ranks by
    value: float = math.nan  # the objective's best value (`best_<metric>`); NaN when no epoch ended
    best_epoch: int | None = None  # the epoch of that value (`best_epoch`); None when the run did not log it
    tags: dict[str, str] = field(default_factory=dict)  # the run's tags

    def __post_init__(self) -> None:
        if self.objective == Objective() and math.isnan(self.value):  # val_acc, max: the best accuracy
            self.value = self.best_val_acc

    @property
    def is_scored(self) -> bool:
        """Has a value of the objective to show (plots, importances): not failed, some epoch done."""
        return math.isfinite(self.value) and self.status != Status.FAILED

    @property
    def is_selectable(self) -> bool:
        """May be chosen as a search's best configuration (the report, `--export-best`,
        `--final-top`): it finished, by completing or by an ASHA stop (ranked by what it reached);
        failed, running and interrupted trials are not candidates."""
        return self.status in SELECTABLE and math.isfinite(self.value)


def find_search_run(store: MlflowStore, experiment: str, parent_run_id: str | None = None) -> tuple[str, Any]:
    """(experiment_id, parent run) of the given or latest search in `experiment`."""
    c = store.client
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise SkdError(f"no MLflow experiment named {experiment!r} in {store}",
                       "check --experiment and --mlflow-store (the store the search wrote to)")
    if parent_run_id:
        return exp.experiment_id, c.get_run(parent_run_id)
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`{Tags.KIND}` = 'search'",
                         order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SkdError(f"experiment {experiment!r} holds no search run", "run a search first")
    return exp.experiment_id, runs[0]


def trial_rows(store: MlflowStore, experiment_id: str, parent_run_id: str) -> list[TrialRow]:
    """All child runs of a search, best first by the search's objective (`rank_rows`)."""
    runs = store.search_all([experiment_id], f"tags.`{Tags.PARENT_RUN_ID}` = '{parent_run_id}'")
    constants = constants_of(store.client.get_run(parent_run_id).data.params)
    objective = Objective.from_flat(constants)
    rows = []
    for run in runs:
        m = from_logged(run.data.metrics)
        exits = exit_accuracies(m, BEST_VAL_ACC)
        tags = dict(run.data.tags)
        rows.append(TrialRow(tags.get(Tags.TRIAL_NAME, run.info.run_name or run.info.run_id),
                             run.info.run_id, tags.get(Tags.STATUS, run.info.status.lower()),
                             int(m.get(EPOCH, 0)), float(m.get(BEST_VAL_ACC, float("nan"))),
                             exits, trial_params(run.data.params, constants), int(run.info.start_time or 0),
                             objective, float(m.get(objective.best_key, math.nan)),
                             int(m[BEST_EPOCH]) if BEST_EPOCH in m else None, tags))
    return rank_rows(rows)


def rank_rows(rows: list[TrialRow]) -> list[TrialRow]:
    """Best first by each row's objective; ties go to the lowest trial number, as Optuna's best
    trial does (not to the trial started first: two trials can start in either order), then
    to the earlier start. The one order every reader of a search uses."""
    return sorted(rows, key=lambda r: (-r.objective.score(r.value), trial_number(r.name), r.start_time))


def trial_number(name: str) -> float:
    """03 of `t03`, the Optuna trial number a trial is named by; infinity for other names."""
    digits = name[1:] if name[:1] == "t" else ""
    return int(digits) if digits.isdigit() else math.inf


def varying_params(rows: list[TrialRow]) -> list[str]:
    """Params whose values differ between trials: the searched ones."""
    keys = sorted({k for r in rows for k in r.params})
    return [k for k in keys if len({r.params.get(k) for r in rows}) > 1]


def leaderboard_table(rows: list[TrialRow], max_params: int = 8) -> list[list[str]]:
    """Header and one row of cells per trial: rank, trial, status, epochs, best val acc, exits,
    searched params. Shared by the terminal table and the Markdown report."""
    params = varying_params(rows)[:max_params]
    exit_names = sorted({e for r in rows for e in r.exit_acc if e != "ensemble"}) + \
        (["ensemble"] if any("ensemble" in r.exit_acc for r in rows) else [])
    # A search ranked by another objective than val_acc shows it first (the order of the rows).
    ranked_by = rows[0].objective if rows and rows[0].objective.metric != VAL_ACC else None
    header = ["#", "trial", "status", "epochs"] + ([ranked_by.describe()] if ranked_by else []) + ["val_acc"] + \
        [f"acc.{e}" for e in exit_names] + [p.removeprefix("method.") for p in params]
    table = [header]
    for i, r in enumerate(rows, 1):
        table.append([str(i), r.name, r.status, str(r.epochs)] + ([_fmt(r.value)] if ranked_by else [])
                     + [_fmt(r.best_val_acc)]
                     + [_fmt(r.exit_acc.get(e)) for e in exit_names]
                     + [_short(r.params.get(p, "-")) for p in params])
    return table


def format_leaderboard(rows: list[TrialRow], max_params: int = 8) -> str:
    """A fixed-width text table (see `leaderboard_table`)."""
    if not rows:
        return "(no trials recorded)"
    table = leaderboard_table(rows, max_params)
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)


def _fmt(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.4f}"


def _short(v: str) -> str:
    try:
        f = float(v)
        return f"{f:.4g}" if "." in v or "e" in v else v
    except ValueError:
        return v[:16]


def selectable(rows: list[TrialRow]) -> list[TrialRow]:
    """The trials that may be chosen (`TrialRow.is_selectable`), best first by the objective."""
    return rank_rows([r for r in rows if r.is_selectable])


def best_config(rows: list[TrialRow]) -> dict[str, Any]:
    """Flat config of the best selectable trial, values decoded from MLflow's strings."""
    chosen = selectable(rows)
    if not chosen:
        raise SkdError("the search has no finished trial", "run a search (or let it finish) first")
    return decode_params(chosen[0].params)


def decode_params(params: dict[str, str]) -> dict[str, Any]:
    """MLflow param strings -> config values (non-strings were logged as JSON)."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def search_run_id(store: MlflowStore, experiment: str, search: str | None) -> str | None:
    """Parent run id of the search named `search` (its run name, as printed by a search, or
    its MLflow run id) in `experiment`; None when `search` is None (the latest search)."""
    if not search:
        return None
    c = store.client
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise SkdError(f"no MLflow experiment named {experiment!r} in {store}",
                       "check --experiment and --mlflow-store (the store the search wrote to)")
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`{Tags.KIND}` = 'search'", max_results=5000)
    for run in runs:
        if search in (run.info.run_name, run.info.run_id):
            return run.info.run_id
    raise SkdError(f"experiment {experiment!r} holds no search named {search!r}",
                   "pass --search with a name from `--results` (e.g. " +
                   (runs[0].info.run_name if runs else "<experiment>_<timestamp>") + ") or omit it for the latest")


def format_table(table: list[list[str]]) -> str:
    """Rows of cells (the first is the header) as left-aligned, space-separated columns."""
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)
