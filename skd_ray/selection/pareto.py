"""Pareto fronts of trials over several objectives, each maximised or minimised.

Pure functions on plain numbers, so the front that a multi-objective search reports can be
checked by hand; `skd_ray.selection.multi_objective` reads the trials from MLflow and records it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """True when `a` is at least as good as `b` in every objective and better in one."""
    better = False
    for x, y, mode in zip(a, b, modes, strict=True):
        if mode == "min":
            x, y = -x, -y
        if x < y:
            return False
        better = better or x > y
    return better


def pareto_front(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points, in input order. Points with a non-finite value
    are never on the front; identical points are both kept (neither dominates the other)."""
    if any(m not in ("min", "max") for m in modes):
        raise ValueError(f"modes must be 'min' or 'max', got {list(modes)}")
    finite = [i for i, p in enumerate(points) if all(math.isfinite(v) for v in p)]
    return [i for i in finite if not any(dominates(points[j], points[i], modes) for j in finite if j != i)]
