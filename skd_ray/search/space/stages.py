"""Search-space values named by the backbone's stages, resolved for the backbone a space trains.

BYOT's exits, LightSKD's auxiliary stage and TESKD's number of students count the backbone's
stages, and backbones differ in how many they have (3 for the CIFAR ResNet-20..110 and Wide
ResNets, 4 for ResNet-18, 5 for timm's ResNets, MobileNets and EfficientNets). A file that
lists `choices: [1, 2, 3]` is right for 4-stage networks only, so a space may name these values
by what they mean:

    choices: non_final_stages           [1, ..., S-1]        subset and categorical parameters
    low: / high: last_non_final_stage   S-1                  int parameters
    default: last_non_final_stage       S-1
    default: method_default             what the method itself uses on this backbone (its
                                        `stage_defaults`, else its parameter's default)

S is the stage count of the space's backbone, probed for the space's final fixed values (the
file's `fixed:` after `--backbone`, `--dataset` and `--set` overrides), so one file serves every
family. The resolved numbers are all the space holds from then on: Optuna sees exactly what a
literal file would give it (a 4-stage network's exit subsets stay '1-2-3'), and a saved search
resumes with the values it started with whatever the file says later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from skd_ray.config import DataConfig, ModelConfig, TrainConfig, build_dataclass
from skd_ray.errors import ConfigError
from skd_ray.methods import get_method_spec
from skd_ray.training.resolve import config_layout

NON_FINAL_STAGES = "non_final_stages"
LAST_NON_FINAL_STAGE = "last_non_final_stage"
METHOD_DEFAULT = "method_default"
# The flat keys the probed layout depends on: the network and the images it sees (a user
# dataset's channels and classes are read from data.dir).
LAYOUT_KEYS = ("data.name", "data.dir", "data.image_size", "model.backbone", "model.width", "model.stages",
               "model.classifier")


class Searched(Protocol):
    """What `space_stages` reads of a parsed parameter (`skd_ray.search.space.definition.Param`)."""

    key: str
    default: Any

    def extremes(self) -> list[Any]: ...


@dataclass(frozen=True)
class Stages:
    """A space's backbone and its stage count S (stage S is the final one, feeding the classifier)."""

    backbone: str
    count: int

    @property
    def non_final(self) -> list[int]:
        return list(range(1, self.count))

    def describe(self) -> str:
        return f"model.backbone {self.backbone} has {self.count} stages (non-final stages {self.non_final})"


def uses_stages(spec: Any) -> bool:
    """True when a parameter's spec names a value by the backbone's stages (or the method's default)."""
    if not isinstance(spec, dict):
        return False
    return (spec.get("choices") == NON_FINAL_STAGES or spec.get("default") == METHOD_DEFAULT
            or any(spec.get(f) == LAST_NON_FINAL_STAGE for f in ("low", "high", "default")))


def backbone_stages(flat: dict[str, Any]) -> Stages:
    """The backbone `flat` trains and its stage count, from the same probed layout that
    `resolve_config` checks method values against (same network, channels, classes, image size)."""
    data_cfg = build_dataclass(DataConfig, {k[5:]: v for k, v in flat.items() if k.startswith("data.")}, "data")
    m = build_dataclass(ModelConfig, {k[6:]: v for k, v in flat.items() if k.startswith("model.")}, "model")
    return Stages(m.backbone, config_layout(data_cfg, m).num_stages)


def space_stages(where: str, fixed: dict[str, Any], params: Sequence[Searched], stage_key: str) -> Stages:
    """The stages of the backbone a space trains: its fixed values, with searched layout keys
    (a searched backbone or dataset) at their defaults. Values named by stages must mean the same
    numbers at every value of such a searched key, else one resolved list would be wrong for
    some trials: that is refused, naming `stage_key` (the first parameter named by stages)."""
    searched = [p for p in params if p.key in LAYOUT_KEYS and p.key not in fixed]
    base = {**{p.key: p.default for p in searched}, **fixed}
    stages = _probe(where, base)
    for p in searched:
        for value in p.extremes():
            other = _probe(where, {**base, p.key: value})
            if other.count != stages.count:
                raise ConfigError(
                    f"{where}: parameter {stage_key} takes its values from the backbone's stages, but {p.key} is "
                    f"searched and its values disagree: {p.key} {value!r} gives {other.count} stages, its default "
                    f"{base[p.key]!r} {stages.count}",
                    f"fix {p.key} (in fixed:, or with --set {p.key}=...), or give {stage_key} literal values "
                    "valid for every choice")
    return stages


def _probe(where: str, flat: dict[str, Any]) -> Stages:
    try:
        return backbone_stages(flat)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err.problem}", err.fix) from None


def resolve_stage_spec(where: str, key: str, spec: dict[str, Any], stages: Stages, method: Any) -> dict[str, Any]:
    """`spec` with its stage names replaced by numbers for `stages` (see the module docstring)."""
    out = dict(spec)
    if out.get("choices") == NON_FINAL_STAGES:
        if not stages.non_final:
            raise ConfigError(f"{where} takes its choices from the non-final stages, but {stages.describe()}",
                              "use a backbone with at least 2 stages, or drop the parameter")
        out["choices"] = stages.non_final
    for name in ("low", "high", "default"):
        if out.get(name) == LAST_NON_FINAL_STAGE:
            out[name] = stages.count - 1
    if out.get("default") == METHOD_DEFAULT:
        out["default"] = method_default(where, key, method, stages.count)
    return out


def method_default(where: str, key: str, method: Any, num_stages: int) -> Any:
    """The value `method` uses for `key` when a config leaves it unset, on a backbone with
    `num_stages` stages (its `stage_defaults`, else its parameter dataclass's default)."""
    if not key.startswith("method."):
        raise ConfigError(f"{where}: default: {METHOD_DEFAULT} applies to method.* parameters only",
                          "write a literal default")
    if not isinstance(method, str):
        raise ConfigError(f"{where}: default: {METHOD_DEFAULT} needs to know the method, and this space searches it",
                          "fix method: in fixed:, or take the parameter from the method's file under methods:")
    spec = get_method_spec(method)
    name = key.partition(".")[2]
    by_stages = spec.cls.stage_defaults(num_stages)
    if name in by_stages:
        return by_stages[name]
    for f in dataclasses.fields(spec.params):
        if f.name == name:
            return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    raise ConfigError(f"{where}: method {method} has no parameter {name}",
                      f"use one of: {', '.join(f.name for f in dataclasses.fields(spec.params))}")


def stage_parameter(flat: dict[str, Any], key: str | None) -> Stages | None:
    """`flat`'s backbone stages when `key` is a parameter its method numbers by stages (one the
    method defaults from the stage count), else None: what an error about `key` should name."""
    if not key or not key.startswith("method."):
        return None
    try:
        spec = get_method_spec(flat.get("method", TrainConfig.method))
        stages = backbone_stages(flat)
    except ConfigError:
        return None
    return stages if key.partition(".")[2] in spec.cls.stage_defaults(stages.count) else None


def stage_spelling(kind: str) -> str:
    """How a parameter of `kind` follows the backbone's stages, for an error's fix."""
    if kind == "int":
        return f"low: 1, high: {LAST_NON_FINAL_STAGE}, default: {METHOD_DEFAULT}"
    if kind == "subset":
        return f"choices: {NON_FINAL_STAGES}, default: all"
    return f"choices: {NON_FINAL_STAGES}, default: {METHOD_DEFAULT}"
