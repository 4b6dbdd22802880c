"""A tuned, seed-averaged comparison of self-KD methods against vanilla, on one budget.

For every method (vanilla first, the reference): an ordinary search (its own MLflow parent
run, resumable; same trial count, epochs, early stopping and shared recipe for all, see
`compare_space`), then a final evaluation of its best configuration (`final_eval`, top 1:
retrained on train + validation with the comparison's seeds, scored once on test). The
comparison's own MLflow run is the parent of the searches' and final evaluations' runs
(`mlflow.parentRunId`, so the UI nests them; `skd.compare_run_id` on each as well) and gets the
table (Markdown, CSV, JSON), the plot and a description linking each method's search.

Progress is saved after every step in `<storage>/<name>/skd_compare.json`: after an
interruption, `--resume` skips finished searches and final evaluations, resumes an
interrupted search from Ray Tune's state and runs an interrupted final evaluation again.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from skd_ray.models.flops import count_macs
from skd_ray.results.names import Artifacts, Tags
from skd_ray.results.statuses import FINISHED_SEARCH, REOPENED, Status
from skd_ray.results.store import MlflowStore, StoreOfRequest
from skd_ray.results.tracking import (
    SearchRuns,
)
from skd_ray.search.console.ray_logs import RAY_LOG_FILE, ray_logs_to_file
from skd_ray.search.request import SearchRequest
from skd_ray.search.space.definition import SearchSpace
from skd_ray.search.state.saved import (
    SAMPLE_STAMP,
    STATE_FILE,
    check_folder_names,
    check_resumable,
    final_search_name,
    read_state,
    safe_name,
    shorter_name_fix,
)
from skd_ray.search.state.tune_files import restore_tune_state
from skd_ray.selection.comparison.record import CompareState, MethodStep, load_state, space_dict
from skd_ray.selection.comparison.table import (
    MethodRow,
    comparison_rows,
    draw_plot,
    format_csv,
    format_markdown,
    format_markdown_brief,
)
from skd_ray.selection.export import example_input
from skd_ray.selection.final_eval import FinalRequest, plan_final, run_final_eval
from skd_ray.selection.final_summary import final_config
from skd_ray.training.metrics import TIME_EPOCH_S
from skd_ray.training.resolve import build_run, resolve_config


@dataclass
class CompareRequest(StoreOfRequest):
    """A new comparison as the command line asks for it."""

    methods: list[str]  # the reference (vanilla) first
    spaces: dict[str, SearchSpace]
    storage: str
    tracking_uri: str
    experiment: str
    seeds: list[int]
    settings: dict[str, Any]  # SearchRequest fields shared by every method's search (num_samples, ...)
    address: str | None = None
    verbosity: int = 1
    name: str = field(default_factory=lambda: "")


@dataclass
class CompareOutcome:
    state: CompareState
    folder: Path
    rows: list[MethodRow]
    interrupted: bool


def check_comparison_names(storage: str, experiment: str, methods: list[str]) -> None:
    """A comparison nests its folders: `<experiment>_<time>/` holds each method's search
    (`<comparison>-<method>`, `-again` added when it must be started over) and its final
    evaluation (`final-<that search>_<time>`). All of them must fit the file system under
    `storage`, checked before the comparison's MLflow run or Ray exist."""
    name = safe_name(f"{experiment}_{SAMPLE_STAMP}")
    folders = {name: "the comparison's folder"}
    for method in methods:
        search = safe_name(f"{name}-{method}-again")
        folders[f"{name}/{search}"] = f"the folder of its {method} search"
        folders[f"{name}/{safe_name(final_search_name(search, SAMPLE_STAMP))}"] = \
            f"the folder of its {method} final evaluation"
    check_folder_names(storage, folders, shorter_name_fix(storage, folders, safe_name(experiment), "--experiment"))


def start_comparison(req: CompareRequest) -> tuple[CompareState, Path]:
    """Create the comparison's MLflow run and folder and save its first state."""
    name = req.name or f"{req.experiment}_{time.strftime('%Y%m%d-%H%M%S')}"
    folder = Path(req.storage) / safe_name(name)
    folder.mkdir(parents=True, exist_ok=False)
    runs = SearchRuns.start(
        req.store, req.experiment, safe_name(name),
        {Tags.KIND: "compare", Tags.METHODS: ",".join(req.methods)},
        {"compare.methods": req.methods, "compare.seeds": req.seeds,
         **{f"search.{k}": v for k, v in req.settings.items()},
         **{f"fixed.{k}": v for k, v in req.spaces[req.methods[0]].fixed.items() if k != "method"},
         "search.shared_params": sorted({p.key for p in req.spaces[req.methods[0]].params})})
    state = CompareState(name=safe_name(name), experiment=req.experiment, experiment_id=runs.experiment_id,
                         parent_run_id=runs.parent_run_id, tracking_uri=req.tracking_uri, seeds=req.seeds,
                         settings=req.settings, spaces={m: space_dict(s) for m, s in req.spaces.items()},
                         steps=[MethodStep(m, f"{safe_name(name)}-{m}") for m in req.methods])
    state.save(folder)
    return state, folder


