"""A LocalSession that dies after a given epoch, for exact-resume tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skd_ray.training.session import LocalSession


class Interrupted(Exception):
    """Raised by StopAfter to simulate a crash right after a checkpoint."""


class StopAfter(LocalSession):
    """Saves like LocalSession, then dies after reporting epoch `stop`."""

    def __init__(self, stop: int, checkpoint_dir: Path) -> None:
        super().__init__("cpu", checkpoint_dir=checkpoint_dir, echo=False)
        self.stop = stop

    def report(self, metrics: dict[str, float], state: dict[str, Any], is_best: bool) -> None:
        super().report(metrics, state, is_best)
        if metrics["epoch"] == self.stop:
            raise Interrupted
