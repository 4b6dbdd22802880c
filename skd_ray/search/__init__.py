"""A hyperparameter search on Ray Tune + Optuna, tracked in MLflow: the only layer that runs Ray.

Its subpackages, one concern each:

- `space/`: the search-space file and its stage-named values (Ray-free);
- `request`: what a search is asked to do and the trial resources (Ray-free);
- `state/`: what a search keeps on disk to be resumed (Ray-free);
- `cluster/`: joining or starting Ray, sizing the search, waiting for resources;
- `tuning/`: the Tune driver with Optuna and ASHA, trial numbers, callbacks, closing;
- `execution/`: how one trial trains (in its process, in a DDP pool, in a Ray Train run);
- `console/`: the lines a person sees, and where Ray's own logs go.

May import: `errors`, `config`, `training`, `results`, Ray, Optuna. This face, `space/`,
`request` and `state/` stay Ray-free, so the CLI checks a request before Ray starts;
`tuning.tuner` and the modules it pulls in load Ray.
"""

from skd_ray.search import moved
from skd_ray.search.request import SearchOutcome, SearchRequest
from skd_ray.search.space.definition import SearchSpace, load_space

moved.install()  # searches saved before the subpackages still resume

__all__ = ["SearchOutcome", "SearchRequest", "SearchSpace", "load_space"]