def resume_comparison(folder: Path, tracking_uri: str | None, optuna_storage: str | None = None) -> CompareState:
    """The saved state of an interrupted comparison, its MLflow run reopened; `tracking_uri` and
    `optuna_storage`: where the MLflow store and the searches' studies are now, when moved."""
    state = load_state(folder)
    if tracking_uri:
        state.tracking_uri = tracking_uri
    if optuna_storage:
        state.settings["optuna_storage"] = optuna_storage
    state.store.check_search_run(state.experiment_id, state.parent_run_id)
    SearchRuns(state.store).reopen(state.parent_run_id)
    return state


def run_comparison(state: CompareState, folder: Path, address: str | None, verbosity: int) -> CompareOutcome:
    """Every method's search, then every method's final evaluation, then the table; stops at
    the first interrupted step (the state says what is done). Any ending closes the run."""
    try:
        for step in state.steps:
            if not step.search_done and not run_method_search(state, step, folder, address, verbosity):
                return stopped(state, folder)
        for step in state.steps:
            if not step.final_done and not run_method_final(state, step, folder, address, verbosity):
                return stopped(state, folder)
        rows = comparison_rows([s.result for s in state.steps])
        record_comparison(state, rows)
        state.finished = True
        state.save(folder)
        SearchRuns(state.store).close(state.parent_run_id, Status.COMPLETED)
        return CompareOutcome(state, folder, rows, False)
    except BaseException as err:  # Ctrl-C between steps, a bug, a lost store: resumable
        with contextlib.suppress(Exception):
            state.save(folder)
            status = Status.INTERRUPTED if isinstance(err, KeyboardInterrupt) else Status.FAILED
            SearchRuns(state.store).close(state.parent_run_id, status,
                             None if status == Status.INTERRUPTED else f"{type(err).__name__}: {err}")
        raise


def stopped(state: CompareState, folder: Path) -> CompareOutcome:
    state.save(folder)
    SearchRuns(state.store).close(state.parent_run_id, Status.INTERRUPTED)
    return CompareOutcome(state, folder, [], True)


def link_tags(state: CompareState, method: str) -> dict[str, str]:
    """Tags nesting a method's search or final evaluation under the comparison's run."""
    return {Tags.PARENT_RUN_ID: state.parent_run_id, Tags.COMPARE_RUN_ID: state.parent_run_id,
            Tags.COMPARE_METHOD: method}


def run_method_search(state: CompareState, step: MethodStep, folder: Path, address: str | None,
                      verbosity: int) -> bool:
    """Run (or resume) one method's search; True when it ended, False when interrupted."""
    from skd_ray.search.tuning.tuner import run_search  # local: loads Ray, which the CLI must not at import

    req = resumable_search(state, step, folder)
    if req is None:
        req = SearchRequest(space=state.space(step.method), storage=str(folder), tracking_uri=state.tracking_uri,
                            experiment=state.experiment, search_name=step.search_name,
                            extra_tags=link_tags(state, step.method), **state.settings)
    elif step.search_done:  # it had ended before the interruption
        state.store.client.set_tag(state.parent_run_id, Tags.COMPARE_SEARCH + step.method, step.search_run_id)
        return True
    req.address, req.verbosity = address, verbosity
    print(f"comparison {state.name}: {step.method}: {'resuming' if req.resume else 'searching'} "
          f"({req.num_samples} trials)")
    with ray_logs_to_file(folder / safe_name(step.search_name) / RAY_LOG_FILE, verbosity):
        outcome = run_search(req)
    step.search_run_id = outcome.parent_run_id
    state.store.client.set_tag(state.parent_run_id, Tags.COMPARE_SEARCH + step.method, outcome.parent_run_id)
    if outcome.interrupted:
        state.save(folder)
        return False
    step.search_done = True
    state.save(folder)
    return True


