"""A tiny search space written for a test, and a search's parent and trial runs read back
from MLflow."""

from __future__ import annotations

from pathlib import Path

import yaml


def child_runs(uri: str, experiment: str) -> tuple[object, list]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} missing"
    parents = client.search_runs([exp.experiment_id], "tags.`skd.kind` = 'search'")
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, children


def write_space(path: Path, **fixed: object) -> Path:
    space = {
        "description": "tiny test space",
        "fixed": {"method": "byot", "data.name": "digits", "data.val_fraction": 0.2,
                  "model.backbone": "resnet_small", "model.width": 8, "train.epochs": 3, **fixed},
        "params": {
            "method.alpha": {"type": "float", "low": 0.1, "high": 0.9, "default": 0.3},
            "method.exits": {"type": "subset", "choices": [1, 2, 3], "default": [1, 2, 3]},
            "optim.lr": {"type": "categorical", "choices": [0.05, 0.00001], "default": 0.05},
        },
    }
    path.write_text(yaml.safe_dump(space))
    return path
