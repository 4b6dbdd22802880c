"""Any `nn.Module` seen through the stage contract: forward hooks on named stage modules and
on the classifier, so a timm model or a user's network trains with every method unchanged.

The hooks live only for the duration of one `forward_stages` call: nothing is left on the
wrapped module, so it deep-copies (SRDL's snapshot), pickles and exports as the user wrote it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from skd_ray.errors import ConfigError
from skd_ray.models.contract import StagedBackbone, StageLayout, StageOutputs


def submodule(module: nn.Module, name: str, what: str, owner: str, setting: str) -> nn.Module:
    """`module.get_submodule(name)`, or one ConfigError naming the missing name."""
    try:
        return module.get_submodule(name)
    except AttributeError:
        children = ", ".join(n for n, _ in module.named_children()) or "none"
        raise ConfigError(f"{what} {name!r} does not exist in backbone {owner} (its top-level modules: {children})",
                          f"name existing modules in {setting}, dotted for nested ones (e.g. layer1 or stages.0)"
                          ) from None


class TappedBackbone(StagedBackbone):
    """`module` with its stages named by `stage_names` and its classifier by `classifier_name`.

    `nhwc`: the stage modules output (N, H, W, C) maps (timm's transformers with
    `output_fmt='NHWC'`); they are permuted to (N, C, H, W) for the methods.
    """

    def __init__(self, module: nn.Module, stage_names: Sequence[str], classifier_name: str, num_classes: int,
                 name: str, nhwc: bool = False) -> None:
        super().__init__()
        self.module = module
        self.stage_names = list(stage_names)
        self.classifier_name = classifier_name
        self.num_classes = num_classes
        self.nhwc = nhwc
        for stage in self.stage_names:
            submodule(module, stage, "stage", name, "model.stages")
        submodule(module, classifier_name, "classifier", name, "model.classifier")
        self.source = name
        self.layout = StageLayout((), (), 0)  # read by the probe (`probe_layout`) once built

    def stage_modules(self) -> list[nn.Module]:
        return [self.module.get_submodule(n) for n in self.stage_names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def forward_stages(self, x: torch.Tensor) -> StageOutputs:
        maps: list[Any] = [None] * len(self.stage_names)
        seen: dict[str, Any] = {}

        def keep_map(i: int):
            return lambda _m, _inp, out: maps.__setitem__(i, out)

        def keep_pooled(_m: nn.Module, inp: tuple[Any, ...]) -> None:
            seen["pooled"] = inp[0] if inp else None

        classifier = self.module.get_submodule(self.classifier_name)
        handles = [m.register_forward_hook(keep_map(i)) for i, m in enumerate(self.stage_modules())]
        handles.append(classifier.register_forward_pre_hook(keep_pooled))
        handles.append(classifier.register_forward_hook(lambda _m, _i, out: seen.__setitem__("logits", out)))
        try:
            logits = self.module(x)
        finally:
            for h in handles:
                h.remove()
        return StageOutputs(self._checked_maps(maps), self._checked_pooled(seen), self._checked_logits(seen, logits))

    def _checked_maps(self, maps: list[Any]) -> list[torch.Tensor]:
        for stage, out in zip(self.stage_names, maps):
            if out is None:
                raise ConfigError(f"stage {stage!r} of backbone {self.source} is never run by its forward",
                                  "name modules the forward pass calls (model.stages)")
            if not isinstance(out, torch.Tensor):
                raise ConfigError(f"stage {stage!r} of backbone {self.source} returns {type(out).__name__}, "
                                  "not a tensor", "name modules that return one feature map (model.stages)")
        return [m.permute(0, 3, 1, 2) for m in maps] if self.nhwc else maps

    def _checked_pooled(self, seen: dict[str, Any]) -> torch.Tensor:
        pooled = seen.get("pooled")
        if not isinstance(pooled, torch.Tensor):
            raise ConfigError(f"classifier {self.classifier_name!r} of backbone {self.source} is never run by its "
                              "forward, or reads no tensor", "name the final linear layer as model.classifier")
        return pooled

    def _checked_logits(self, seen: dict[str, Any], logits: Any) -> torch.Tensor:
        if seen.get("logits") is not logits:
            raise ConfigError(f"classifier {self.classifier_name!r} of backbone {self.source} is not the network's "
                              "last layer: its forward returns something else",
                              "name the layer whose output the forward returns as model.classifier")
        return logits
