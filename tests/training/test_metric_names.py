"""The metric-name contract (skd_ray.training.metrics): what the engine writes is what readers parse."""

from __future__ import annotations

from skd_ray.training import metrics as names


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
