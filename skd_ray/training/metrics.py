"""The names of the metrics a run reports: built here and parsed here, nowhere else.

The engine and the early-exit evaluation build these keys; the leaderboard, plots, report,
multi-objective search, final evaluation and export read them back. Keeping both sides in
one module is what lets a name change in one place.

Shape of the names: `<split>_acc` is the deployable network's accuracy on a split (`val`,
`test`), `<split>_acc.<answer>` one exit's (`exit1`, ...), the ensemble's or the dynamic
early-exit policy's at one threshold (`dynamic_t0.95`), `<split>_compute.<answer>` the
relative compute of that answer, `best_<key>` the best value of `<key>` so far, and
`train_<term>` the epoch mean of a loss term (`train_loss` is the total). These are the names
Ray Tune, ASHA, Optuna and a space's `metric:` use; MLflow shows them grouped into chart
sections (`val/acc`, ...: see "Names in MLflow" below), and readers of MLflow translate back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

EPOCH = "epoch"
LR = "lr"
TRAIN_LOSS = "train_loss"
TIME_EPOCH_S = "time_epoch_s"
TIME_STARTUP_S = "time_startup_s"
IS_BEST = "is_best"  # a checkpoint's flag: the best epoch so far
BEST_EPOCH = "best_epoch"  # the first epoch with the best value of the objective (its best checkpoint's)
ENSEMBLE = "ensemble"
FINAL = "final"  # the deployable exit (same name as skd_ray.methods.base.FINAL)
DYNAMIC_PREFIX = "dynamic_t"
BEST_PREFIX = "best_"


def train_term(term: str) -> str:
    """Epoch mean of one loss term (`loss` is the total): `train_<term>`."""
    return f"train_{term}"


def threshold_key(threshold: float) -> str:
    """Name fragment of a confidence threshold, e.g. 0.95 -> 't0.95'."""
    return f"t{threshold:g}"


def dynamic_answer(threshold: float) -> str:
    """The answer of the dynamic early-exit policy at `threshold`, e.g. `dynamic_t0.95`."""
    return f"dynamic_{threshold_key(threshold)}"


def acc(split: str = "val", answer: str | None = None) -> str:
    """Accuracy on `split` of the deployable network (`answer=None`) or of one answer."""
    return f"{split}_acc" if answer is None else f"{split}_acc.{answer}"


def compute(split: str, answer: str) -> str:
    """Relative compute of one answer on `split` (the deployable network is 1)."""
    return f"{split}_compute.{answer}"


def best(key: str) -> str:
    """The best value of `key` so far in a run."""
    return BEST_PREFIX + key


def batch_key(kind: str, answer: str) -> str:
    """A per-batch sum of the early-exit evaluation, before it is named for a split:
    `acc.<answer>` (correct count) or `compute.<answer>` (summed relative compute)."""
    return f"{kind}.{answer}"


def split_key(split: str, key: str) -> str:
    """The reported name of a per-batch key on `split`: the final exit's accuracy is the
    split's plain accuracy (`val_acc`), everything else keeps its answer (`val_acc.exit1`)."""
    return acc(split) if key == batch_key("acc", FINAL) else f"{split}_{key}"


VAL_ACC = acc("val")
BEST_VAL_ACC = best(VAL_ACC)
TEST_ACC = acc("test")


def is_accuracy(key: str, split: str = "val") -> bool:
    """True for `<split>_acc` and every `<split>_acc.<answer>`."""
    base = acc(split)
    return key == base or key.startswith(base + ".")


def is_dynamic(answer: str) -> bool:
    return answer.startswith(DYNAMIC_PREFIX)


def answer_of(key: str, base: str) -> str | None:
    """`exit1` for `base.exit1`; None when `key` is not a per-answer key of `base`."""
    return key.removeprefix(base + ".") if key.startswith(base + ".") else None


