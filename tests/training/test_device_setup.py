"""GPU-ready defaults and GPU shares, checked on CPU.

`train.amp` and `train.channels_last` default to `auto`, settled by the worker from its device:
the rule is a pure function, fed made-up device descriptions here. A trial given a fraction of
a GPU caps its allocator at that fraction and, when it needs more, fails with one line; the
`torch.cuda` calls are a parameter, so a stand-in records them (torch itself is untouched).
"""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from skd_ray.config import TrainLoopConfig
from skd_ray.errors import ConfigError, GpuShareExceeded, SkdError
from skd_ray.results.names import Tags
from skd_ray.results.store import MlflowStore
from skd_ray.results.tracking import setup_tags
from skd_ray.training import engine
from skd_ray.training.engine import fit
from skd_ray.training.hardware import (
    DeviceFacts,
    RunSetup,
    cap_gpu_share,
    describe_device,
    resolve_setup,
    share_exceeded,
    share_exceeded_error,
    with_setup,
)
from skd_ray.training.resolve import resolve_config
from skd_ray.training.session import LocalSession

GiB = 2**30
H100 = DeviceFacts("cuda", "NVIDIA H100", bf16=True, total_memory=80 * GiB)
V100 = DeviceFacts("cuda", "Tesla V100", bf16=False, total_memory=16 * GiB)
CPU = DeviceFacts("cpu", "cpu")


def digits(**overrides: Any):
    return resolve_config({"method": "vanilla", "data.name": "digits", "data.val_fraction": 0.2,
                           "train.device": "cpu", "model.width": 4, "train.epochs": 1, "train.threads": 1,
                           **overrides})


class FakeCuda:
    """Stands in for `torch.cuda`: a GPU of `total` bytes that records the calls made to it."""

    def __init__(self, total: int = 80 * GiB, bf16: bool = True, reserved: int = 0) -> None:
        self.total, self.bf16, self.reserved = total, bf16, reserved
        self.calls: list[tuple[Any, ...]] = []

    def current_device(self) -> int:
        return 0

    def device(self, index: int) -> Any:
        self.calls.append(("device", index))
        return nullcontext()

    def get_device_properties(self, index: int) -> Any:
        return SimpleNamespace(name="Fake GPU", total_memory=self.total)

    def is_bf16_supported(self, including_emulation: bool = True) -> bool:
        self.calls.append(("is_bf16_supported", including_emulation))
        return self.bf16

    def set_per_process_memory_fraction(self, fraction: float, device: Any = None) -> None:
        self.calls.append(("set_per_process_memory_fraction", fraction, device))

    def max_memory_reserved(self, index: int) -> int:
        return self.reserved


# --- auto numerics ---------------------------------------------------------------------------

@pytest.mark.parametrize(("facts", "amp", "channels_last", "cudnn_benchmark"), [
    (H100, "bf16", True, True),   # Ampere and later: bf16, no gradient scaler needed
    (V100, "fp16", True, True),   # older GPUs: fp16 (the engine adds a GradScaler)
    (CPU, "off", False, False),   # a CPU trains in float32, contiguous
])
def test_auto_numerics_follow_the_device(facts: DeviceFacts, amp: str, channels_last: bool,
                                         cudnn_benchmark: bool) -> None:
    setup = resolve_setup(TrainLoopConfig(), facts)
    assert (setup.amp, setup.channels_last, setup.cudnn_benchmark) == (amp, channels_last, cudnn_benchmark)


def test_an_explicit_choice_wins_over_the_device() -> None:
    assert resolve_setup(TrainLoopConfig(amp="off", channels_last=False), H100).amp == "off"
    assert resolve_setup(TrainLoopConfig(amp="off", channels_last=False), H100).channels_last is False
    assert resolve_setup(TrainLoopConfig(amp="bf16", channels_last=True), CPU).amp == "bf16"
    assert resolve_setup(TrainLoopConfig(amp="bf16", channels_last=True), CPU).channels_last is True
    assert resolve_setup(TrainLoopConfig(amp="fp16"), H100).amp == "fp16"


