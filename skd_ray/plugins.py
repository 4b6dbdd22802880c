"""Methods, backbones and datasets from installed packages, through entry points.

A plugin package declares, in its pyproject.toml,

    [project.entry-points."skd_ray.backbones"]
    my_net = "my_package.nets:build_net"

and the groups `skd_ray.methods` (a SelfKDMethod class registered with `@register_method`)
and `skd_ray.datasets` (a dataset factory) the same way. Each registry loads its group the
first time it is asked for names, in every process (Ray's workers included), so an installed
plugin shows up in the command line's choices and trains on the cluster without any import
in user code. A plugin that fails to load is one error naming it, never a silent omission.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any

from skd_ray.errors import ConfigError

GROUPS = ("skd_ray.methods", "skd_ray.backbones", "skd_ray.datasets")
_loaded: set[str] = set()


def load_group(group: str, register: Callable[[str, Any], None]) -> None:
    """Load every entry point of `group` once per process and pass (name, object) to `register`."""
    if group in _loaded:
        return
    _loaded.add(group)
    for ep in metadata.entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else "an installed package"
        try:
            obj = ep.load()
        except Exception as err:
            _loaded.discard(group)
            raise ConfigError(f"plugin {ep.name} ({ep.value}, group {group}, from {dist}) does not load "
                              f"({type(err).__name__}: {err})", f"fix or uninstall {dist}") from None
        register(ep.name, obj)


def forget_loaded() -> None:
    """Let the next lookup load the entry points again (tests that install plugins)."""
    _loaded.clear()