def exit_accuracies(metrics: Mapping[str, float], base: str = BEST_VAL_ACC) -> dict[str, float]:
    """Per-exit (and ensemble) accuracies under `base`, without the dynamic policy's sweep."""
    out = {}
    for key, value in metrics.items():
        answer = answer_of(key, base)
        if answer is not None and not is_dynamic(answer):
            out[answer] = value
    return out


def compute_answers(keys: Iterable[str], split: str = "val") -> list[str]:
    """The answers that have a compute metric on `split` (exits, ensemble, dynamic policy)."""
    prefix = f"{split}_compute."
    return [k.removeprefix(prefix) for k in keys if k.startswith(prefix)]


def is_evaluation(key: str, split: str = "val") -> bool:
    """Accuracy or compute of `split`: what one evaluation of a checkpoint produces."""
    return is_accuracy(key, split) or key.startswith(f"{split}_compute.")


def threshold_of(answer: str) -> str:
    """The threshold text of a dynamic answer (`dynamic_t0.95` -> `0.95`)."""
    return answer.removeprefix(DYNAMIC_PREFIX)


# A search's parent run summarises its trials: the best trial's `best_val_acc*` under the same
# names as on the trial (so MLflow's runs table lines parent and trials up in one column), and
# these counts.
TRIALS_PREFIX = "trials."  # trials.completed, trials.early_stopped, trials.failed, ...
EPOCHS_TRAINED = "epochs.trained"  # epochs trained by every trial of the search, in all
EPOCHS_WITHOUT_EARLY_STOP = "epochs.without_early_stopping"  # what the same trials would train in full
EPOCHS_SAVED_FRACTION = "epochs.saved_fraction"  # 1 - trained / without_early_stopping


def trials_with_status(status: str) -> str:
    """A search's count of trials that ended with `status`: `trials.<status>`."""
    return TRIALS_PREFIX + status


# ---- Names in MLflow ---------------------------------------------------------------------
# MLflow's chart view groups a run's metrics into sections by the name up to its last "/"
# (`val`, `train`, `best/val`, ...). So the names above are logged grouped (`logged_name`): `val/acc`, `val/acc.exit1`,
# `val/compute.exit1`, `train/loss`, `train/lr`, `time/epoch_s`, `best/val/acc`, and on a
# search's parent run `trials/completed` and `epochs/trained`. The dynamic early-exit policy is
# charted at one threshold only (`eval.chart_threshold`: `early_exit/val_acc.t0.95` and
# `early_exit/val_compute.t0.95`); its whole sweep goes to a per-run table (`sweep_rows`)
# instead of eight more pairs of charts. Names without "/" are those of searches logged before
# the grouping: `reported_name` reads both, so old searches stay readable.

EARLY_EXIT_GROUP = "early_exit"
BEST_GROUP = "best"
SCORED_SPLITS = ("val", "test")
EVALUATION_KINDS = ("acc", "compute")
SWEEP_COLUMNS = ("epoch", "split", "threshold", *EVALUATION_KINDS)


def evaluation_parts(key: str) -> tuple[str, str, str | None] | None:
    """(split, kind, answer) of `val_acc`, `val_acc.exit1`, `test_compute.dynamic_t0.9`, ...;
    None for any other key."""
    for split in SCORED_SPLITS:
        for kind in EVALUATION_KINDS:
            base = f"{split}_{kind}"
            if key == base:
                return split, kind, None
            if key.startswith(base + "."):
                return split, kind, key[len(base) + 1:]
    return None


