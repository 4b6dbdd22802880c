"""Deeply-supervised nets (Lee et al., AISTATS 2015) as a self-KD baseline: an exit head after
each chosen stage learns from the labels alone. Against BYOT it isolates what the
distillation and hint terms add on top of the extra heads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from skd_ray.errors import ConfigError
from skd_ray.methods import FINAL, ExitCost, MethodOutput, SelfKDMethod, register_method
from skd_ray.models.heads import ExitHead


@dataclass
class DsnParams:
    """`exits`: stages (1-based, non-final) that get a head; `aux_weight`: weight of their CE."""

    exits: list[int] = field(default_factory=lambda: [1])
    aux_weight: float = 0.3


@register_method("dsn", params=DsnParams)
class DeeplySupervised(SelfKDMethod):
    """The backbone plus one plain exit head per chosen stage, every exit answering at inference."""

    multi_exit = True
    search_space = str(Path(__file__).with_name("dsn.yaml"))  # what `--method dsn` searches by default

    def __init__(self, backbone: Any, params: DsnParams, ctx: Any = None) -> None:
        super().__init__(backbone, params, ctx)
        layout = backbone.layout
        self.heads = nn.ModuleDict({
            f"exit{s}": ExitHead(list(layout.channels[s - 1:]), list(layout.strides[s - 1:]), backbone.num_classes,
                                 attention=False)
            for s in sorted(params.exits)})

    @classmethod
    def stage_defaults(cls, num_stages: int) -> dict[str, Any]:
        return {"exits": list(range(1, num_stages))}

    @classmethod
    def validate_params(cls, params: DsnParams, num_stages: int) -> None:
        allowed = list(range(1, num_stages))
        if not params.exits or any(s not in allowed for s in params.exits):
            raise ConfigError(f"method.exits {params.exits} is impossible with {num_stages} stages",
                              f"use a non-empty subset of {allowed}")
        if params.aux_weight < 0:
            raise ConfigError("method.aux_weight must be >= 0", "use e.g. 0.3")

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> MethodOutput:
        maps, _, logits = self.backbone.forward_stages(x)
        ce = F.cross_entropy(logits, y)
        terms = {"ce_final": ce}
        loss = ce
        for name, head in self.heads.items():
            stage = int(name.removeprefix("exit"))
            terms[f"ce_{name}"] = F.cross_entropy(head(maps[stage - 1])[1], y)
            loss = loss + self.params.aux_weight * terms[f"ce_{name}"]
        return MethodOutput(loss, logits, terms)

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps, _, logits = self.backbone.forward_stages(x)
        out = {name: head(maps[int(name.removeprefix("exit")) - 1])[1] for name, head in self.heads.items()}
        out[FINAL] = logits
        return out

    def _exit_costs(self, one: torch.Tensor, full_macs: int) -> dict[str, ExitCost]:
        return self.head_exit_costs(one, full_macs, {name: (int(name.removeprefix("exit")), head)
                                                     for name, head in self.heads.items()})
