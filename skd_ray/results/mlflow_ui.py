"""What a person sees of a search in MLflow's UI (3.17): the addresses skd-ray writes and prints,
the runs-table view it saves on the experiment, and which metric a run lists first.

- MLflow 3 shows an experiment and its runs in its GenAI pages ("Evaluations", traces) unless
  the address carries `workflowType=machine_learning` or the browser keeps that choice (one
  click on "Model training"). MLflow's own links (a parent's child runs, the runs table's
  names) drop the parameter, and there is no server option or experiment tag for it in 3.17:
  every address skd-ray writes carries it, and the docs say to click "Model training" once.
- The runs table opens with the columns Created, Dataset, Source and Models, newest first,
  nothing of a search's answer. A saved view (an experiment tag `mlflow.sharedViewState.<key>`,
  listed in the table's "Views" menu and opened by `viewStateShareKey=<key>`) holds the
  columns and sort a person would pick: `best_first_view` shows the objective, best first,
  with the run-name column wide enough for `t03 [ASHA@2] byot alpha=...`.
- A run's metrics are listed (run page, compare page, where the parallel-coordinates plot
  starts with the first metric all compared runs share) in the order the store returns them,
  which in an SQLite store is the order they were first logged: `objective_first` puts the
  objective first in a run's first batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from skd_ray.results.names import Tags
from skd_ray.training.metrics import BEST_VAL_ACC, EPOCH, VAL_ACC, logged_name
from skd_ray.training.objective import Objective

ML_WORKFLOW = "workflowType=machine_learning"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow's saved views: one experiment tag each
VIEW_KEY_PARAM = "viewStateShareKey"
BEST_FIRST_VIEW = "skd-best-first"
BEST_FIRST_VIEW_NAME = "skd-ray: best first"
RUN_NAME_COLUMN = "attributes.`Run Name`"
RUN_NAME_WIDTH = 400  # px: `t03 [ASHA@2] byot alpha=0.3 T=5.71 lr=0.0123` whole (MLflow's default: 190)
# What a trial lists first when its tracker is not told the objective: the best epoch's
# validation accuracy (the default objective), then the epoch's.
FIRST_METRICS = (logged_name(BEST_VAL_ACC), logged_name(VAL_ACC))


def run_path(experiment_id: str, run_id: str) -> str:
    """`#/experiments/<id>/runs/<run>?workflowType=machine_learning`: a run's page in the model
    training view, as a link inside MLflow (a run description's Markdown) or after its address."""
    return f"#/experiments/{experiment_id}/runs/{run_id}?{ML_WORKFLOW}"


def runs_table_path(experiment_id: str, view: str | None = BEST_FIRST_VIEW) -> str:
    """The experiment's runs table in the model training view, in saved view `view` (None: the
    browser's own)."""
    shown = f"&{VIEW_KEY_PARAM}={view}" if view else ""
    return f"#/experiments/{experiment_id}/runs?{ML_WORKFLOW}{shown}"


def metric_column(name: str) -> str:
    """The runs table's column (and sort key) of MLflow metric `name`."""
    return f"metrics.`{name}`"


def tag_column(name: str) -> str:
    return f"tags.`{name}`"


def best_first_view(metric: str, ascending: bool = False, columns: Sequence[str] = ()) -> dict[str, Any]:
    """The runs-table state of the saved view: runs sorted by MLflow metric `metric` (best
    first: descending unless `ascending`), its column and `columns` shown beside the run name
    instead of Dataset, Source and Models, and the run-name column wide enough for a trial's
    mark. Sorting by a metric lists parent and trials in one flat table (MLflow nests children
    only in its default order), so the search's parent run stands beside its best trial."""
    shown = [metric_column(metric), *columns]
    return {
        "searchFilter": "", "orderByKey": metric_column(metric), "orderByAsc": ascending, "startTime": "ALL",
        "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": shown,
        # MLflow applies widths only to the columns named in the order.
        "columnOrder": [RUN_NAME_COLUMN, *shown],
        "columnWidths": {RUN_NAME_COLUMN: RUN_NAME_WIDTH},
    }


def save_view(client: Any, experiment_id: str, key: str, name: str, state: dict[str, Any],
              now_ms: int | None = None) -> None:
    """Store `state` as the experiment's saved view `key`, in the envelope MLflow's "Views" menu
    writes (`{name, createdAt, updatedAt, state}`, the state as JSON text); a view saved before
    keeps its creation time."""
    tag = VIEW_TAG_PREFIX + key
    now = int(time.time() * 1000) if now_ms is None else now_ms
    created = now
    old = client.get_experiment(experiment_id).tags.get(tag)
    if old:
        try:
            created = int(json.loads(old)["createdAt"])
        except (ValueError, KeyError, TypeError):
            pass
    envelope = {"name": name, "createdAt": created, "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, tag, json.dumps(envelope))


def saved_view(client: Any, experiment_id: str, key: str) -> dict[str, Any] | None:
    """The state of the experiment's saved view `key`; None when there is none."""
    text = client.get_experiment(experiment_id).tags.get(VIEW_TAG_PREFIX + key)
    return None if text is None else json.loads(json.loads(text)["state"])


def save_best_first_view(client: Any, experiment_id: str, metric: str, ascending: bool = False,
                         columns: Sequence[str] = ()) -> None:
    """Save (or refresh) the experiment's view `skd-ray: best first` (`best_first_view`)."""
    save_view(client, experiment_id, BEST_FIRST_VIEW, BEST_FIRST_VIEW_NAME,
              best_first_view(metric, ascending, columns))


def objective_first(names: Iterable[str], first: Sequence[str]) -> list[str]:
    """`names` with those in `first` moved to the front, in `first`'s order; the rest keep theirs."""
    names = list(names)
    return [n for n in first if n in names] + [n for n in names if n not in first]


def objective_metric(objective: Objective | None = None) -> str:
    """The MLflow name of a run's best value of `objective` (`best/val/acc` by default)."""
    key = (objective or Objective()).best_key
    return logged_name(key) or key


def first_metrics(objective: Objective | None = None) -> tuple[str, ...]:
    """What a run of a search lists first: its objective's best value, then `FIRST_METRICS`."""
    return tuple(dict.fromkeys((objective_metric(objective), *FIRST_METRICS)))


def save_search_view(client: Any, experiment_id: str, objective: Objective | None = None) -> None:
    """The best-first view of a search's experiment: the objective's best value (best first in
    its direction), the epochs a trial trained (its last `epoch`) and how it ended (`skd.status`)."""
    objective = objective or Objective()
    save_best_first_view(client, experiment_id, objective_metric(objective), objective.mode == "min",
                         (metric_column(EPOCH), tag_column(Tags.STATUS)))
