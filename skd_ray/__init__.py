"""skd-ray: teacher-free self-knowledge distillation with hyperparameter search at cluster scale.

From Python (see docs/python-api.md)::

    import skd_ray

    result = skd_ray.run_search(dataset="digits", num_samples=4, max_epochs=3)
    print(result.best_config, result.best_run_id)

The public names are imported on first use, so `import skd_ray` loads neither torch nor Ray,
Optuna or MLflow: a Ray worker, a tool reading `__version__` or a plugin that only registers a
method pays for what it uses.

"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "run_search": "skd_ray.api",
    "compare": "skd_ray.api",
    "search_results": "skd_ray.api",
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
           "comparison_results", "register_backbone", "register_dataset", "register_method", "run_search",
           "search_results"]

if TYPE_CHECKING:  # what type checkers and editors see; at run time the names are imported on first use
    from skd_ray.api import (
        ComparisonResult,
        MethodResult,
        SearchResult,
        TrialResult,
        compare,
        comparison_results,
        run_search,
        search_results,
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
