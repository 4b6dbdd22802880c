"""The objective of a search: one metric and its direction, owned here and nowhere else.

A space's `metric:` and `mode:` (default `val_acc`, max) decide which epoch of a trial is its
best (the checkpoint kept, exported and retrained), which value Optuna learns from, how the
leaderboard, the parent run's summary, `export`, `final --top` and `compare` rank trials, and
what the console calls the best. They all ask this object, so a space whose metric is
`val_loss` (min) names the same best trial everywhere.

The objective travels with the config (`eval.objective`, `eval.objective_mode`): every trial,
the engine inside it and the search's parent run (as `config.eval.objective`) carry it, so a
reader of MLflow finds it on the search itself; searches logged before it existed read as
`val_acc`, max, which is what they used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from skd_ray.errors import ConfigError
from skd_ray.training.metrics import BEST_PREFIX, VAL_ACC, best

MODES = ("max", "min")
METRIC_KEY = "eval.objective"
MODE_KEY = "eval.objective_mode"
T = TypeVar("T")


@dataclass(frozen=True)
class Objective:
    """What trials are ranked by: `metric` (a reported metric, e.g. `val_acc`, `val_loss`,
    `val_acc.exit1`) and `mode` (`max` or `min`). The value of a trial is its best epoch's:
    `best_<metric>`, which the engine reports every epoch."""

    metric: str = VAL_ACC
    mode: str = "max"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"objective mode {self.mode!r} is neither max nor min", "write mode: max or mode: min")
        if self.metric.startswith(BEST_PREFIX):  # `best_val_acc` names the same objective as `val_acc`
            object.__setattr__(self, "metric", self.metric.removeprefix(BEST_PREFIX))

    @property
    def best_key(self) -> str:
        """The reported key of a run's best value so far: `best_<metric>`."""
        return best(self.metric)

    def improves(self, value: float, incumbent: float | None) -> bool:
        """`value` is strictly better than `incumbent` (any finite value beats none or NaN)."""
        if not _finite(value):
            return False
        if incumbent is None or not _finite(incumbent):
            return True
        return value > incumbent if self.mode == "max" else value < incumbent

    def better_of(self, value: float, incumbent: float | None) -> float:
        return value if self.improves(value, incumbent) else incumbent  # type: ignore[return-value]

    def score(self, value: float | None) -> float:
        """A number that is larger for better values and -inf for none: what sorts best first."""
        if value is None or not _finite(value):
            return -math.inf
        return value if self.mode == "max" else -value

    def rank(self, items: Iterable[T], value_of: Callable[[T], float | None]) -> list[T]:
        """`items` best first; ties keep their order (callers order ties beforehand)."""
        return sorted(items, key=lambda item: self.score(value_of(item)), reverse=True)

    def describe(self) -> str:
        """`val_acc (max)`: how the console and the reports name it."""
        return f"{self.metric} ({self.mode})"

    def config(self) -> dict[str, str]:
        """The flat config keys that carry the objective into every trial."""
        return {METRIC_KEY: self.metric, MODE_KEY: self.mode}

    @classmethod
    def from_flat(cls, flat: Mapping[str, object]) -> Objective:
        """The objective of a flat config (or a parent run's constants); `val_acc`, max when
        absent (searches logged before the objective was recorded)."""
        return cls(str(flat.get(METRIC_KEY) or VAL_ACC), str(flat.get(MODE_KEY) or "max"))


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