def test_the_config_defaults_to_auto_and_accepts_the_old_values() -> None:
    cfg = resolve_config({})
    assert cfg.train.amp == "auto" and cfg.train.channels_last == "auto"
    assert resolve_config({"train.channels_last": "true"}).train.channels_last is True
    assert resolve_config({"train.channels_last": False}).train.channels_last is False
    assert resolve_config({"train.channels_last": "auto"}).to_flat()["train.channels_last"] == "auto"
    with pytest.raises(ConfigError, match=r"train.amp 'x' is unknown -- use auto, off, bf16 or fp16"):
        resolve_config({"train.amp": "x"})
    with pytest.raises(ConfigError, match=r"train.channels_last 'maybe' is unknown -- use auto, true or false"):
        resolve_config({"train.channels_last": "maybe"})


def test_with_setup_makes_the_config_concrete() -> None:
    cfg = with_setup(digits(), resolve_setup(TrainLoopConfig(), V100))
    assert cfg.train.amp == "fp16" and cfg.train.channels_last is True


def test_a_cuda_device_is_described_through_torch_cuda_without_bf16_emulation() -> None:
    cuda = FakeCuda(bf16=False)
    facts = describe_device(torch.device("cuda", 0), cuda)
    assert facts == DeviceFacts("cuda", "Fake GPU", bf16=False, total_memory=80 * GiB)
    # Emulated bf16 is slower than fp32: only native support counts.
    assert ("is_bf16_supported", False) in cuda.calls and ("device", 0) in cuda.calls
    assert describe_device(torch.device("cpu"), cuda) == CPU


def test_the_setup_becomes_run_tags() -> None:
    tags = setup_tags(RunSetup("cuda (NVIDIA H100)", "bf16", True, True, 0.25))
    assert tags == {Tags.DEVICE: "cuda (NVIDIA H100)", Tags.AMP: "bf16", Tags.CHANNELS_LAST: "true",
                    Tags.CUDNN_BENCHMARK: "true", Tags.GPU_SHARE: "0.25"}
    assert Tags.GPU_SHARE not in setup_tags(RunSetup("cpu", "off", False, False))


class Recording(LocalSession):
    """A LocalSession that keeps the parameters as they were before the first step."""

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        self.model = model
        self.before = {k: v.detach().clone() for k, v in model.named_parameters()}
        return model


def test_a_cpu_run_resolves_auto_to_float32_and_says_so() -> None:
    session = Recording("cpu", echo=False)
    fit(digits(), session)
    assert session.setup == RunSetup("cpu", "off", False, False, None)


def test_a_bf16_training_step_on_cpu_runs_in_bf16_and_updates_the_weights() -> None:
    cfg = digits(**{"train.amp": "bf16", "data.train_subset": 32, "train.batch_size": 32})
    session = Recording("cpu", echo=False)
    dtypes: list[torch.dtype] = []
    handles: list[Any] = []

    def watch(model: torch.nn.Module) -> torch.nn.Module:
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        handles.append(conv.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype) if m.training else None))
        return Recording.prepare_model(session, model)

    session.prepare_model = watch  # type: ignore[method-assign]
    metrics = fit(cfg, session)
    handles[0].remove()
    assert session.setup is not None and session.setup.amp == "bf16"
    assert dtypes == [torch.bfloat16]  # one training step, its convolutions in bf16
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))
    after = dict(session.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in after.values())  # autocast: float32 master weights
    changed = [k for k, v in session.before.items() if not torch.equal(v, after[k].detach())]
    assert len(changed) == len(session.before)


# --- GPU shares ------------------------------------------------------------------------------

