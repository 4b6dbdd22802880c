"""The stage contract: what every self-KD method needs from a backbone, whatever its family.

A method taps the network between stages (exit heads, students, feature hints, the TFD
pairs), so a backbone is seen as stages plus a classifier: one forward gives every stage's
feature map, the pooled feature the classifier reads and the logits (`StageOutputs`), and
`layout` says each stage's channels and stride so heads can be sized before any data flows.
ResNets written here implement it directly; timm models and user modules are wrapped by
`TappedBackbone`, which reads the same facts with forward hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from skd_ray.errors import ConfigError


class StageOutputs(NamedTuple):
    """One forward pass seen through the stages."""

    maps: list[torch.Tensor]  # every stage's output (N, C, H, W), shallow to deep
    pooled: torch.Tensor  # (N, pooled_dim): what the classifier reads
    logits: torch.Tensor  # the deployable network's own output


@dataclass(frozen=True)
class StageLayout:
    """Channels and strides of the stages, and the width of the pooled feature.

    `strides[i]` is stage i's stride relative to its input (stage 0: relative to the image).
    `sizes` are the maps' spatial sizes for the image size the backbone was built for (None
    when built without a probe: then the strides alone size the heads).
    """

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    pooled_dim: int
    sizes: tuple[tuple[int, int], ...] | None = None

    @property
    def num_stages(self) -> int:
        return len(self.channels)

    def reduction_between(self, start: int, stop: int) -> int:
        """Total stride from stage `start`'s map to stage `stop`'s (0-based, start <= stop)."""
        k = 1
        for s in self.strides[start + 1:stop + 1]:
            k *= s
        if self.sizes is not None:  # odd sizes: a 7x7 map reaches 1x1 after x8, not after x7
            k = max(1, min(k, self.sizes[start][0] // max(1, self.sizes[stop][0])))
        return k


class StagedBackbone(nn.Module):
    """Base of every backbone the methods train; `forward` gives the deployable logits."""

    num_classes: int
    layout: StageLayout

    def forward_stages(self, x: torch.Tensor) -> StageOutputs:
        raise NotImplementedError

    def stage_modules(self) -> list[nn.Module]:
        """The module whose forward ends each stage (exit costs count MACs up to it)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x).logits


class StemStagesClassifier(StagedBackbone):
    """A backbone built as `stem` -> `stages` (an nn.ModuleList run in order) -> global average
    pool -> `fc`: the shape of every ResNet written here."""

    stem: nn.Module
    stages: nn.ModuleList
    fc: nn.Module

    def forward_stages(self, x: torch.Tensor) -> StageOutputs:
        maps = []
        out = self.stem(x)
        for stage in self.stages:
            out = stage(out)
            maps.append(out)
        pooled = self.pool(out)
        return StageOutputs(maps, pooled, self.fc(pooled))

    def stage_modules(self) -> list[nn.Module]:
        return list(self.stages)

    def pool(self, feat: torch.Tensor) -> torch.Tensor:
        """Global average pool to a (batch, channels) feature."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(feat, 1), 1)

    def classify(self, feat: torch.Tensor) -> torch.Tensor:
        """Logits of the backbone's own classifier from the last stage's output."""
        return self.fc(self.pool(feat))


def probe_layout(backbone: StagedBackbone, in_channels: int, image_size: int, name: str) -> StageLayout:
    """Run one image of `image_size` through `backbone` and read its real stage layout.

    Raises one ConfigError for what would break a method later: maps that are not (N, C, H, W),
    stages whose maps do not shrink, a network that reduces the image below one pixel.
    """
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone.forward_stages(torch.zeros(1, in_channels, image_size, image_size))
    except ConfigError:
        raise
    except Exception as err:  # a user's module can fail in any way on the probe image
        raise ConfigError(f"backbone {name} fails on a {in_channels}x{image_size}x{image_size} image "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
                          "check the network's input channels and the image size it expects") from None
    finally:
        backbone.train(was_training)
    return layout_from_outputs(out, image_size, name)


def layout_from_outputs(out: StageOutputs, image_size: int, name: str) -> StageLayout:
    """The layout of the probe's outputs, checked (see `probe_layout`)."""
    for i, m in enumerate(out.maps, 1):
        if m.dim() != 4:
            raise ConfigError(f"stage {i} of backbone {name} outputs a {m.dim()}-d tensor {tuple(m.shape)}, "
                              "not (N, C, H, W)", "name stages whose outputs are image feature maps (model.stages)")
    if len(out.maps) < 2:
        raise ConfigError(f"backbone {name} exposes {len(out.maps)} stage(s); self-KD needs at least 2",
                          "name two or more stages (model.stages)")
    if out.pooled.dim() != 2:
        raise ConfigError(f"the classifier of backbone {name} reads a {tuple(out.pooled.shape)} tensor, "
                          "not a pooled (N, features) one", "name the final linear layer as model.classifier")
    sizes = tuple((int(m.shape[-2]), int(m.shape[-1])) for m in out.maps)
    strides, prev = [], image_size
    for i, (h, _) in enumerate(sizes):
        if i > 0 and h >= sizes[i - 1][0]:
            if h == 1:
                raise ConfigError(
                    f"backbone {name} is too deep for {image_size}x{image_size} images: stages {i}-{i + 1} "
                    "are already 1x1", "use larger images (data.image_size, another dataset), fewer stages "
                    "(model.stages) or a CIFAR family such as resnet20")
            raise ConfigError(f"stage {i + 1} of backbone {name} does not shrink ({sizes[i - 1][0]}x"
                              f"{sizes[i - 1][1]} -> {h}x{sizes[i][1]})",
                              "name stages at decreasing resolutions, shallow to deep (model.stages)")
        strides.append(max(1, round(prev / h)))
        prev = h
    return StageLayout(tuple(int(m.shape[1]) for m in out.maps), tuple(strides), int(out.pooled.shape[1]), sizes)
