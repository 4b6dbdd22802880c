"""`--debug` runs (one configuration, in-process, logged to MLflow) on every family of backbone,
on small images: 8x8 digits for the CIFAR families and a user module, 32x32 images from a user
dataset factory for the timm and torchvision networks (they reduce by 32)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from skd_ray.cli import main

pytestmark = pytest.mark.slow

USER = "tests.helpers.user_nets"
COLOUR = ["--dataset", "tests.helpers.user_data:colour_32"]
RUNS = {
    "resnet20": ["--method", "byot", "--backbone", "resnet20"],
    "wrn_16_2": ["--method", "tfd", "--backbone", "wrn_16_2"],
    "user_listed_stages": ["--method", "lightskd", "--backbone", f"{USER}:listed_stages_net"],
    "timm_convnext_atto": ["--method", "byot", "--backbone", "timm:convnext_atto", *COLOUR],
    "timm_mobilenetv3": ["--method", "teskd", "--backbone", "timm:mobilenetv3_small_100", *COLOUR],
    "torchvision_resnet18": ["--method", "srdl", "--backbone", f"{USER}:torchvision_resnet18", "--set",
                             "model.stages=layer1,layer2,layer3,layer4", *COLOUR],
}


@pytest.mark.parametrize("family", sorted(RUNS))
def test_a_debug_run_trains_and_logs(family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["--debug", *RUNS[family], "--max-epochs", "1", "--set", "train.batch_size=16",
                 "--mlflow-uri", uri, "--experiment", family, "-q"])
    assert code == 0
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(family).experiment_id], "tags.`skd.kind` = 'trial'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    metrics = runs[0].data.metrics
    assert math.isfinite(metrics["val/loss"]) and 0 <= metrics["val/acc"] <= 1, metrics
    if "byot" in RUNS[family]:  # every exit answered and was costed
        assert {k for k in metrics if k.startswith("val/acc.exit")} and metrics["val/compute.final"] == 1
