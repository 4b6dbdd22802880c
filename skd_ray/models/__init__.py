"""Backbones behind one stage contract, the exit heads and student paths built on it.

Owns: the stage contract (`contract`), the backbone registry and name resolution (`registry`),
ResNets and Wide ResNets written here (`resnet`, `wrn`), timm models and user modules tapped
with hooks (`external`, `tapped`), local starting weights (`weights`), exit heads and the BYOT
attention gate (`heads`), TESKD's FPN students (`fpn`) and MAC counting (`flops`). May import:
`errors`, `plugins`, `config`; never Ray, Optuna or MLflow.
"""

from __future__ import annotations

from skd_ray.models.backbone_registry import (
    BACKBONES,
    BackboneSpec,
    backbone_layout,
    backbone_names,
    backbone_spec,
    build_backbone,
    register_backbone,
)
from skd_ray.models.contract import StagedBackbone, StageLayout, StageOutputs
from skd_ray.models.resnet import StagedResNet
from skd_ray.models.tapped import TappedBackbone
from skd_ray.models.wrn import WideResNet


def backbone_num_stages(name: str, image_size: int = 32, in_channels: int = 3) -> int:
    """Number of stages of backbone `name` (raises ConfigError for an unknown name)."""
    return backbone_layout(name, None, in_channels, 10, image_size).num_stages


__all__ = ["BACKBONES", "BackboneSpec", "StageLayout", "StageOutputs", "StagedBackbone", "StagedResNet",
           "TappedBackbone", "WideResNet", "backbone_layout", "backbone_names", "backbone_num_stages",
           "backbone_spec", "build_backbone", "register_backbone"]
