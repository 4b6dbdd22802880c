"""A search writes Tune's CSV and JSON results but no TensorBoard events."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
from ray.tune.utils.callback import _create_default_callbacks

from skd_ray.search.tuning.callbacks import NoTensorBoardEvents


def test_tune_adds_its_csv_and_json_loggers_and_no_tensorboard_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    callbacks = _create_default_callbacks([NoTensorBoardEvents()], entrypoint="tuner")
    assert [type(c) for c in callbacks if isinstance(c, TBXLoggerCallback)] == [NoTensorBoardEvents]
    assert any(isinstance(c, CSVLoggerCallback) for c in callbacks)
    assert any(isinstance(c, JsonLoggerCallback) for c in callbacks)
    # Without it, Tune adds its own TensorBoard writer.
    assert any(type(c) is TBXLoggerCallback for c in _create_default_callbacks([], entrypoint="tuner"))


def test_no_event_file_is_written(tmp_path: Path) -> None:
    trial = SimpleNamespace(local_path=str(tmp_path), config={"x": 1}, trial_id="t1")
    logger = NoTensorBoardEvents()
    logger.log_trial_start(trial)
    logger.log_trial_result(1, trial, {"epoch": 1, "val_acc": 0.5, "training_iteration": 1})
    logger.log_trial_end(trial)
    assert os.listdir(tmp_path) == []