def resumable_search(state: CompareState, step: MethodStep, folder: Path) -> SearchRequest | None:
    """The saved request of a method search that was started before, set to resume; marks the
    step done when it had already ended. None: start it (again). A search killed before Ray
    Tune saved anything cannot be resumed: its run is closed and it starts anew, renamed."""
    from ray import tune  # local: Ray is loaded only once a comparison runs

    exp_dir = folder / safe_name(step.search_name)
    if not (exp_dir / STATE_FILE).exists():
        return None
    if not tune.Tuner.can_restore(str(exp_dir)):
        with contextlib.suppress(Exception):
            SearchRuns(state.store).close(read_state(exp_dir)["parent_run_id"], Status.FAILED,
                             "the comparison was stopped before Ray Tune saved this search; it was started again")
        step.search_name = f"{step.search_name}-again"
        state.save(folder)
        return resumable_search(state, step, folder)
    check = check_resumable(str(folder), step.search_name, state.settings.get("optuna_storage"))
    step.search_run_id = check.parent_run_id
    parent = state.store.check_search_run(check.experiment_id, check.parent_run_id)
    if check.finished and parent.data.tags.get(Tags.STATUS) in FINISHED_SEARCH:
        step.search_done = True
        state.save(folder)
        return check.request
    if check.backup is not None:
        restore_tune_state(exp_dir, check.backup)
    check.request.tracking_uri = state.tracking_uri
    return check.request


def run_method_final(state: CompareState, step: MethodStep, folder: Path, address: str | None,
                     verbosity: int) -> bool:
    """Retrain the method's best configuration with the comparison's seeds; True when done.
    An interrupted final evaluation is run again in full on resume (its runs stay as they ended)."""
    s = state.settings
    req = FinalRequest(tracking_uri=state.tracking_uri, experiment=state.experiment, storage=str(folder), top_k=1,
                       seeds=state.seeds, search=step.search_run_id, workers=s.get("workers", 1),
                       cpus_per_worker=s.get("cpus_per_worker", 1.0), gpus_per_worker=s.get("gpus_per_worker", 0.0),
                       max_concurrent=s.get("max_concurrent"), max_failures=s.get("max_failures", 2), address=address,
                       extra_tags=link_tags(state, step.method), verbosity=verbosity)
    plan = plan_final(req)
    close_superseded_finals(state, step.method)
    print(f"comparison {state.name}: {step.method}: retraining {plan[1][0].name} with seeds {state.seeds}")
    outcome = run_final_eval(req, plan)
    step.final_run_id = outcome.parent_run_id
    state.store.client.set_tag(state.parent_run_id, Tags.COMPARE_FINAL + step.method, outcome.parent_run_id)
    if outcome.interrupted:
        state.save(folder)
        return False
    step.result = method_result(state, step, plan, outcome)
    step.final_done = True
    state.save(folder)
    return True


def close_superseded_finals(state: CompareState, method: str) -> None:
    """Close what an interrupted final evaluation of `method` left open (a killed driver
    leaves its runs `running`, Ctrl-C `interrupted`): a final evaluation is run again in full,
    so those runs will never be continued."""
    reason = "the comparison stopped during this final evaluation; --resume retrained the method again"
    found = state.store.client.search_runs(
        [state.experiment_id], filter_string=f"tags.`{Tags.COMPARE_RUN_ID}` = '{state.parent_run_id}' and "
        f"tags.`{Tags.COMPARE_METHOD}` = '{method}' and tags.`{Tags.KIND}` = 'final'", max_results=1000)
    for run in found:
        if run.data.tags.get(Tags.STATUS) in (None, *REOPENED):  # None: never closed
            final = SearchRuns(state.store, state.experiment_id, run.info.run_id)
            for child in final.open_trials():
                final.close(child, Status.FAILED, reason)
            final.close(None, Status.FAILED, reason)


def method_result(state: CompareState, step: MethodStep, plan: Any, outcome: Any) -> dict[str, Any]:
    """What the table needs of one method: its best trial and searched values, the test
    accuracy per seed, training seconds per epoch (mean over the retrainings' epochs) and the
    deployable network's inference MACs."""
    summary = outcome.summaries[0]
    row = plan[1][0]
    flat = final_config(row.params)
    searched = [p.key for p in state.space(step.method).params if p.active(flat)]  # inactive: not sampled
    return {"method": step.method, "search_name": step.search_name, "search_run_id": step.search_run_id,
            "final_run_id": outcome.parent_run_id, "best_trial": row.name, "search_val_acc": row.best_val_acc,
            "params": {k: flat[k] for k in searched if k in flat}, "seeds": list(state.seeds),
            "test_acc": {str(k): v for k, v in sorted(summary.test_acc.items())},
            "time_epoch_s": epoch_seconds(state.store, state.experiment_id, outcome.parent_run_id),
            "macs": inference_macs(flat)}


def epoch_seconds(store: MlflowStore, experiment_id: str, final_run_id: str) -> float | None:
    """Mean `time_epoch_s` over every epoch of every finished retraining."""
    values = [m.value for run in SearchRuns(store, experiment_id, final_run_id).children()
              if run.data.tags.get(Tags.STATUS) == Status.COMPLETED
              for m in store.metric_history(run.info.run_id, TIME_EPOCH_S)]
    return statistics.fmean(values) if values else None


