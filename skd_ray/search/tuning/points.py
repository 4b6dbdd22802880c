"""A Tune searcher that runs a fixed list of trial configs, each exactly once, in order.

The final evaluation retrains chosen configurations with several seeds: there is nothing to
sample, but each (configuration, seed) must still be a Tune trial so that it runs through the
same trial function, resources, MLflow child runs and status callbacks as a search. Tune's
own `BasicVariantGenerator` needs every point's keys declared in a parameter space, and a
`grid_search` space would make `num_samples` mean "repeat the grid"; this searcher keeps
`num_samples` equal to the number of trials, as everywhere else in `skd_ray.search`.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher


class PointsSearcher(Searcher):
    """Suggests `points[0]`, `points[1]`, ... once each, then reports FINISHED."""

    def __init__(self, points: list[dict[str, Any]], metric: str | None = None, mode: str | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.points = [dict(p) for p in points]
        self.next_index = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.next_index >= len(self.points):
            return Searcher.FINISHED
        point = self.points[self.next_index]
        self.next_index += 1
        return dict(point)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Nothing to learn from results: the list is fixed."""

    def save(self, checkpoint_path: str) -> None:
        """Saved with Tune's experiment state, so an interrupted run knows what it handed out."""
        with open(checkpoint_path, "wb") as fh:
            pickle.dump({"points": self.points, "next_index": self.next_index}, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            state = pickle.load(fh)
        self.points, self.next_index = state["points"], state["next_index"]
