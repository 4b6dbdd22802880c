"""Starting weights from a local file (`model.weights=PATH`): never a download.

A checkpoint made for another task rarely matches everywhere (1,000 ImageNet classes, RGB
stems on grey images), so tensors whose shape differs are left at their initialisation and
named; a file that matches nothing at all is an error, not a silent random start.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from skd_ray.errors import ConfigError


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors`, `.pt`/`.pth` state dict, or a checkpoint holding one under
    `state_dict` or `model`."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.weights file {path} does not exist", "pass a local weights file (nothing is "
                          "downloaded), or leave model.weights empty for a random start")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file  # local: only weight files in this format need it
            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"model.weights file {path} cannot be read ({type(err).__name__}: {err})",
                          "pass a PyTorch state dict (.pt, .pth) or a .safetensors file") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"model.weights file {path} holds no state dict",
                          "save it with torch.save(model.state_dict(), path)")
    return state


def load_weights(module: nn.Module, path: str) -> tuple[int, list[str]]:
    """Copy the tensors of `path` whose name and shape match into `module`; returns how many
    were loaded and the names left at their initialisation."""
    state = read_state_dict(path)
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"no tensor of model.weights file {path} matches the backbone's names and shapes",
                          "save the weights from the same architecture (state_dict of the network itself)")
    module.load_state_dict(usable, strict=False)
    return len(usable), sorted(set(own) - set(usable))
