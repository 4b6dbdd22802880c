"""Typed, validated training configuration addressed by flat dotted keys.

A search space, a `--set` override and an MLflow param all name a value the same way
(`optim.lr`, `method.alpha`), so the config is stored in section dataclasses but converted
to and from one flat dict. The method's own parameters live under `method.` and are
validated by the method's registered parameter dataclass.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from skd_ray.errors import ConfigError

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass
class DataConfig:
    """Which data, where it lives and how the validation split is held out."""

    name: str = "digits"
    dir: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0  # fixed so every trial of a search sees the same validation split
    train_subset: int = 0  # >0: train on a fixed random subset of this many images (quick budgets)
    # Final evaluation of a chosen configuration: the held-out validation part joins the
    # training part (searches must keep it false: they select on that part).
    train_on_validation: bool = False
    augment: bool | None = None  # None: the dataset's own default (crop+flip for CIFAR)
    download: bool = False  # tests and offline clusters must never download implicitly
    image_size: int = 224  # imagefolder only (use 64 for Tiny ImageNet)
    loader_workers: int = 4  # imagefolder only: DataLoader worker processes per trainer


@dataclass
class ModelConfig:
    """Backbone choice and how to see its stages.

    `backbone`: a registered name (resnet18, resnet20, ...), `wrn_<depth>_<k>`, `timm:<model>`
    or `package.module:factory`. `width` None means the backbone's published width (built-in
    ResNets only). `stages` and `classifier` name the modules to tap on networks that do not
    list their stages themselves (e.g. [layer1, layer2, layer3, layer4] and fc on
    torchvision's ResNets); `weights` is a local state-dict file to start from.
    """

    backbone: str = "resnet_small"
    width: int | None = None
    stages: list[str] = field(default_factory=list)
    classifier: str = ""
    weights: str = ""


@dataclass
class TrainLoopConfig:
    """Epoch budget, batch size and numerics shared by every method.

    `amp` and `channels_last` default to `auto`: the worker that trains decides, from the device
    it got (the driver that resolves the config may have no GPU at all). A GPU trains in bf16
    (fp16 with a gradient scaler where the GPU has no bf16) and channels-last layout, a CPU in
    float32 and the contiguous layout. `resolved_amp` and `resolved_channels_last` are that rule.
    """

    epochs: int = 15
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"  # auto: cuda when the worker has a GPU, else cpu
    amp: str = "auto"  # auto | off | bf16 | fp16
    channels_last: bool | str = "auto"  # auto (on for CUDA, off on CPU) | true | false
    grad_clip: float = 0.0  # 0 disables clipping
    threads: int = 0  # 0: leave torch's choice (Ray sets it from the worker's CPUs)
    compile: str = "off"  # off | default | reduce-overhead | max-autotune (torch.compile's modes)

    def resolved_amp(self, device_type: str, bf16_supported: bool) -> str:
        """`amp` on a device of `device_type` (`cuda`, `cpu`, ...): `auto` is bf16 on a CUDA GPU
        that has it, fp16 (with a gradient scaler) on an older one, off anywhere else, where
        autocast would only add casts; an explicit choice stays as given."""
        if self.amp != "auto":
            return self.amp
        if device_type != "cuda":
            return "off"
        return "bf16" if bf16_supported else "fp16"

    def resolved_channels_last(self, device_type: str) -> bool:
        """`channels_last` on a device of `device_type`: `auto` is on for CUDA (tensor-core
        convolutions read NHWC) and off elsewhere (CPU kernels gain little, and torch 2.14.1
        has a CPU channels-last bug, see docs/search-spaces.md)."""
        if self.channels_last == "auto":
            return device_type == "cuda"
        return bool(self.channels_last)


@dataclass
class OptimConfig:
    """SGD recipe shared by the self-KD papers (SGD 0.1, momentum 0.9, wd 5e-4, batch 128)."""

    name: str = "sgd"  # sgd | adamw
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False


@dataclass
class SchedConfig:
    """Learning-rate schedule; `step` uses milestones as fractions of the epoch budget."""

    name: str = "cosine"  # cosine | step | none
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1
    warmup_epochs: int = 0


@dataclass
class EvalConfig:
    """Evaluation: early-exit confidence thresholds and batch size."""

    batch_size: int = 512
    # Official BYOT thresholds lie around 0.95-0.98; the lower ones sweep the rest of the
    # accuracy-vs-compute curve (each costs one comparison per sample and two metrics).
    thresholds: list[float] = field(default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99])
    # The one threshold whose accuracy and compute MLflow charts per epoch (the whole sweep is a
    # table artifact of the run); None: the threshold nearest BYOT's 0.95. A --multi-objective
    # search charts its --compute-threshold.
    chart_threshold: float | None = None
    # Evaluate the test split once, after the last epoch (`test_*` metrics). Only the final
    # evaluation of chosen configurations sets it; nothing ever selects on these metrics.
    test_at_end: bool = False
    # What a trial's best epoch is (the checkpoint kept) and how trials are ranked: a search
    # space's `metric:` and `mode:` (see skd_ray.training.objective); searches set both.
    objective: str = "val_acc"
    objective_mode: str = "max"

    def charted_threshold(self) -> float:
        """`chart_threshold`, or the threshold of `thresholds` nearest 0.95 (the higher on a tie)."""
        if self.chart_threshold is not None:
            return self.chart_threshold
        return min(self.thresholds, key=lambda t: (abs(t - 0.95), -t))


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainLoopConfig,
    "optim": OptimConfig,
    "sched": SchedConfig,
    "eval": EvalConfig,
}


@dataclass
class TrainConfig:
    """Everything one training run needs; `method_params` is the method's own dataclass."""

    method: str = "byot"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    method_params: Any = None

    def to_flat(self) -> dict[str, Any]:
        """The config as `{dotted.key: value}`, the form logged to MLflow and searched."""
        flat: dict[str, Any] = {"method": self.method}
        for section in SECTIONS:
            for f in dataclasses.fields(getattr(self, section)):
                flat[f"{section}.{f.name}"] = getattr(getattr(self, section), f.name)
        if self.method_params is not None:
            for f in dataclasses.fields(self.method_params):
                flat[f"method.{f.name}"] = getattr(self.method_params, f.name)
        return flat


def coerce_value(key: str, value: Any, annotation: Any) -> Any:
    """Convert `value` to `annotation` or raise a ConfigError naming the key and the type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        last_error: ConfigError | None = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce_value(key, value, arg)
            except ConfigError as err:
                last_error = err
        assert last_error is not None
        raise last_error
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, str):
            value = [v for v in value.strip("[]").split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}", "write it as [a, b, ...]")
        (item_type,) = args
        return [coerce_value(key, v, item_type) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "yes", "no"):
            return value.lower() in ("true", "on", "yes")
        raise ConfigError(f"{key} must be true or false, got {value!r}", "use true or false")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}", "use a whole number")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {value!r}", "use a whole number")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}", "use a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}", "use a number such as 0.1")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}", "quote the value")
    raise TypeError(f"unsupported config annotation {annotation!r} for {key}")


def build_dataclass(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Instantiate dataclass `cls` from `{field: value}`, rejecting unknown fields."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}.{unknown[0]}",
            f"valid keys under {prefix}. are: {', '.join(sorted(names))}",
        )
    kwargs = {k: coerce_value(f"{prefix}.{k}", v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def split_flat(flat: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]], dict[str, Any]]:
    """Split flat keys into the method name, core sections and method parameters."""
    method = flat.get("method", TrainConfig.method)
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    method_params: dict[str, Any] = {}
    for key, value in flat.items():
        if key == "method":
            continue
        head, _, rest = key.partition(".")
        if not rest:
            raise ConfigError(
                f"unknown config key {key}",
                "keys are dotted: method, method.<param>, " + ", ".join(f"{s}.<field>" for s in SECTIONS),
            )
        if head == "method":
            method_params[rest] = value
        elif head in sections:
            sections[head][rest] = value
        else:
            raise ConfigError(
                f"unknown config section {head!r} in key {key}",
                "sections are: method, " + ", ".join(SECTIONS),
            )
    if not isinstance(method, str):
        raise ConfigError(f"method must be a name, got {method!r}", "use e.g. method: byot")
    return method, sections, method_params


def validate_core(cfg: TrainConfig) -> None:
    """Range checks that do not depend on the method or the data."""
    checks = [
        (0.0 < cfg.data.val_fraction < 1.0, "data.val_fraction must lie in (0, 1)", "use e.g. 0.1"),
        (cfg.train.epochs >= 1, "train.epochs must be >= 1", "use a positive epoch budget"),
        (cfg.train.batch_size >= 1, "train.batch_size must be >= 1", "use e.g. 64"),
        (cfg.optim.lr > 0, "optim.lr must be > 0", "use e.g. 0.05"),
        (cfg.optim.weight_decay >= 0, "optim.weight_decay must be >= 0", "use e.g. 5e-4"),
        (cfg.optim.name in ("sgd", "adamw"), f"optim.name {cfg.optim.name!r} is unknown", "use sgd or adamw"),
        (cfg.sched.name in ("cosine", "step", "none"), f"sched.name {cfg.sched.name!r} is unknown",
         "use cosine, step or none"),
        (all(0 < m < 1 for m in cfg.sched.milestones), "sched.milestones must be fractions in (0, 1)",
         "use e.g. [0.5, 0.75]"),
        (cfg.train.amp in AMP_MODES, f"train.amp {cfg.train.amp!r} is unknown", "use auto, off, bf16 or fp16"),
        (cfg.train.channels_last in (True, False, "auto"),
         f"train.channels_last {cfg.train.channels_last!r} is unknown", "use auto, true or false"),
        (cfg.train.compile in COMPILE_MODES, f"train.compile {cfg.train.compile!r} is unknown",
         f"use one of: {', '.join(COMPILE_MODES)}"),
        (cfg.train.device in ("auto", "cpu", "cuda"), f"train.device {cfg.train.device!r} is unknown",
         "use auto, cpu or cuda"),
        (all(0 < t <= 1 for t in cfg.eval.thresholds), "eval.thresholds must lie in (0, 1]",
         "use e.g. [0.9, 0.95]"),
        (cfg.eval.chart_threshold is None or cfg.eval.chart_threshold in cfg.eval.thresholds,
         f"eval.chart_threshold {cfg.eval.chart_threshold} is not among eval.thresholds {cfg.eval.thresholds}",
         "set eval.chart_threshold to one of them, or add it to eval.thresholds"),
        (cfg.model.width is None or cfg.model.width >= 1, "model.width must be >= 1", "use e.g. 16"),
        (cfg.eval.batch_size >= 1, "eval.batch_size must be >= 1", "use e.g. 512"),
        (cfg.eval.objective_mode in ("max", "min"), f"eval.objective_mode {cfg.eval.objective_mode!r} is neither "
         "max nor min", "write mode: max or mode: min in the search space"),
        (cfg.optim.momentum >= 0, "optim.momentum must be >= 0", "use e.g. 0.9"),
        (cfg.data.image_size >= 1, "data.image_size must be >= 1", "use e.g. 224 (64 for Tiny ImageNet)"),
        (cfg.data.train_subset >= 0, "data.train_subset must be >= 0", "use 0 for the whole training part"),
        (cfg.data.loader_workers >= 0, "data.loader_workers must be >= 0", "use e.g. 4"),
        (cfg.sched.warmup_epochs >= 0, "sched.warmup_epochs must be >= 0", "use e.g. 0"),
        (cfg.sched.gamma > 0, "sched.gamma must be > 0", "use e.g. 0.1"),
        (cfg.train.grad_clip >= 0, "train.grad_clip must be >= 0", "use 0 to disable clipping"),
    ]
    for ok, problem, fix in checks:
        if not ok:
            raise ConfigError(problem, fix)
