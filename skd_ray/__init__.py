"""skd-ray: teacher-free self-knowledge distillation with hyperparameter search at cluster scale.

From Python (see docs/python-api.md)::

    import skd_ray

    result = skd_ray.search(dataset="digits", num_samples=4, max_epochs=3)
    print(result.best_config, result.best_run_id)

The public names are imported on first use, so `import skd_ray` loads neither torch nor Ray,
Optuna or MLflow: a Ray worker, a tool reading `__version__` or a plugin that only registers a
method pays for what it uses.

`skd_ray.search` and `skd_ray.results` are the API's functions, although the package also has
subpackages of those names: Python binds a subpackage to its parent's attribute of the same
name when it is first imported, which would turn `skd_ray.search(...)` into "module is not
callable" as soon as anything imported `skd_ray.search.space`. So those two attributes are
data descriptors on the package's module class that always answer the function; the
subpackages are reached by `from skd_ray.search.space import ...` (or `importlib`), as the
package itself does everywhere, not as attributes of `skd_ray`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "search": "skd_ray.api",
    "compare": "skd_ray.api",
    "results": "skd_ray.api",
    "comparison_results": "skd_ray.api",
    "SearchResult": "skd_ray.api",
    "TrialResult": "skd_ray.api",
    "ComparisonResult": "skd_ray.api",
    "MethodResult": "skd_ray.api",
    "SkdError": "skd_ray.errors",
    "register_method": "skd_ray.methods",
    "register_backbone": "skd_ray.models",
    "register_dataset": "skd_ray.data",
}

__all__ = ["ComparisonResult", "MethodResult", "SearchResult", "SkdError", "TrialResult", "__version__", "compare",
           "comparison_results", "register_backbone", "register_dataset", "register_method", "results", "search"]

if TYPE_CHECKING:  # what type checkers and editors see; at run time the names are imported on first use
    from skd_ray.api import (
        ComparisonResult,
        MethodResult,
        SearchResult,
        TrialResult,
        compare,
        comparison_results,
        results,
        search,
    )
    from skd_ray.data import register_dataset
    from skd_ray.errors import SkdError
    from skd_ray.methods import register_method
    from skd_ray.models import register_backbone


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use and keep the name here for the next access."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'skd_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _ApiFunction:
    """`skd_ray.<name>` is the API function `skd_ray.api.<name>`, whatever the import system
    binds there for the subpackage of the same name (see the module docstring). Anything
    else assigned (a test's stand-in) is answered until it is deleted or set back."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, package: types.ModuleType | None, owner: type | None = None) -> Any:
        if package is None:
            return self
        replaced = package.__dict__.get("_replaced", {})
        if self.name in replaced:
            return replaced[self.name]
        return getattr(importlib.import_module(_EXPORTS[self.name]), self.name)

    def __set__(self, package: types.ModuleType, value: Any) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == f"{package.__name__}.{self.name}":
            return  # the subpackage being imported: it stays in sys.modules, the function stays here
        package.__dict__.setdefault("_replaced", {})[self.name] = value

    def __delete__(self, package: types.ModuleType) -> None:
        package.__dict__.get("_replaced", {}).pop(self.name, None)


class _Package(types.ModuleType):
    search = _ApiFunction("search")
    results = _ApiFunction("results")


sys.modules[__name__].__class__ = _Package
