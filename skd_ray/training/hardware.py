"""What the device a run trains on can do, and what the run makes of it.

The config's `auto` values (`train.amp`, `train.channels_last`) are settled here, on the worker
and from the device it was given, because the driver that resolved the config may have no GPU
and one cluster may mix GPU generations. The outcome is a `RunSetup`, which the session writes
on the run as tags (`skd.amp`, `skd.channels_last`, ...), so a run says what really ran.

A trial given a fraction of a GPU (`--gpus-per-worker 0.25`) caps its CUDA caching allocator
at that fraction (`cap_gpu_share`). Ray's fractional GPUs are bookkeeping only: without the
cap, one trial that grows takes memory the trials packed beside it were promised, and they all
fail. With it, the trial that needs more fails alone, with one line naming its share and its
need (`share_exceeded`). The `torch.cuda` calls are a parameter (`cuda`), so this is tested on
machines without a GPU.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import torch

from skd_ray.config import TrainConfig, TrainLoopConfig
from skd_ray.errors import GpuShareExceeded

SHARE_FIX = "raise --gpus-per-worker or lower train.batch_size"


@dataclass(frozen=True)
class DeviceFacts:
    """What choosing the numerics needs to know about a device (tests pass made-up ones)."""

    type: str  # cuda | cpu | mps ...
    name: str = ""
    bf16: bool = False  # native bf16 arithmetic; emulation (slower than fp32) does not count
    total_memory: int = 0  # bytes; CUDA only


def describe_device(device: torch.device, cuda: Any = torch.cuda) -> DeviceFacts:
    """The facts of `device`; for CUDA, asked of `cuda` (torch.cuda, or a stand-in)."""
    if device.type != "cuda":
        return DeviceFacts(device.type, device.type)
    index = device.index if device.index is not None else cuda.current_device()
    props = cuda.get_device_properties(index)
    with cuda.device(index):  # is_bf16_supported asks about the current device
        bf16 = cuda.is_bf16_supported(including_emulation=False)
    return DeviceFacts("cuda", props.name, bool(bf16), int(props.total_memory))


@dataclass(frozen=True)
class RunSetup:
    """How a run trains on its device, every `auto` settled: what its tags report."""

    device: str  # e.g. "cuda:0 (NVIDIA H200)"
    amp: str  # off | bf16 | fp16: the autocast dtype of forward passes
    channels_last: bool  # model and batches in NHWC layout
    cudnn_benchmark: bool  # cuDNN times its convolution algorithms for each new shape
    gpu_share: float | None = None  # the fraction of the GPU's memory the allocator is capped at; None: no cap


def resolve_setup(train: TrainLoopConfig, facts: DeviceFacts, gpu_share: float | None = None) -> RunSetup:
    """`train`'s numerics on a device with `facts` (the pure rule; see TrainLoopConfig)."""
    device = f"{facts.type} ({facts.name})" if facts.name and facts.name != facts.type else facts.type
    return RunSetup(device=device, amp=train.resolved_amp(facts.type, facts.bf16),
                    channels_last=train.resolved_channels_last(facts.type),
                    # Inputs of a run keep one shape (fixed image size and batch size, one
                    # smaller last batch), so timing the algorithms once pays off on every step.
                    cudnn_benchmark=facts.type == "cuda", gpu_share=gpu_share)


def with_setup(cfg: TrainConfig, setup: RunSetup) -> TrainConfig:
    """`cfg` with `setup`'s concrete amp and layout in place of `auto`, for everything the loop
    calls (autocast, the gradient scaler, the loaders)."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp=setup.amp,
                                                              channels_last=setup.channels_last))


def amp_for(train: TrainLoopConfig, device: torch.device, cuda: Any = torch.cuda) -> str:
    """`train.amp` on `device`, `auto` settled (asks the device only when it must)."""
    if train.amp != "auto":
        return train.amp
    return train.resolved_amp(device.type, describe_device(device, cuda).bf16 if device.type == "cuda" else False)


def cap_gpu_share(share: float | None, device: torch.device, cuda: Any = torch.cuda) -> float | None:
    """Cap this process's CUDA caching allocator on `device` at `share` of the GPU's memory
    when the trial was given a fraction of a GPU (0 < share < 1); returns the cap, or None
    when there is none (a CPU, no GPU requested, a whole GPU or more). Call it before the
    model is built: the cap applies to allocations made after it."""
    if device.type != "cuda" or share is None or not 0 < share < 1:
        return None
    cuda.set_per_process_memory_fraction(share, device)
    return share


def gib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB"


def share_exceeded_error(share: float, total_bytes: int, held_bytes: int, oom_text: str) -> GpuShareExceeded:
    """The one-line failure of a trial that outgrew its GPU share: its share, what that is in
    memory, what it held when it ran out and what it asked for (read from torch's message)."""
    asked = re.search(r"Tried to allocate ([\d.]+ [KMGT]?i?B)", oom_text)
    need = f"it held {gib(held_bytes)}" + (f" and asked for {asked.group(1)} more" if asked else "")
    return GpuShareExceeded(f"trial needs more than its {share:g} of the GPU's {gib(total_bytes)} "
                            f"({gib(share * total_bytes)}): {need}", SHARE_FIX)


def share_exceeded(err: BaseException, share: float, device: torch.device,
                   cuda: Any = torch.cuda) -> GpuShareExceeded:
    """`share_exceeded_error` for an out-of-memory error `err` raised on `device`."""
    index = device.index if device.index is not None else cuda.current_device()
    total = int(cuda.get_device_properties(index).total_memory)
    return share_exceeded_error(share, total, int(cuda.max_memory_reserved(index)), str(err))
