"""A finished search's answer, written onto its MLflow runs.

The parent run becomes the search's summary: the best trial's `best_val_acc` (and per exit)
under the trial's own metric names, so the runs table shows parent and trials in one column;
counts of trials by status; epochs trained against what the same trials would have trained
without early stopping; tags naming the best trial and its run, its searched values, and a
short Markdown description (`mlflow.note.content`, MLflow's run description). Every trial run
gets a readable name (`t03 byot lr=0.012 T=5.7`, with `[ASHA@2]` when ASHA stopped it after
epoch 2) and a one-paragraph description.

The best trial is the leaderboard's (`skd_ray.results.leaderboard.selectable`), which the
Optuna study names too (it learns from the same best-epoch value).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skd_ray.results.leaderboard import TrialRow, decode_params, selectable, trial_rows
from skd_ray.results.mlflow_ui import (
    BEST_FIRST_VIEW,
    first_metrics,
    objective_first,
    run_path,
    runs_table_path,
    save_search_view,
)
from skd_ray.results.names import Tags
from skd_ray.results.statuses import Status
from skd_ray.results.store import MlflowStore
from skd_ray.training.metrics import (
    BEST_VAL_ACC,
    EPOCHS_SAVED_FRACTION,
    EPOCHS_TRAINED,
    EPOCHS_WITHOUT_EARLY_STOP,
    acc,
    best,
    logged_name,
    trials_with_status,
)

STATUSES = tuple(s for s in Status if s != Status.COMPLETED_WITH_ERRORS)  # a trial's
SHORT_NAMES = {"temperature": "T"}
NAME_VALUES = 3  # searched values shown in a trial's run name


@dataclass
class SearchSummary:
    """What `summarise_search` wrote, for the console and tests."""

    best: TrialRow | None
    counts: dict[str, int]
    epochs_trained: int
    epochs_full: int
    searched: dict[str, object] = field(default_factory=dict)

    @property
    def saved_fraction(self) -> float:
        return 1.0 - self.epochs_trained / self.epochs_full if self.epochs_full else 0.0


def short_name(key: str) -> str:
    tail = key.rsplit(".", 1)[-1]
    return SHORT_NAMES.get(tail, tail)


def show(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return json.dumps(value).replace(" ", "")
    return str(value)


def searched_values(row: TrialRow, searched_keys: Sequence[str]) -> dict[str, object]:
    values = decode_params(row.params)
    return {k: values[k] for k in searched_keys if k in values}


def trial_run_name(label: str, method: str, values: Mapping[str, object], status: str, epochs: int) -> str:
    """`t03 byot lr=0.012 T=5.7`; `t03 [ASHA@2] byot ...` when ASHA stopped it after epoch 2 (or
    `[failed]`, `[interrupted]`): the mark follows the number, so a narrow runs-table column
    still shows it."""
    numeric = [(k, v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    shown = " ".join(f"{short_name(k)}={show(v)}" for k, v in numeric[:NAME_VALUES])
    marks = {Status.EARLY_STOPPED: f"[ASHA@{epochs}]", Status.FAILED: "[failed]", Status.INTERRUPTED: "[interrupted]"}
    mark = marks.get(status)
    return " ".join(part for part in (label, mark, method, shown) if part)


def trial_description(label: str, row: TrialRow, max_epochs: int, best_epoch: int | None,
                      values: Mapping[str, object]) -> str:
    """One paragraph: how the trial ended, its epochs and best epoch, its searched values."""
    ended = {Status.COMPLETED: f"completed all {max_epochs} epochs",
             Status.EARLY_STOPPED: f"stopped by ASHA after {row.epochs} of {max_epochs} epochs",
             Status.FAILED: f"failed after {row.epochs} epoch(s)",
             Status.INTERRUPTED: f"interrupted after {row.epochs} epoch(s) (`--resume` continues it)"}
    text = f"Trial **{label}** {ended.get(row.status, row.status)}."
    if row.value == row.value:
        at = f" at epoch {best_epoch}" if best_epoch else ""
        text += f" Best {best_text(row)}{at} (its `best_checkpoint.pt`)."
    if values:
        text += " Searched values: " + ", ".join(f"`{k}`={show(v)}" for k, v in values.items()) + "."
    return text


def best_text(row: TrialRow) -> str:
    """`val_acc **0.9312**`, or `val_loss **0.2011** (min; val_acc 0.9312)` for another objective."""
    if row.objective.metric == acc("val"):
        return f"val_acc **{row.value:.4f}**"
    return f"{row.objective.metric} **{row.value:.4f}** ({row.objective.mode}; val_acc {row.best_val_acc:.4f})"


def best_epoch_of(row: TrialRow, history: list[Any]) -> int | None:
    """The first epoch with the run's best value of the objective (its best checkpoint's): as
    the run reported it (`best_epoch`), else (runs logged before that metric) from `history`,
    the run's history of the objective."""
    if row.best_epoch is not None:
        return row.best_epoch
    if not history:
        return None
    top = row.objective.rank(history, lambda m: m.value)[0].value
    return min(m.step for m in history if m.value == top)


def objective_histories(store: MlflowStore, rows: list[TrialRow]) -> dict[str, list[Any]]:
    """The objective's history of the runs that did not report their best epoch (logged before
    `best_epoch` existed), read in batches."""
    older = [r for r in rows if r.best_epoch is None and r.value == r.value]
    histories: dict[str, list[Any]] = {}
    for metric in {r.objective.metric for r in older}:
        histories.update(store.metric_histories([r.run_id for r in older if r.objective.metric == metric], metric))
    return histories


