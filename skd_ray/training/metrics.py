"""The names of the metrics a run reports: built here and parsed here, nowhere else.

The engine and the early-exit evaluation build these keys; the leaderboard, plots, report,
multi-objective search, final evaluation and export read them back. Keeping both sides in
one module is what lets a name change in one place.

Shape of the names: `<split>_acc` is the deployable network's accuracy on a split (`val`,
`test`), `<split>_acc.<answer>` one exit's (`exit1`, ...), the ensemble's or the dynamic
early-exit policy's at one threshold (`dynamic_t0.95`), `<split>_compute.<answer>` the
relative compute of that answer, `best_<key>` the best value of `<key>` so far, and
`train_<term>` the epoch mean of a loss term (`train_loss` is the total).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

EPOCH = "epoch"
LR = "lr"
TRAIN_LOSS = "train_loss"
TIME_EPOCH_S = "time_epoch_s"
TIME_STARTUP_S = "time_startup_s"
IS_BEST = "is_best"  # a checkpoint's flag: the best epoch so far
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