def logged_name(key: str, chart_threshold: float | None = None) -> str | None:
    """The MLflow name of reported metric `key`; None for a point of the early-exit sweep
    other than the charted threshold (it goes to the sweep table only)."""
    if key.startswith(BEST_PREFIX):
        inner = logged_name(key.removeprefix(BEST_PREFIX), chart_threshold)
        return None if inner is None else f"{BEST_GROUP}/{inner}"
    parts = evaluation_parts(key)
    if parts is not None:
        split, kind, answer = parts
        if answer is None:
            return f"{split}/{kind}"
        if not is_dynamic(answer):
            return f"{split}/{kind}.{answer}"
        threshold = threshold_of(answer)
        if chart_threshold is None or threshold != f"{chart_threshold:g}":
            return None
        return f"{EARLY_EXIT_GROUP}/{split}_{kind}.t{threshold}"
    if key in {f"{split}_loss" for split in SCORED_SPLITS}:
        return key.replace("_", "/", 1)
    if key == LR:
        return "train/lr"
    for prefix, group in (("train_", "train"), ("time_", "time"), (TRIALS_PREFIX, "trials"), ("epochs.", "epochs")):
        if key.startswith(prefix):
            return f"{group}/{key.removeprefix(prefix)}"
    return key


def reported_name(name: str) -> str:
    """The reported name of MLflow metric `name` (the inverse of `logged_name`); a name without
    "/" (`epoch`, or any metric of a search logged before the grouping) is returned as is."""
    if "/" not in name:
        return name
    group, rest = name.split("/", 1)
    if group == BEST_GROUP:
        return best(reported_name(rest))
    if group in SCORED_SPLITS:
        kind, _, answer = rest.partition(".")
        return f"{group}_{kind}" + (f".{answer}" if answer else "")
    if group == EARLY_EXIT_GROUP:
        base, _, threshold = rest.partition(".t")
        return f"{base}.{DYNAMIC_PREFIX}{threshold}"
    if group == "train":
        return LR if rest == "lr" else train_term(rest)
    prefixes = {"time": "time_", "trials": TRIALS_PREFIX, "epochs": "epochs."}
    return prefixes[group] + rest if group in prefixes else name


def from_logged(metrics: Mapping[str, float]) -> dict[str, float]:
    """A run's MLflow metrics under their reported names, whichever naming the run used."""
    return {reported_name(k): v for k, v in metrics.items()}


def mlflow_names(key: str) -> list[str]:
    """The names reported metric `key` may have in MLflow: grouped, then as logged before the
    grouping (for reading histories of old and new searches alike)."""
    parts = evaluation_parts(key.removeprefix(BEST_PREFIX))
    threshold = None
    if parts is not None and parts[2] is not None and is_dynamic(parts[2]):
        threshold = float(threshold_of(parts[2]))
    grouped = logged_name(key, threshold)
    return [grouped, key] if grouped is not None and grouped != key else [key]


def sweep_rows(metrics: Mapping[str, float], epoch: int) -> list[dict[str, float | int | str]]:
    """The early-exit sweep of one epoch as table rows: epoch, split, threshold, accuracy and
    compute of the dynamic policy at each threshold."""
    rows: dict[tuple[str, str], dict[str, float | int | str]] = {}
    for key, value in metrics.items():
        parts = evaluation_parts(key)
        if parts is None or parts[2] is None or not is_dynamic(parts[2]):
            continue
        split, kind, answer = parts
        threshold = threshold_of(answer)
        row = rows.setdefault((split, threshold), {"epoch": epoch, "split": split, "threshold": float(threshold)})
        row[kind] = float(value)
    return sorted(rows.values(), key=lambda r: (str(r["split"]), float(r["threshold"])))


def sweep_metrics(rows: Iterable[Mapping[str, float | int | str]], epoch: int) -> dict[str, float]:
    """The sweep of `epoch` back as reported metrics (`val_acc.dynamic_t0.9`, ...); a later row
    of the same epoch (the epoch trained again after a restart) replaces an earlier one."""
    out: dict[str, float] = {}
    for row in rows:
        if int(row["epoch"]) != epoch:
            continue
        answer = dynamic_answer(float(row["threshold"]))
        for kind in EVALUATION_KINDS:
            if kind in row and row[kind] == row[kind]:
                out[f"{row['split']}_{kind}.{answer}"] = float(row[kind])
    return out
