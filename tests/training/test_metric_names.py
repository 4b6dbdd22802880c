"""The metric-name contract (skd_ray.training.metrics): what the engine writes is what readers
parse, and the names MLflow shows (grouped into chart sections) read back as the engine's,
for new searches and for searches logged before the grouping."""

from __future__ import annotations

import pytest

from skd_ray.training import metrics as names
from skd_ray.training.metrics import (
    from_logged,
    logged_name,
    mlflow_names,
    reported_name,
    sweep_metrics,
    sweep_rows,
)


def test_builders_give_the_documented_names() -> None:
    assert names.acc() == "val_acc" and names.acc("test") == "test_acc"
    assert names.acc("val", "exit1") == "val_acc.exit1"
    assert names.compute("val", names.dynamic_answer(0.95)) == "val_compute.dynamic_t0.95"
    assert names.best(names.acc("val", "exit2")) == "best_val_acc.exit2"
    assert names.train_term("loss") == names.TRAIN_LOSS == "train_loss"
    assert names.split_key("val", names.batch_key("acc", names.FINAL)) == "val_acc"
    assert names.split_key("test", names.batch_key("acc", "exit1")) == "test_acc.exit1"


def test_parsers_read_back_what_builders_write() -> None:
    metrics = {names.BEST_VAL_ACC: 0.9, names.best(names.acc("val", "exit1")): 0.7,
               names.best(names.acc("val", names.ENSEMBLE)): 0.92,
               names.best(names.acc("val", names.dynamic_answer(0.9))): 0.88, names.EPOCH: 3}
    assert names.exit_accuracies(metrics) == {"exit1": 0.7, "ensemble": 0.92}
    keys = [names.compute("val", "exit1"), names.compute("val", names.dynamic_answer(0.8)), "val_acc"]
    assert names.compute_answers(keys) == ["exit1", "dynamic_t0.8"]
    assert names.is_accuracy("val_acc") and names.is_accuracy("val_acc.exit3")
    assert not names.is_accuracy("val_accuracy") and not names.is_accuracy("test_acc")
    assert names.is_evaluation("val_compute.exit1") and not names.is_evaluation("train_loss")
    assert names.threshold_of(names.dynamic_answer(0.875)) == "0.875"
    assert names.answer_of("val_acc.exit1", "val_acc") == "exit1" and names.answer_of("val_acc", "val_acc") is None


# (reported by the engine, as MLflow shows it with 0.95 charted); None: sweep table only.
NAMES = [
    ("epoch", "epoch"),
    ("lr", "train/lr"),
    ("train_loss", "train/loss"),
    ("train_ce_final", "train/ce_final"),
    ("time_epoch_s", "time/epoch_s"),
    ("time_startup_s", "time/startup_s"),
    ("val_acc", "val/acc"),
    ("val_acc.exit1", "val/acc.exit1"),
    ("val_acc.ensemble", "val/acc.ensemble"),
    ("val_compute.exit2", "val/compute.exit2"),
    ("val_loss", "val/loss"),
    ("best_val_loss", "best/val/loss"),
    ("time_data_frac", "time/data_frac"),
    ("val_acc.dynamic_t0.95", "early_exit/val_acc.t0.95"),
    ("val_compute.dynamic_t0.95", "early_exit/val_compute.t0.95"),
    ("val_acc.dynamic_t0.5", None),
    ("val_compute.dynamic_t0.99", None),
    ("best_val_acc", "best/val/acc"),
    ("best_val_acc.exit3", "best/val/acc.exit3"),
    ("best_val_acc.dynamic_t0.95", "best/early_exit/val_acc.t0.95"),
    ("best_val_acc.dynamic_t0.8", None),
    ("test_acc", "test/acc"),
    ("test_acc.exit1", "test/acc.exit1"),
    ("trials.early_stopped", "trials/early_stopped"),
    ("epochs.saved_fraction", "epochs/saved_fraction"),
]


@pytest.mark.parametrize("reported, logged", NAMES)
def test_each_metric_has_its_section_and_reads_back(reported: str, logged: str | None) -> None:
    assert logged_name(reported, 0.95) == logged
    if logged is not None:
        assert reported_name(logged) == reported
    # A search logged before the grouping used the reported names: they read as themselves.
    assert reported_name(reported) == reported


def test_only_the_charted_threshold_of_the_sweep_is_a_metric() -> None:
    sweep = {f"val_acc.dynamic_t{t:g}": 0.5 for t in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)}
    assert [logged_name(k, 0.9) for k in sweep].count(None) == 7
    assert [logged_name(k, None) for k in sweep].count(None) == 8
    assert logged_name("val_acc.dynamic_t0.9", 0.9) == "early_exit/val_acc.t0.9"


def test_from_logged_reads_new_and_old_names_alike() -> None:
    new = {"val/acc": 0.8, "best/val/acc.exit1": 0.7, "epoch": 3.0, "early_exit/val_compute.t0.95": 0.6}
    old = {"val_acc": 0.8, "best_val_acc.exit1": 0.7, "epoch": 3.0, "val_compute.dynamic_t0.95": 0.6}
    assert from_logged(new) == from_logged(old) == old
    assert mlflow_names("val_acc") == ["val/acc", "val_acc"]
    assert mlflow_names("val_acc.dynamic_t0.5") == ["early_exit/val_acc.t0.5", "val_acc.dynamic_t0.5"]
    assert mlflow_names("epoch") == ["epoch"]


def test_sweep_rows_and_back() -> None:
    metrics = {"val_acc": 0.9, "val_acc.dynamic_t0.5": 0.7, "val_compute.dynamic_t0.5": 0.4,
               "val_acc.dynamic_t0.9": 0.85, "val_compute.dynamic_t0.9": 0.8, "best_val_acc.dynamic_t0.9": 0.86,
               "test_acc.dynamic_t0.9": 0.84}
    rows = sweep_rows(metrics, 4)
    assert rows == [
        {"epoch": 4, "split": "test", "threshold": 0.9, "acc": 0.84},
        {"epoch": 4, "split": "val", "threshold": 0.5, "acc": 0.7, "compute": 0.4},
        {"epoch": 4, "split": "val", "threshold": 0.9, "acc": 0.85, "compute": 0.8},
    ]
    # A later row of the same epoch (trained again after a restart) wins; other epochs are ignored.
    again = [{**r, "acc": r["acc"] + 0.01} for r in rows]
    earlier = [{**r, "epoch": 3} for r in rows]
    back = sweep_metrics(earlier + rows + again, 4)
    assert back == {"test_acc.dynamic_t0.9": pytest.approx(0.85), "val_acc.dynamic_t0.5": pytest.approx(0.71),
                    "val_compute.dynamic_t0.5": 0.4, "val_acc.dynamic_t0.9": pytest.approx(0.86),
                    "val_compute.dynamic_t0.9": 0.8}
