"""The Ray/Optuna/MLflow-free training loop and what it needs around it.

Owns: turning flat keys into a validated config (`resolve`), the loop (`fit`), where it
reports (`session`: the `Session` seam, `LocalSession`), the checkpoint file (`checkpoint`),
early-exit evaluation and the metric names every layer reads (`metrics`).
May import: `errors`, `config`, `models`, `methods`, `data`. Never Ray, Optuna or MLflow:
`--debug` and most tests run it in a plain process.
"""

from skd_ray.training.resolve import resolve_config

__all__ = ["resolve_config"]
