"""Networks from outside the package: timm models, user factories named by import path, and
how their stages and classifier are found.

Nothing here downloads: timm models are created with `pretrained=False`; weights come from a
local file (`model.weights`, see `weights`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from skd_ray.errors import ConfigError

TIMM_PREFIX = "timm:"
CLASSIFIER_ATTRIBUTES = ("fc", "classifier", "head")


def build_timm(model_name: str, in_channels: int, num_classes: int) -> nn.Module:
    """A randomly initialised timm model with this many input channels and classes."""
    try:
        import timm  # local: timm takes ~1 s to import; only timm backbones need it
    except ImportError:
        raise ConfigError("timm backbones need the timm package", "pip install 'timm>=1.0'") from None
    if not timm.is_model(model_name):
        raise ConfigError(f"unknown timm model {model_name!r} (model.backbone timm:{model_name})",
                          "list the names with python -c \"import timm; print(timm.list_models('*net*'))\"")
    return timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_channels)


NETWORK_CALL = "factory(num_classes=..., in_channels=...)"


def import_factory(path: str, call: str = NETWORK_CALL) -> Callable[..., Any]:
    """The object `package.module:attribute` names; one ConfigError when it cannot be had.
    `call` says how the factory is called, for the fix of a target that is not callable."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"backbone {path!r} is not an import path", "write it as package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or whatever the user's module raises at import
        raise ConfigError(f"{module_name} (from {path}) does not import ({type(err).__name__}: {err})",
                          "install that package in the environment the workers use, or put it on PYTHONPATH") from None
    try:
        target: Any = module
        for part in attr.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise ConfigError(f"{module_name} has no {attr!r} (from {path})", f"check the name after the colon in {path}") \
            from None
    if not callable(target):
        raise ConfigError(f"{path} is a {type(target).__name__}, not a callable factory",
                          f"name a function or class called as {call}")
    return target


def call_factory(factory: Callable[..., Any], name: str, num_classes: int, in_channels: int) -> nn.Module:
    """`factory(num_classes=..., in_channels=...)`, checked to accept them and to return a module."""
    try:
        inspect.signature(factory).bind(num_classes=num_classes, in_channels=in_channels)
    except TypeError as err:
        raise ConfigError(f"backbone factory {name} cannot be called as {name}(num_classes=..., in_channels=...) "
                          f"({err})", "give the factory those two keyword parameters") from None
    except ValueError:
        pass  # builtins without a signature: let the call decide
    module = factory(num_classes=num_classes, in_channels=in_channels)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"backbone factory {name} returned {type(module).__name__}, not a torch nn.Module",
                          "return the network (an nn.Module) from the factory")
    return module


def stage_names_of(module: nn.Module, name: str, stages: list[str]) -> list[str]:
    """The stages to tap: `model.stages` when set, else the module's own `feature_info`
    (timm models, or any module listing `{"module": name, ...}` dicts the same way)."""
    if stages:
        return list(stages)
    info = getattr(module, "feature_info", None)
    if info is not None:
        if hasattr(info, "module_name"):  # timm's FeatureInfo
            return list(info.module_name())
        try:
            return [entry["module"] for entry in info]
        except (TypeError, KeyError):
            raise ConfigError(f"feature_info of backbone {name} lists no module names",
                              "make it a list of {'module': name, ...} dicts, or set model.stages") from None
    raise ConfigError(f"backbone {name} does not say where its stages are (no feature_info)",
                      "name them, e.g. --set model.stages=layer1,layer2,layer3,layer4 for torchvision's ResNets")


def classifier_name_of(module: nn.Module, name: str, classifier: str) -> str:
    """The classifier to tap: `model.classifier` when set, else timm's `get_classifier()`, else
    the first of the attributes fc, classifier, head that is a module."""
    if classifier:
        return classifier
    get = getattr(module, "get_classifier", None)
    if callable(get):
        found = get()
        for sub_name, sub in module.named_modules():
            if sub is found and sub_name:
                return sub_name
    for attr in CLASSIFIER_ATTRIBUTES:
        if isinstance(getattr(module, attr, None), nn.Module):
            return attr
    raise ConfigError(f"no classifier found in backbone {name} (no get_classifier(), fc, classifier or head)",
                      "name its final linear layer with --set model.classifier=<module name>")
