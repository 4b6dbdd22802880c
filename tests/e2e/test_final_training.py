"""The two config switches of the final evaluation: the validation part joins training
(`data.train_on_validation`) and the last epoch's model is scored on test (`eval.test_at_end`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from skd_ray.config import DataConfig
from skd_ray.data import load_data
from skd_ray.methods import MethodContext, build_method
from skd_ray.models import build_backbone
from skd_ray.training.checkpoint import CHECKPOINT_FILE, load_state
from skd_ray.training.engine import evaluate_split, fit
from skd_ray.training.resolve import resolve_config
from skd_ray.training.session import LocalSession


def image_set(split: Any) -> set[bytes]:
    return {img.numpy().tobytes() for img in split.images}


@pytest.mark.parametrize("subset", [0, 300])
def test_validation_part_joins_training_and_test_is_untouched(subset: int) -> None:
    plain = load_data(DataConfig(name="digits", val_fraction=0.2, train_subset=subset))
    merged = load_data(DataConfig(name="digits", val_fraction=0.2, train_subset=subset, train_on_validation=True))
    assert len(merged.train) == len(plain.train) + len(plain.val)
    assert image_set(merged.train) == image_set(plain.train) | image_set(plain.val)
    assert torch.equal(merged.val.images, plain.val.images)  # still there, now a part of training
    assert torch.equal(merged.test.images, plain.test.images)
    assert not image_set(merged.train) & image_set(merged.test)


def digits_cfg(**overrides: Any) -> Any:
    return resolve_config({"method": "byot", "data.name": "digits", "data.val_fraction": 0.2, "train.device": "cpu",
                           "model.width": 4, "train.epochs": 2, "eval.thresholds": [0.9], **overrides})


def test_test_split_is_scored_once_by_the_last_epochs_model(tmp_path: Path) -> None:
    cfg = digits_cfg(**{"data.train_on_validation": True, "eval.test_at_end": True})
    session = LocalSession("cpu", checkpoint_dir=tmp_path, echo=False)
    final = fit(cfg, session)
    first, last = session.history
    assert not [k for k in first if k.startswith("test_")]
    assert last is final
    for key in ("test_acc", "test_acc.exit1", "test_acc.ensemble", "test_acc.dynamic_t0.9", "test_loss",
                "test_compute.dynamic_t0.9"):
        assert key in final, key
    # The reported number is the saved last-epoch model's accuracy on the whole test split.
    data = load_data(cfg.data)
    method = build_method(cfg.method, build_backbone(cfg.model.backbone, cfg.model.width, 1, 10),
                          cfg.method_params, MethodContext(num_train_samples=len(data.train)))
    method.load_state_dict(load_state(tmp_path / CHECKPOINT_FILE)["model"])
    assert evaluate_split(cfg, method, "test")["test_acc"] == pytest.approx(final["test_acc"], abs=1e-12)


def test_searches_never_see_test_metrics() -> None:
    session = LocalSession("cpu", echo=False)
    fit(digits_cfg(**{"train.epochs": 1}), session)
    assert not [k for k in session.history[-1] if k.startswith("test_")]
