"""Everything the plots and the Markdown report show about one search, read from MLflow.

Read from MLflow only (like the leaderboard), so plots and reports can be made on any machine
that reaches the tracking store, for searches finished long ago or elsewhere. One
`SearchData` is loaded once and then drawn and written without further queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skd_ray.results.leaderboard import TrialRow, find_search_run, trial_rows
from skd_ray.results.names import Tags
from skd_ray.results.store import MlflowStore
from skd_ray.training.early_exit import Tradeoff, tradeoff_from_metrics
from skd_ray.training.metrics import VAL_ACC, is_evaluation, reported_name, sweep_metrics

OBJECTIVE = VAL_ACC  # what searches select on (validation accuracy of the deployable network)
SEARCH_TAGS = (Tags.SPACE, Tags.METHODS, Tags.GIT_COMMIT)


@dataclass
class TradeoffOfTrial:
    """Early-exit trade-off of one trial at its best epoch (the epoch of its best checkpoint)."""

    trial: str
    epoch: int
    tradeoff: Tradeoff


@dataclass
class SearchData:
    """A search as the plots and the report need it."""

    experiment: str
    run_name: str
    run_id: str
    status: str
    settings: dict[str, str]  # the parent run's params (search.*, fixed.*)
    tags: dict[str, str]
    rows: list[TrialRow]  # leaderboard order: best validation accuracy first
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # top trials: (epoch, val_acc)
    tradeoff: TradeoffOfTrial | None = None
    # Searched keys with `log: true` in the space (None: a search that did not record them).
    log_params: set[str] | None = None

    def log_scale(self, key: str) -> bool | None:
        """Whether the space samples `key` on a log scale; None when the search did not say."""
        return None if self.log_params is None else key in self.log_params

    def scored(self) -> list[TrialRow]:
        """Trials with a validation accuracy that did not fail, best first."""
        return [r for r in self.rows if r.is_scored]

    def in_start_order(self) -> list[TrialRow]:
        """Every trial in the order the search started them (Optuna's trial order)."""
        return sorted(self.rows, key=lambda r: (r.start_time, r.name))


def load_search_data(store: MlflowStore, experiment: str, parent_run_id: str | None = None,
                     top_n: int | None = None, rows: list[TrialRow] | None = None) -> SearchData:
    """The given (or latest) search of `experiment`: leaderboard rows (`rows` when the caller
    read them already), the validation curves of its `top_n` best trials and the early-exit
    trade-off of its best multi-exit trial."""
    exp_id, parent = find_search_run(store, experiment, parent_run_id)
    if rows is None:
        rows = trial_rows(store, exp_id, parent.info.run_id)
    tags = parent.data.tags
    data = SearchData(experiment, parent.info.run_name or parent.info.run_id, parent.info.run_id,
                      tags.get(Tags.STATUS, parent.info.status.lower()), dict(parent.data.params),
                      {k: tags[k] for k in SEARCH_TAGS if k in tags}, rows)
    if Tags.LOG_PARAMS in tags:
        data.log_params = {k for k in tags[Tags.LOG_PARAMS].split(",") if k}
    curved = data.scored()[:top_n]
    histories = store.metric_histories([r.run_id for r in curved], OBJECTIVE)  # a few queries, not one per trial
    for row in curved:
        data.curves[row.name] = [(m.step, m.value) for m in per_epoch(histories.get(row.run_id, []))]
    data.tradeoff = best_tradeoff(store, data.scored())
    return data


def best_tradeoff(store: MlflowStore, scored: list[TrialRow]) -> TradeoffOfTrial | None:
    """The trade-off of the best trial whose method has early exits (a cross-method search's
    best trial may be a single-exit method), at that trial's best epoch."""
    for row in scored:
        if not any(name != "ensemble" for name in row.exit_acc):
            continue
        metrics, epoch = metrics_at_best_epoch(store, row.run_id)
        found = tradeoff_from_metrics(metrics)
        if found is not None:
            return TradeoffOfTrial(row.name, epoch, found)
    return None


def metrics_at_best_epoch(store: MlflowStore, run_id: str) -> tuple[dict[str, float], int]:
    """Every validation metric of a run at the epoch with the best `val_acc` (the first such
    epoch, as the best checkpoint is), and that epoch. The dynamic policy's metrics of one
    epoch belong together: per-metric bests would mix epochs."""
    history = _history(store, run_id, OBJECTIVE)
    if not history:
        return {}, 0
    best = max(history, key=lambda m: (m.value, -m.step))
    out: dict[str, float] = {}
    for key in map(reported_name, store.client.get_run(run_id).data.metrics):
        if not is_evaluation(key, "val"):
            continue
        values = {m.step: m.value for m in _history(store, run_id, key)}
        if best.step in values:
            out[key] = values[best.step]
    # The early-exit sweep at the other thresholds is a table, not metrics (older searches: metrics).
    sweep = sweep_metrics(store.early_exit_sweep(run_id), best.step)
    out.update({k: v for k, v in sweep.items() if is_evaluation(k, "val")})
    return out, best.step


def _history(store: MlflowStore, run_id: str, key: str) -> list[Any]:
    return per_epoch(store.metric_history(run_id, key))


def per_epoch(history: list[Any]) -> list[Any]:
    """One point per epoch, in epoch order; an epoch logged twice (a trial restarted from its
    checkpoint re-trains it) keeps its latest value."""
    latest = {m.step: m for m in sorted(history, key=lambda m: m.timestamp)}
    return [latest[step] for step in sorted(latest)]
