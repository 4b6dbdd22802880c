"""Backbone names -> networks behind the stage contract.

A name is one of: a registered backbone (the built-ins below, `register_backbone` from Python,
or an installed plugin's `skd_ray.backbones` entry point), a Wide ResNet `wrn_<depth>_<k>`,
a timm model `timm:<name>`, or a user factory `package.module:factory`. Every network is
built for the real input (channels, classes, image size) and probed once, so exit placement
and head sizes are checked against the stages it really has, before any worker starts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from skd_ray.errors import ConfigError
from skd_ray.models.contract import StagedBackbone, StageLayout, probe_layout
from skd_ray.models.external import (
    TIMM_PREFIX,
    build_timm,
    call_factory,
    classifier_name_of,
    import_factory,
    stage_names_of,
)
from skd_ray.models.resnet import StagedResNet
from skd_ray.models.tapped import TappedBackbone
from skd_ray.models.weights import load_weights
from skd_ray.models.wrn import WideResNet
from skd_ray.plugins import load_group

# (width, in_channels, num_classes) -> network; width is None unless model.width is set.
Builder = Callable[[int | None, int, int], nn.Module]
WRN_NAME = re.compile(r"wrn_(\d+)_(\d+)$")


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone, and a line for `--help` and the docs."""

    build: Builder
    summary: str
    takes_width: bool = False


def cifar_resnet(depth: int, millions: float) -> BackboneSpec:
    """He et al. 2016's CIFAR ResNet-(6n+2): 3 stages of n basic blocks at widths 16, 32, 64."""
    n = (depth - 2) // 6
    return BackboneSpec(lambda width, c, k: StagedResNet([n, n, n], width or 16, c, k),
                        f"CIFAR ResNet-{depth} ({millions}M params), 3 stages of {n} blocks, width 16", True)


BACKBONES: dict[str, BackboneSpec] = {
    # He et al. 2016 ResNet-18 in its CIFAR form (3x3 stem, no max-pool), as in the BYOT,
    # TESKD and LightSKD CIFAR experiments.
    "resnet18": BackboneSpec(lambda width, c, n: StagedResNet([2, 2, 2, 2], width or 64, c, n),
                             "CIFAR ResNet-18 (11M params), 4 stages", True),
    # Same shape with one block per stage and width 16: trains on CPU at ~1k images/s,
    # suited to digits and Fashion-MNIST and to tests.
    "resnet_small": BackboneSpec(lambda width, c, n: StagedResNet([1, 1, 1, 1], width or 16, c, n),
                                 "4-stage ResNet, 1 block per stage, width 16 (0.31M params)", True),
    # TFD's CIFAR tables (ResNet-20/56) and the classic depth sweep.
    **{f"resnet{d}": cifar_resnet(d, m) for d, m in ((20, 0.27), (32, 0.47), (44, 0.66), (56, 0.86), (110, 1.7))},
}
FAMILIES = ("wrn_<depth>_<k> (Wide ResNet, e.g. wrn_16_2, wrn_28_10)", "timm:<model> (e.g. timm:convnext_atto)",
            "package.module:factory (your own network)")


def register_backbone(name: str, factory: Callable[..., nn.Module], summary: str = "") -> None:
    """Make `factory(num_classes=..., in_channels=...)` trainable as `--backbone name`.

    The factory returns any `nn.Module`: a `StagedBackbone`, or a network whose stages come
    from its `feature_info` or from `model.stages` (see `TappedBackbone`).
    """
    if name in BACKBONES:
        raise ValueError(f"backbone {name} registered twice")
    if ":" in name or WRN_NAME.match(name):
        raise ValueError(f"backbone name {name} is reserved for timm, import paths or Wide ResNets")
    BACKBONES[name] = BackboneSpec(lambda _width, c, n: call_factory(factory, name, n, c),
                                   summary or (factory.__doc__ or "").strip().split("\n")[0])


def _register_plugin(name: str, obj: object) -> None:
    if name not in BACKBONES:
        if not callable(obj):
            raise ConfigError(f"plugin backbone {name} is a {type(obj).__name__}, not a factory",
                              "point the skd_ray.backbones entry point at a function returning an nn.Module")
        register_backbone(name, obj)  # type: ignore[arg-type]


def backbone_names() -> list[str]:
    """Registered backbone names (plugins included), for `--help` and error messages."""
    load_group("skd_ray.backbones", _register_plugin)
    return sorted(BACKBONES)


def backbone_spec(name: str) -> BackboneSpec:
    """How to build backbone `name` (see the module docstring for the kinds of names)."""
    if name in BACKBONES or name in backbone_names():
        return BACKBONES[name]
    wrn = WRN_NAME.match(name)
    if wrn:
        depth, k = int(wrn[1]), int(wrn[2])
        return BackboneSpec(lambda _w, c, n: WideResNet(depth, k, c, n), f"WRN-{depth}-{k}")
    if name.startswith(TIMM_PREFIX):
        model = name[len(TIMM_PREFIX):]
        return BackboneSpec(lambda _w, c, n: build_timm(model, c, n), f"timm {model}")
    if ":" in name:
        return BackboneSpec(lambda _w, c, n: call_factory(import_factory(name), name, n, c), name)
    raise ConfigError(f"unknown backbone {name!r} (model.backbone)",
                      f"choose one of: {', '.join(backbone_names())}, or {'; '.join(FAMILIES)}")


def build_backbone(name: str, width: int | None, in_channels: int, num_classes: int, *,
                   image_size: int | None = None, stages: list[str] | None = None, classifier: str = "",
                   weights: str = "") -> StagedBackbone:
    """Build backbone `name` for this input and these classes, behind the stage contract.

    With `image_size` the network is probed on one such image: its layout then holds the real
    map sizes, and a network too deep for the image (or with stages that do not shrink) is
    refused here. `stages` and `classifier` name modules to tap (any network); `weights` is a
    local state-dict file to start from.
    """
    spec = backbone_spec(name)
    if width is not None and not spec.takes_width:
        raise ConfigError(f"model.width does not apply to backbone {name}",
                          "leave model.width unset; the width is part of the network's name or factory")
    module = spec.build(width, in_channels, num_classes)
    if weights:
        loaded, left = load_weights(module, weights)
        print(f"model.weights: {loaded} tensors from {weights}" +
              (f"; left at initialisation: {', '.join(left[:6])}{' ...' if len(left) > 6 else ''}" if left else ""))
    if stages or classifier or not isinstance(module, StagedBackbone):
        names = stage_names_of(module, name, stages or [])
        nhwc = getattr(module, "output_fmt", "NCHW") == "NHWC"  # timm's transformers
        module = TappedBackbone(module, names, classifier_name_of(module, name, classifier), num_classes, name, nhwc)
    if image_size is not None or isinstance(module, TappedBackbone):
        module.layout = probe_layout(module, in_channels, image_size or 32, name)
    return module


@functools.lru_cache(maxsize=64)
def backbone_layout(name: str, width: int | None, in_channels: int, num_classes: int, image_size: int,
                    stages: tuple[str, ...] = (), classifier: str = "") -> StageLayout:
    """The probed layout of a backbone (cached: validating a search's every point builds it once)."""
    return build_backbone(name, width, in_channels, num_classes, image_size=image_size, stages=list(stages),
                          classifier=classifier).layout