def summarise_search(store: MlflowStore, experiment_id: str, parent_run_id: str, search_name: str, max_epochs: int,
                     searched_keys: Sequence[str], labels: Mapping[str, str] | None = None,
                     study: str | None = None) -> SearchSummary:
    """Write the summary onto the parent run and name and describe every trial run (see the
    module docstring). `labels` maps Ray trial ids to the trials' numbers (`t03`); `study`
    says where the Optuna study is, for the description."""
    from mlflow.entities import Metric, RunTag

    c = store.client
    rows = trial_rows(store, experiment_id, parent_run_id)
    histories = objective_histories(store, rows)
    for row in rows:
        label = (labels or {}).get(row.tags.get(Tags.TRIAL_ID, "")) or row.name
        values = searched_values(row, searched_keys)
        name = trial_run_name(label, row.tags.get(Tags.METHOD, ""), values, row.status, row.epochs)
        note = trial_description(label, row, max_epochs, best_epoch_of(row, histories.get(row.run_id, [])), values)
        # One request per trial, none for a trial already named and described so (a resumed
        # search summarised again): the run name goes as its tag, which MLflow keeps in step.
        wanted = {Tags.RUN_NAME: name, Tags.TRIAL_NAME: label, Tags.NOTE: note}
        changed = [RunTag(k, v) for k, v in wanted.items() if row.tags.get(k) != v]
        if changed:
            c.log_batch(row.run_id, tags=changed)
        row.name = label
    counts = Counter(r.status for r in rows)
    ran = [r for r in rows if r.epochs > 0]
    summary = SearchSummary(next(iter(selectable(rows)), None), {s: counts.get(s, 0) for s in STATUSES},
                            sum(r.epochs for r in ran), len(ran) * max_epochs)
    metrics = {trials_with_status(s): float(n) for s, n in summary.counts.items()}
    metrics[trials_with_status("all")] = float(len(rows))
    metrics[EPOCHS_TRAINED] = float(summary.epochs_trained)
    metrics[EPOCHS_WITHOUT_EARLY_STOP] = float(summary.epochs_full)
    metrics[EPOCHS_SAVED_FRACTION] = summary.saved_fraction
    tags: dict[str, str] = {}
    if summary.best is not None:
        top = summary.best
        summary.searched = searched_values(top, searched_keys)
        metrics[BEST_VAL_ACC] = top.best_val_acc
        metrics[top.objective.best_key] = top.value  # the objective's, when it is not val_acc
        metrics.update({best(acc("val", e)): v for e, v in top.exit_acc.items()})
        tags[Tags.BEST_RUN_ID] = top.run_id
        tags[Tags.BEST_TRIAL] = top.name
        tags.update({Tags.BEST_VALUE_PREFIX + k: show(v) for k, v in summary.searched.items()})
    objective = rows[0].objective if rows else None
    view: str | None = BEST_FIRST_VIEW
    try:  # cosmetic: without it the description links to MLflow's own runs table
        save_search_view(c, experiment_id, objective)
    except Exception:  # noqa: BLE001 - e.g. a tracking server that refuses experiment tags
        view = None  # a link to a view that does not exist ends on MLflow's GenAI pages
    tags[Tags.NOTE] = search_description(search_name, experiment_id, summary, max_epochs, study, view)
    # Under the trials' MLflow names, so the runs table lines the parent up with its trials; the
    # objective first, as MLflow lists a run's metrics (and its compare page plots the first
    # one) in the order they were first logged.
    named = {logged_name(k) or k: v for k, v in metrics.items()}
    first = first_metrics(objective)
    c.log_batch(parent_run_id, metrics=[Metric(k, named[k], 0, 0) for k in objective_first(named, first)],
                tags=[RunTag(k, v) for k, v in tags.items()])
    return summary


def search_description(search_name: str, experiment_id: str, s: SearchSummary, max_epochs: int,
                       study: str | None, view: str | None = BEST_FIRST_VIEW) -> str:
    """The parent run's Markdown description: the answer first, then how it was reached; its
    link to the runs table opens saved view `view` (None: MLflow's own table)."""
    counts = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in s.counts.items() if n)
    lines = [f"**{search_name}**: {sum(s.counts.values())} trials ({counts or 'none'})."]
    if s.best is not None:
        link = run_path(experiment_id, s.best.run_id)
        lines.append(f"Best: **{s.best.name}**, {best_text(s.best)} "
                     f"([open its run]({link})); searched values: "
                     + (", ".join(f"`{k}`={show(v)}" for k, v in s.searched.items()) or "none") + ".")
    else:
        lines.append("No trial finished, so there is no best configuration.")
    if s.epochs_full:
        lines.append(f"Epochs trained: {s.epochs_trained} of the {s.epochs_full} that these trials would train "
                     f"without early stopping ({max_epochs} each; {s.saved_fraction:.0%} saved by ASHA).")
    if study:
        objective = s.best.objective.best_key if s.best else "best_val_acc"
        lines.append(f"Optuna study: {study} (objective `{objective}`).")
    lines.append("Plots: the `plots/` artifacts of this run. Every trial, best first: "
                 f"[the runs table]({runs_table_path(experiment_id, view)}).")
    return "\n\n".join(lines)
