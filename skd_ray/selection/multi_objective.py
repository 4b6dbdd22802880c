"""Accuracy/compute search for multi-exit methods: objectives, checks, and the Pareto front.

The two objectives belong to one deployment, the dynamic early-exit policy at a confidence
threshold T (see `skd_ray.training.early_exit`): its validation accuracy `val_acc.dynamic_t<T>`
(maximised) and its expected compute `val_compute.dynamic_t<T>` (minimised; MACs per image
relative to the plain backbone, the exit heads it ran included). Pairing the deployable
network's accuracy with the policy's compute would put trials on the front whose accuracy
no early-exit deployment reaches. Both are read at a trial's last epoch, as Optuna is told.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from skd_ray.errors import SkdError
from skd_ray.methods import METHODS, get_method_spec, method_names
from skd_ray.results.leaderboard import format_table, varying_params
from skd_ray.results.names import Tags
from skd_ray.results.statuses import Status
from skd_ray.results.store import MlflowStore
from skd_ray.results.tracking import SearchRuns, constants_of, trial_params
from skd_ray.search.space.definition import SearchSpace
from skd_ray.selection.final_summary import param_cell
from skd_ray.selection.pareto import pareto_front
from skd_ray.training.metrics import VAL_ACC, acc, compute, dynamic_answer, from_logged
from skd_ray.training.resolve import resolve_config

# BYOT's official thresholds lie around 0.95-0.98; 0.95 is one of eval.thresholds' defaults.
DEFAULT_THRESHOLD = 0.95


def objectives(threshold: float) -> list[tuple[str, str]]:
    """(metric, mode) of the two objectives at `threshold`."""
    answer = dynamic_answer(threshold)
    return [(acc("val", answer), "max"), (compute("val", answer), "min")]


def check_multi_objective(space: SearchSpace, threshold: float) -> None:
    """Refuse, before anything starts, a space whose methods have no early exits or whose
    evaluation does not measure the policy at `threshold`."""
    single = [m for m in space.methods() if not get_method_spec(m).cls.multi_exit]
    if single:
        with_exits = [n for n in method_names() if METHODS[n].cls.multi_exit]
        raise SkdError(f"--multi-objective needs a method with early exits, but {space.path} trains "
                       f"{', '.join(single)} (one exit at inference, so there is no compute trade-off)",
                       f"search a multi-exit method instead: {', '.join(with_exits)} (e.g. --method byot)")
    thresholds = resolve_config(space.defaults()).eval.thresholds
    if threshold not in thresholds:
        raise SkdError(f"--compute-threshold {threshold:g} is not among eval.thresholds {thresholds}",
                       "pass one of them, or add it with --set eval.thresholds=[...]")


@dataclass
class ParetoTrial:
    """A trial evaluated on every objective, and whether it is on the front."""

    name: str
    run_id: str
    values: list[float]
    val_acc: float  # the deployable network's accuracy, for reference
    params: dict[str, str]
    on_front: bool = False


def evaluated_trials(store: MlflowStore, experiment_id: str, parent_run_id: str,
                     objs: list[tuple[str, str]]) -> list[ParetoTrial]:
    """Completed trials of the search with a value for every objective (their last epoch)."""
    out = []
    runs = SearchRuns(store, experiment_id, parent_run_id)
    constants = constants_of(runs.client.get_run(parent_run_id).data.params)
    for run in runs.children():
        m = from_logged(run.data.metrics)
        if run.data.tags.get(Tags.STATUS) != Status.COMPLETED or any(k not in m for k, _ in objs):
            continue
        out.append(ParetoTrial(run.data.tags.get(Tags.TRIAL_NAME, run.info.run_name or run.info.run_id),
                               run.info.run_id, [float(m[k]) for k, _ in objs], float(m.get(VAL_ACC, "nan")),
                               trial_params(run.data.params, constants)))
    return out


def record_pareto_front(store: MlflowStore, experiment_id: str, parent_run_id: str,
                        objs: list[tuple[str, str]]) -> list[ParetoTrial]:
    """Compute the front, tag every evaluated trial `skd.pareto=true|false` and log the
    front as `pareto_front.json` / `.csv` on the search's parent run; returns all trials
    (front first, by the last objective)."""
    trials = evaluated_trials(store, experiment_id, parent_run_id, objs)
    for i in pareto_front([t.values for t in trials], [mode for _, mode in objs]):
        trials[i].on_front = True
    trials.sort(key=lambda t: (not t.on_front, t.values[-1] if objs[-1][1] == "min" else -t.values[-1]))
    c = store.client
    for t in trials:
        c.set_tag(t.run_id, Tags.PARETO, str(t.on_front).lower())
    front = [t for t in trials if t.on_front]
    rows = [front_row(t, objs) for t in front]
    c.log_text(parent_run_id, json.dumps({"objectives": [{"metric": k, "mode": d} for k, d in objs],
                                          "evaluated_trials": len(trials), "front": rows}, indent=2),
               "pareto_front.json")
    c.log_text(parent_run_id, front_csv(rows), "pareto_front.csv")
    return trials


def front_row(t: ParetoTrial, objs: list[tuple[str, str]]) -> dict[str, Any]:
    return {"trial": t.name, "run_id": t.run_id, **{k: v for (k, _), v in zip(objs, t.values)},
            "val_acc": t.val_acc, "params": t.params}


def front_csv(rows: list[dict[str, Any]]) -> str:
    """The front as CSV (params as one JSON column, so every row has the same columns)."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "params": json.dumps(row["params"], sort_keys=True)})
    return buf.getvalue()


def format_front(trials: list[ParetoTrial], objs: list[tuple[str, str]], max_params: int = 6) -> str:
    """Fixed-width table of the Pareto trials: objectives, deployable val_acc, searched params."""
    front = [t for t in trials if t.on_front]
    if not front:
        return "(no completed trial reported both objectives)"
    params = varying_params(trials)[:max_params]  # reads only each trial's `params`
    header = ["trial"] + [f"{k} ({d})" for k, d in objs] + ["val_acc"] + [p.removeprefix("method.") for p in params]
    table = [header] + [[t.name] + [f"{v:.4f}" for v in t.values] + [f"{t.val_acc:.4f}"]
                        + [param_cell(t.params.get(p, "-")) for p in params] for t in front]
    return format_table(table)
