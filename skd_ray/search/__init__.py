"""A hyperparameter search on Ray Tune + Optuna, tracked in MLflow: the only layer that runs Ray.

Owns: the search space (`space`), the request and its saved state (`request`, `state`), the
cluster it runs on (`cluster`), the Tune driver (`driver`, `callbacks`), one trial and the
sessions it trains through (`trial`, `sessions`) and the persistent DDP pools (`pool/`).
May import: `errors`, `config`, `training`, `results`, Ray, Optuna. This face, `space`,
`request` and `state` stay Ray-free, so the CLI checks a request before Ray starts;
`driver` and the modules it pulls in load Ray.
"""

from skd_ray.search.request import SearchOutcome, SearchRequest
from skd_ray.search.space import SearchSpace, load_space

__all__ = ["SearchOutcome", "SearchRequest", "SearchSpace", "load_space"]
