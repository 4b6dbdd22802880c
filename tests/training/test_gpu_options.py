"""The GPU-facing options, checked on CPU: mixed precision, channels_last, and how trials
with fractional GPUs are sized and packed. (Their speed needs a GPU; their correctness and
the resource arithmetic do not.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from skd_ray.data import build_loader, load_data
from skd_ray.data.batches import InMemoryLoader, TensorSplit
from skd_ray.errors import SkdError
from skd_ray.results.store import MlflowStore
from skd_ray.results.tracking import SearchRuns
from skd_ray.search.cluster.connect import plan_concurrency
from skd_ray.search.execution.job import TrialSettings
from skd_ray.search.request import SearchRequest
from skd_ray.search.space.definition import load_space
from skd_ray.search.tuning.tuner import trial_resources
from skd_ray.training.engine import autocast_for, fit
from skd_ray.training.resolve import resolve_config
from skd_ray.training.session import LocalSession

REPO = Path(__file__).resolve().parents[2]


def digits(**overrides: Any):
    return resolve_config({"method": "vanilla", "data.name": "digits", "data.val_fraction": 0.2,
                           "train.device": "cpu", "model.width": 4, "train.epochs": 1, "train.threads": 1,
                           **overrides})


def train(**overrides: Any) -> dict[str, float]:
    return fit(digits(**overrides), LocalSession("cpu", echo=False))


@pytest.mark.parametrize(("amp", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_runs_the_forward_in_half_precision(amp: str, dtype: torch.dtype) -> None:
    conv = torch.nn.Conv2d(1, 2, 3)
    with autocast_for(digits(**{"train.amp": amp}), torch.device("cpu")):
        assert conv(torch.randn(1, 1, 8, 8)).dtype == dtype
    with autocast_for(digits(), torch.device("cpu")):
        assert conv(torch.randn(1, 1, 8, 8)).dtype == torch.float32


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training_learns(amp: str) -> None:
    full, mixed = train(), train(**{"train.amp": amp})
    # Half precision rounds every activation: close to full precision, not equal to it.
    assert mixed["train_loss"] == pytest.approx(full["train_loss"], rel=0.05)
    assert mixed["val_acc"] > 0.4  # 10 classes: chance is 0.1


def test_channels_last_batches_train_like_contiguous_ones() -> None:
    # Layout on RGB images (with one channel, as in digits, both layouts coincide).
    rgb = TensorSplit(torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    x, _, _ = next(iter(InMemoryLoader(rgb, 4, torch.zeros(3), torch.ones(3), train=True, augment_pad=1,
                                       augment_flip=True, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    cfg = digits(**{"train.channels_last": True})
    x, _, _ = next(iter(build_loader(load_data(cfg.data), "train", cfg)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    # Width 8: torch 2.14.1's CPU backward of a 1x1 stride-2 convolution from 4 to 8 channels in
    # channels_last with one thread (width 4's first shortcut) corrupts the heap (a torch bug,
    # reproducible with a bare nn.Conv2d).
    plain, channels_last = train(**{"model.width": 8}), train(**{"model.width": 8, "train.channels_last": True})
    # Other convolution kernels, other rounding, amplified by an epoch of SGD: close, not equal.
    assert channels_last["train_loss"] == pytest.approx(plain["train_loss"], rel=0.02)
    assert channels_last["val_acc"] == pytest.approx(plain["val_acc"], abs=0.03)


def request(workers: int, gpus: float, cpus: float = 1.0) -> SearchRequest:
    return SearchRequest(space=load_space(REPO / "search_spaces" / "vanilla.yaml"), storage="/tmp/x",
                         tracking_uri="sqlite:///x.db", experiment="e", search_name="e_1", num_samples=16,
                         workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus)


@pytest.mark.parametrize(("workers", "gpus", "cluster", "expected"), [
    (1, 0.25, {"CPU": 16, "GPU": 1}, 4),    # four small trials packed on one GPU
    (1, 0.5, {"CPU": 16, "GPU": 4}, 8),
    (2, 0.5, {"CPU": 16, "GPU": 1}, 1),     # a 2-worker trial sharing one GPU
    (1, 0.25, {"CPU": 2, "GPU": 1}, 2),     # CPUs are the limit
    (2, 1.0, {"CPU": 64, "GPU": 8}, 4),
])
def test_fractional_gpus_pack_trials(workers: int, gpus: float, cluster: dict[str, float], expected: int) -> None:
    assert plan_concurrency(cluster, request(workers, gpus)) == expected


def test_a_trial_needing_more_gpus_than_the_cluster_has_is_refused() -> None:
    with pytest.raises(SkdError, match="0 GPU"):
        plan_concurrency({"CPU": 16}, request(1, 0.5))
    with pytest.raises(SkdError, match="2 GPU but the cluster has 16 CPU, 1 GPU"):
        plan_concurrency({"CPU": 16, "GPU": 1}, request(2, 1.0))


def settings(workers: int, gpus: float) -> TrialSettings:
    return TrialSettings(space=load_space(REPO / "search_spaces" / "vanilla.yaml"),
                         runs=SearchRuns(MlflowStore("sqlite:///x.db"), "1", "r"), storage_path="/tmp/x",
                         workers=workers,
                         gpus_per_worker=gpus)


def test_an_in_place_trial_reserves_its_gpu_share_and_a_ddp_trial_leaves_it_to_its_workers() -> None:
    in_place = trial_resources(settings(1, 0.25))
    assert in_place["gpu"] == 0.25 and in_place["cpu"] == 1.0
    driver = trial_resources(settings(2, 0.25))
    assert "gpu" not in driver and "cpu" not in driver and driver["memory"] > 0
