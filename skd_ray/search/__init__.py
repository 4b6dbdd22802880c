"""A hyperparameter search on Ray Tune + Optuna, tracked in MLflow: the only layer that runs Ray.

Owns: the search space (`space`), the request and the trial resources (`request`), the saved
state and its checks (`state`, `state_files`, `state_backup`), the cluster it runs on and what
it waits for (`cluster`, `autoscaler`, `waiting`), the Tune driver and how it ends (`driver`,
`callbacks`, `closing`, `optuna_study`, `answer`), the console (`console`, `progress`,
`numbering`), one trial (`trial`, `trial_job`), the three ways it trains (`executors`, with the
sessions in `sessions`) and the persistent DDP pools (`pool/`).
May import: `errors`, `config`, `training`, `results`, Ray, Optuna. This face, `space`,
`request` and `state` stay Ray-free, so the CLI checks a request before Ray starts;
`driver` and the modules it pulls in load Ray.
"""

from skd_ray.search.request import SearchOutcome, SearchRequest
from skd_ray.search.space import SearchSpace, load_space

__all__ = ["SearchOutcome", "SearchRequest", "SearchSpace", "load_space"]
