"""The Ray/Optuna/MLflow-free training loop and what it needs around it.

Owns: turning flat keys into a validated config and building a run's data and method
(`resolve`: `resolve_config`, `build_run`), the loop (`engine`: `fit`, the `Session` seam),
where it reports in a plain process (`session`: `LocalSession`), the checkpoint file
(`checkpoint`), early-exit evaluation (`early_exit`) and the metric names every layer reads
(`metrics`).
May import: `errors`, `config`, `models`, `methods`, `data`. Never Ray, Optuna or MLflow:
`--debug` and most tests run it in a plain process.
"""

from skd_ray.training.resolve import build_run, resolve_config

__all__ = ["build_run", "resolve_config"]
