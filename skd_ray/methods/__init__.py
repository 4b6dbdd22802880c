"""Method registry: `@register_method("name", params=Dataclass)` on a SelfKDMethod class.

Adding a method is adding one file that registers itself; tests parametrised over the
registry then cover it. The CLI, config validation and search spaces look methods up here.

Owns: `SelfKDMethod` (`base`), the shared loss functions (`losses`), per-sample stores
(`sample_memory`) and one module per method. May import: `errors`, `config`, `models`; never
Ray, Optuna or MLflow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skd_ray.errors import ConfigError
from skd_ray.methods.base import FINAL, ExitCost, ExitPolicy, MethodContext, MethodOutput, SelfKDMethod
from skd_ray.plugins import load_group


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its class and its parameter dataclass."""

    name: str
    cls: type[SelfKDMethod]
    params: type

    def validate(self, params: Any, num_stages: int) -> None:
        self.cls.validate_params(params, num_stages)

    def default_params(self) -> Any:
        return self.params()


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, params: type) -> Callable[[type[SelfKDMethod]], type[SelfKDMethod]]:
    """Class decorator adding a method to the registry under `name`."""
    if not dataclasses.is_dataclass(params):
        raise TypeError(f"params of method {name} must be a dataclass")

    def wrap(cls: type[SelfKDMethod]) -> type[SelfKDMethod]:
        if name in METHODS:
            raise ValueError(f"method {name} registered twice")
        METHODS[name] = MethodSpec(name, cls, params)
        return cls

    return wrap


def _register_plugin(name: str, obj: Any) -> None:
    """An entry point of group `skd_ray.methods` names a class that `@register_method(name)`
    registered when its module was imported."""
    if name not in METHODS:
        raise ConfigError(f"plugin method {name} ({getattr(obj, '__qualname__', obj)}) is not registered under "
                          f"that name", f"decorate the class with @register_method({name!r}, params=...)")


def method_names() -> list[str]:
    """Every registered method (installed plugins included), sorted."""
    load_group("skd_ray.methods", _register_plugin)
    return sorted(METHODS)


def get_method_spec(name: str) -> MethodSpec:
    """Spec of method `name`; ConfigError listing the registered names when unknown."""
    if name not in METHODS and name not in method_names():
        raise ConfigError(f"unknown method {name!r} (method)", f"choose one of: {', '.join(method_names())}")
    return METHODS[name]


def build_method(name: str, backbone: Any, params: Any, ctx: MethodContext | None = None) -> SelfKDMethod:
    """Wrap `backbone` in method `name` with validated `params`."""
    return get_method_spec(name).cls(backbone, params, ctx)


# Importing the modules registers them.
from skd_ray.methods import byot, lightskd, pskd, srdl, teskd, tfd, tfkd_reg, vanilla  # noqa: E402,F401

__all__ = ["FINAL", "METHODS", "ExitCost", "ExitPolicy", "MethodContext", "MethodOutput", "MethodSpec", "SelfKDMethod",
           "build_method", "get_method_spec", "method_names", "register_method"]