@pytest.mark.parametrize(("share", "device", "capped"), [
    (0.25, torch.device("cuda", 0), 0.25),
    (0.5, torch.device("cuda", 1), 0.5),
    (1.0, torch.device("cuda", 0), None),   # a whole GPU: nothing to share
    (2.0, torch.device("cuda", 0), None),
    (0.0, torch.device("cuda", 0), None),   # no GPU requested (device forced to cuda)
    (None, torch.device("cuda", 0), None),
    (0.25, torch.device("cpu"), None),
])
def test_a_fractional_gpu_caps_the_allocator_at_its_share(share: float | None, device: torch.device,
                                                          capped: float | None) -> None:
    cuda = FakeCuda()
    assert cap_gpu_share(share, device, cuda) == capped
    expected = [("set_per_process_memory_fraction", capped, device)] if capped is not None else []
    assert cuda.calls == expected


OOM_TEXT = ("CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total capacity of 80.00 GiB of which "
            "58.20 GiB is free. Of the allocated memory 18.9 GiB is allocated by PyTorch")


def test_outgrowing_the_share_is_one_line_naming_share_need_and_fix() -> None:
    err = share_exceeded_error(0.25, 80 * GiB, int(19.5 * GiB), OOM_TEXT)
    assert isinstance(err, SkdError) and isinstance(err, GpuShareExceeded)
    assert str(err) == ("trial needs more than its 0.25 of the GPU's 80.0 GiB (20.0 GiB): it held 19.5 GiB and "
                        "asked for 1.50 GiB more -- raise --gpus-per-worker or lower train.batch_size")
    assert "\n" not in str(err)
    bare = share_exceeded_error(0.5, 16 * GiB, 8 * GiB, "out of memory")
    assert bare.problem == "trial needs more than its 0.5 of the GPU's 16.0 GiB (8.0 GiB): it held 8.0 GiB"


def test_the_need_is_read_from_the_gpu() -> None:
    cuda = FakeCuda(total=40 * GiB, reserved=10 * GiB)
    err = share_exceeded(torch.OutOfMemoryError(OOM_TEXT), 0.25, torch.device("cuda", 0), cuda)
    assert err.problem.startswith("trial needs more than its 0.25 of the GPU's 40.0 GiB (10.0 GiB): it held 10.0 GiB")


class SharedGpu(LocalSession):
    """A session that was given a quarter of a GPU and runs out of it on the first step."""

    gpu_share = 0.25

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        raise torch.OutOfMemoryError(OOM_TEXT)


def test_a_trial_out_of_its_share_fails_with_gpu_share_exceeded(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda(total=80 * GiB, reserved=20 * GiB)
    monkeypatch.setattr(engine, "share_exceeded", lambda err, share, device: share_exceeded(err, share, device, cuda))
    with pytest.raises(GpuShareExceeded, match=r"^trial needs more than its 0.25 of the GPU's 80.0 GiB"):
        fit(digits(), SharedGpu("cpu", echo=False))


def test_an_out_of_memory_error_without_a_share_is_left_alone() -> None:
    class WholeGpu(SharedGpu):
        gpu_share = None

    with pytest.raises(torch.OutOfMemoryError):
        fit(digits(), WholeGpu("cpu", echo=False))


def test_a_tracked_run_carries_what_ran_as_tags(tmp_path: Any) -> None:
    from skd_ray.results.tracking import SearchRuns, TrialTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = SearchRuns.start(MlflowStore(uri), "setup-tags", "setup-tags_20250101-000000", {}, {})
    cfg = digits()
    run_id = runs.start_trial("trial-0", "trial-0", cfg.to_flat(), {})
    fit(cfg, LocalSession("cpu", TrialTracker(MlflowStore(uri), run_id), echo=False))
    tags = runs.tags(run_id)
    assert {k: tags.get(k) for k in (Tags.DEVICE, Tags.AMP, Tags.CHANNELS_LAST, Tags.CUDNN_BENCHMARK)} == {
        Tags.DEVICE: "cpu", Tags.AMP: "off", Tags.CHANNELS_LAST: "false", Tags.CUDNN_BENCHMARK: "false"}
    assert Tags.GPU_SHARE not in tags
