"""The data a command will train on, checked before anything starts (Ray, MLflow runs).

Each searched configuration's dataset is checked once (files present and whole, see
`skd_ray.data.checks`), and every corner of the space (each method's defaults, each range
end and choice) must leave every training worker at least one full batch per epoch.
"""

from __future__ import annotations

from skd_ray.config import DataConfig
from skd_ray.data.checks import check_batch_fits, check_dataset
from skd_ray.search.space.definition import SearchSpace, corner_points
from skd_ray.training.resolve import resolve_config


def check_space_data(space: SearchSpace, workers: int) -> None:
    """Check the datasets of `space`'s configurations and that one batch fits per worker."""
    sizes: dict[tuple[str, str | None, bool], int] = {}
    for flat in corner_points(space):
        cfg = resolve_config(flat)
        sizes.setdefault(data_key(cfg.data), check_dataset(cfg.data))
        check_batch_fits(sizes[data_key(cfg.data)], cfg.data.val_fraction, cfg.data.train_subset,
                         cfg.data.train_on_validation, cfg.train.batch_size, workers)


def data_key(cfg: DataConfig) -> tuple[str, str | None, bool]:
    return cfg.name, cfg.dir, cfg.download