def inference_macs(flat: dict[str, Any]) -> float | None:
    """MACs per image of the deployable network (backbone and final classifier; the methods'
    extra heads are dropped at inference) for the configuration `flat`."""
    try:
        cfg = resolve_config(flat)
        data, method = build_run(cfg)
        with torch.no_grad():
            return float(count_macs(method.eval().backbone, example_input(data, cfg)[:1]))
    except Exception as err:  # noqa: BLE001 - a missing cost must not lose the comparison's accuracies
        print(f"warning: no MACs for {flat.get('method')} ({type(err).__name__}: {err})")
        return None


def record_comparison(state: CompareState, rows: list[MethodRow]) -> None:
    """The table (JSON, Markdown, CSV), the plot, metrics and a description on the comparison's run."""
    from mlflow.entities import Metric

    c = state.store.client
    now = int(time.time() * 1000)
    metrics = []
    for r in rows:
        pairs = [(f"test_acc_mean.{r.method}", r.test.mean), (f"test_acc_std.{r.method}", r.test.std),
                 (f"test_acc_ci95_low.{r.method}", r.test.low), (f"test_acc_ci95_high.{r.method}", r.test.high)]
        if r.vs_reference is not None:
            pairs += [(f"diff_vs_vanilla.{r.method}", r.vs_reference.diff.mean),
                      (f"p_value.{r.method}", r.vs_reference.p)]
        metrics += [Metric(k, float(v), now, 0) for k, v in pairs if v == v and abs(v) != float("inf")]
    c.log_batch(state.parent_run_id, metrics=metrics)
    with tempfile.TemporaryDirectory(prefix="skd_compare_") as tmp:
        out = write_files(state_payload(state), rows, Path(tmp))
        c.log_artifacts(state.parent_run_id, str(out))
    c.set_tag(state.parent_run_id, Tags.NOTE, description(state, rows))
    state.store.log_params(state.parent_run_id,
               {f"best.{r.method}.{k}": v for r in rows for k, v in r.result.get("params", {}).items()})


def state_payload(state: CompareState) -> dict[str, Any]:
    return {"name": state.name, "experiment": state.experiment, "seeds": state.seeds, "settings": state.settings,
            "results": [s.result for s in state.steps]}


def write_files(payload: dict[str, Any], rows: list[MethodRow], out: Path) -> Path:
    """comparison.json/.md/.csv and comparison.png into `out` (what the run and a report hold)."""
    (out / Artifacts.COMPARE_JSON).write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    (out / Artifacts.COMPARE_CSV).write_text(format_csv(rows), encoding="utf-8")
    plot = None
    try:
        plot = draw_plot(rows, out / Artifacts.COMPARE_PLOT)
    except Exception as err:  # noqa: BLE001 - the numbers matter more than the picture
        print(f"warning: no comparison plot ({type(err).__name__}: {err})")
    (out / Artifacts.COMPARE_MD).write_text(markdown_page(payload, rows, plot is not None), encoding="utf-8")
    return out


def markdown_page(payload: dict[str, Any], rows: list[MethodRow], with_plot: bool) -> str:
    settings = payload.get("settings", {})
    lines = [f"# Comparison {payload.get('name', '')}", "",
             f"{len(rows)} methods, {settings.get('num_samples', '?')} trials each "
             f"({'ASHA early stopping' if settings.get('early_stopping', True) else 'no early stopping'}), "
             f"best configuration by validation accuracy retrained on train + validation with seeds "
             f"{payload.get('seeds')} and scored once on test.", "",
             format_markdown(rows), "",
             "95% CI: Student t with S-1 degrees of freedom. Δ vs vanilla: mean per-seed difference "
             "(seeds are paired: same seed, same data order and split) with its 95% CI; p: two-sided "
             "paired t-test. s/epoch: mean training seconds per epoch of the retrainings. MACs: "
             "deployable network per image.", ""]
    if with_plot:
        lines += [f"![test accuracy against training cost]({Artifacts.COMPARE_PLOT})", ""]
    return "\n".join(lines)


def description(state: CompareState, rows: list[MethodRow]) -> str:
    """The run's Markdown description: the table and a link to each method's search."""
    links = [f"- {s.method}: search [{s.search_name}](#/experiments/{state.experiment_id}/runs/{s.search_run_id}), "
             f"final evaluation [run](#/experiments/{state.experiment_id}/runs/{s.final_run_id})"
             for s in state.steps]
    return "\n".join([format_markdown_brief(rows), "",
                      f"Full table, CSV and plot: artifacts {Artifacts.COMPARE_MD}, {Artifacts.COMPARE_CSV}, "
                      f"{Artifacts.COMPARE_PLOT}.", "", *links])


def load_comparison(store: MlflowStore, run_id: str) -> tuple[dict[str, Any], list[MethodRow]]:
    """A finished comparison read back from its run's `comparison.json`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = store.client.download_artifacts(run_id, Artifacts.COMPARE_JSON, tmp)
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    return payload, comparison_rows(payload["results"])
