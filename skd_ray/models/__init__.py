"""Backbone registry: name -> constructor, with the stage layout self-KD methods need.

Owns: staged ResNets with feature taps (`resnet`), exit heads and the BYOT attention gate
(`heads`), TESKD's FPN students (`fpn`) and MAC counting (`flops`). May import: `errors`,
`config`; never Ray, Optuna or MLflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from skd_ray.errors import ConfigError
from skd_ray.models.resnet import StagedResNet


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone and how many stages it exposes (for exit validation)."""

    build: Callable[[int | None, int, int], StagedResNet]
    num_stages: int
    summary: str


BACKBONES: dict[str, BackboneSpec] = {
    # He et al. 2016 ResNet-18 in its CIFAR form (3x3 stem, no max-pool), as in the BYOT,
    # TESKD and LightSKD CIFAR experiments.
    "resnet18": BackboneSpec(
        lambda width, c, n: StagedResNet([2, 2, 2, 2], width or 64, c, n), 4,
        "CIFAR ResNet-18 (11M params), 4 stages",
    ),
    # Same shape with one block per stage and width 16: trains on CPU at ~1k images/s,
    # suited to digits and Fashion-MNIST and to tests.
    "resnet_small": BackboneSpec(
        lambda width, c, n: StagedResNet([1, 1, 1, 1], width or 16, c, n), 4,
        "4-stage ResNet, 1 block per stage, width 16 (0.31M params)",
    ),
}


def _spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ConfigError(
            f"unknown backbone {name!r} (model.backbone)", f"choose one of: {', '.join(sorted(BACKBONES))}"
        )
    return BACKBONES[name]


def backbone_num_stages(name: str) -> int:
    """Number of stages of backbone `name` (raises ConfigError for an unknown name)."""
    return _spec(name).num_stages


def build_backbone(name: str, width: int | None, in_channels: int, num_classes: int) -> StagedResNet:
    """Instantiate a registered backbone for the given input channels and classes."""
    return _spec(name).build(width, in_channels, num_classes)


__all__ = ["BACKBONES", "StagedResNet", "backbone_num_stages", "build_backbone"]
