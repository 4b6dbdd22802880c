"""Dataset registry, the held-out validation split and loader construction.

Every dataset yields three disjoint parts: train (fitting), val (held out of the training
set with a fixed seed; model selection and early stopping use it) and test (reported for
the chosen configuration only).

Owns: the dataset registry (`registry`: the built-in `DATASETS`, `register_dataset`, plugins
and import paths), loading and caching (`sources`, `imagefolder`, `node_cache`), datasets from
the user's own code (`user`), in-memory batches (`batches`) and the checks that find missing or
damaged data before anything starts (`checks`). May import: `errors`, `plugins`, `config`,
`models`; never Ray, Optuna or MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from skd_ray.config import DataConfig, TrainConfig
from skd_ray.data.batches import InMemoryLoader, TensorSplit
from skd_ray.data.dataset_registry import (
    DATASETS,
    USER_DATASETS,
    DatasetInfo,
    UserDataset,
    dataset_names,
    register_dataset,
    user_dataset,
)
from skd_ray.data.imagefolder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FolderLoader,
    IndexedSamples,
    build_transforms,
    scan_imagefolder,
)
from skd_ray.data.sources import check_dir, load_cifar, load_digits_splits, load_fashion_mnist
from skd_ray.data.user import IndexedDataset, UserData, dataset_channel_stats, forget_user_data, load_user_data
from skd_ray.errors import ConfigError


@dataclass
class DataBundle:
    """The three splits plus what loaders and models need to know about them."""

    name: str
    train: Any
    val: Any
    test: Any
    num_classes: int
    in_channels: int
    mean: torch.Tensor
    std: torch.Tensor
    pad: int = 0  # training augmentation of in-memory splits and users' Datasets
    flip: bool = False


def dataset_info(name: str, data_dir: str | None = None) -> DatasetInfo:
    """Facts for dataset `name` (a user's dataset: read from its data in `data_dir` unless its
    registration gave them all); ConfigError listing the choices when unknown."""
    spec = user_dataset(name)
    if spec is None:
        return DATASETS[name]
    if spec.facts_given():
        assert spec.num_classes and spec.in_channels and spec.image_size
        return DatasetInfo(spec.num_classes, spec.in_channels, spec.pad, spec.flip, spec.image_size)
    data = load_user_data(name, spec, data_dir)
    return DatasetInfo(data.num_classes, data.in_channels, spec.pad, spec.flip, data.image_size)


def user_data(cfg: DataConfig) -> UserData | None:
    """The checked parts of a user's dataset `cfg.name` (None for a built-in one)."""
    spec = user_dataset(cfg.name)
    return None if spec is None else load_user_data(cfg.name, spec, cfg.dir)


def input_image_size(cfg: DataConfig) -> int:
    """Side of the images a model trained on `cfg`'s data sees."""
    return dataset_info(cfg.name, cfg.dir).image_size or cfg.image_size


def holdout(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train_index, val_index) split of range(n); the same for every trial."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(fraction * n)))
    return order[n_val:], order[:n_val]


def with_validation(train_idx: torch.Tensor, val_idx: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """The training indices, plus the validation part when `cfg.train_on_validation`.

    A chosen configuration is finally trained on every labelled image it may see (train +
    validation) and judged on the test part. The validation part stays in the bundle, so the
    per-epoch `val_*` metrics still exist, but they then measure fit, not generalisation.
    """
    return torch.cat([train_idx, val_idx]) if cfg.train_on_validation else train_idx


def channel_stats(split: TensorSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the training images on the 0..1 scale."""
    x = split.images.float()
    if split.images.dtype == torch.uint8:
        x = x / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return mean, std


def split_indices(n: int, cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, validation) indices into a training part of `n` images: the seeded holdout,
    `data.train_subset` and `data.train_on_validation` applied."""
    train_idx, val_idx = holdout(n, cfg.val_fraction, cfg.split_seed)
    if 0 < cfg.train_subset < len(train_idx):
        train_idx = train_idx[:cfg.train_subset]  # already a seeded permutation: a fixed random subset
    return with_validation(train_idx, val_idx, cfg), val_idx


def load_data(cfg: DataConfig) -> DataBundle:
    """Load dataset `cfg.name` and split off the validation part (see module docstring)."""
    spec = user_dataset(cfg.name)
    check_dir(cfg.dir)
    if spec is not None:
        return _load_user(cfg, spec)
    info = DATASETS[cfg.name]
    if cfg.name == "imagefolder":
        return _load_imagefolder(cfg)
    if cfg.name == "digits":
        train_full, test = load_digits_splits()  # fixed test part; split_seed moves val only
    elif cfg.name == "fashion-mnist":
        train_full, test = load_fashion_mnist(cfg.dir, cfg.download)
    else:
        train_full, test = load_cifar(cfg.name, cfg.dir, cfg.download)
    train_idx, val_idx = split_indices(len(train_full), cfg)
    train = train_full.subset(train_idx)
    mean, std = channel_stats(train)
    return DataBundle(cfg.name, train, train_full.subset(val_idx), test, info.num_classes,
                      info.in_channels, mean, std, info.pad, info.flip)


def _load_user(cfg: DataConfig, spec: UserDataset) -> DataBundle:
    """A user's dataset, split like the built-in ones. Tensor parts stay TensorSplits (the
    in-memory loader); Dataset parts become IndexedDatasets (the DataLoader path). Either way
    the normalisation is the training part's: exact for tensors, from a fixed sample of up to
    `user.STATS_SAMPLES` items for a Dataset, which is read, not held."""
    data = load_user_data(cfg.name, spec, cfg.dir)
    train_idx, val_idx = split_indices(len(data.train), cfg)
    shape = (data.in_channels, data.image_size, data.image_size)

    def part(source: Any, index: torch.Tensor, which: str) -> Any:
        if isinstance(source, TensorSplit):
            return source.subset(index)
        return IndexedDataset(source, index, f"the {which} part of dataset {cfg.name}", shape, data.num_classes)

    train = part(data.train, train_idx, "train")
    mean, std = channel_stats(train) if isinstance(train, TensorSplit) else dataset_channel_stats(train)
    test = data.test if isinstance(data.test, TensorSplit) else part(data.test, torch.arange(len(data.test)), "test")
    return DataBundle(cfg.name, train, part(data.train, val_idx, "train"), test, data.num_classes,
                      data.in_channels, mean, std, spec.pad, spec.flip)


def _load_imagefolder(cfg: DataConfig) -> DataBundle:
    if not cfg.dir:
        raise ConfigError("dataset imagefolder needs --data-dir", "pass the folder holding train/ and val/")
    train_full, test, num_classes = scan_imagefolder(cfg.dir)
    train_idx, val_idx = holdout(len(train_full), cfg.val_fraction, cfg.split_seed)
    train_idx = with_validation(train_idx, val_idx, cfg)
    return DataBundle("imagefolder", [train_full[i] for i in train_idx.tolist()],
                      [train_full[i] for i in val_idx.tolist()], test, num_classes, 3,
                      torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD))


def build_loader(bundle: DataBundle, part: str, cfg: TrainConfig, *, rank: int = 0,
                 world_size: int = 1, device: torch.device | str = "cpu") -> Any:
    """Loader over `part` (train/val/test); training shuffles and augments, the others do not."""
    train = part == "train"
    split = getattr(bundle, part)
    batch_size = cfg.train.batch_size if train else cfg.eval.batch_size
    augment = cfg.data.augment if cfg.data.augment is not None else True
    # `auto` follows the device the batches land on, as the model's layout does (see TrainLoopConfig).
    channels_last = cfg.train.resolved_channels_last(torch.device(device).type)
    if isinstance(split, TensorSplit):
        return InMemoryLoader(
            split, batch_size, bundle.mean, bundle.std, train=train,
            augment_pad=bundle.pad if augment else 0, augment_flip=bundle.flip and augment,
            seed=cfg.train.seed, rank=rank, world_size=world_size, device=device,
            channels_last=channels_last,
        )
    common = {"train": train, "seed": cfg.train.seed, "rank": rank, "world_size": world_size, "device": device,
              "num_workers": cfg.data.loader_workers, "channels_last": channels_last}
    if bundle.name == "imagefolder":  # the per-image transforms crop, flip and normalise
        dataset = IndexedSamples(split, build_transforms(cfg.data.image_size, train and augment))
        return FolderLoader(dataset, batch_size, **common)
    return FolderLoader(split, batch_size, mean=bundle.mean, std=bundle.std, pad=bundle.pad if augment else 0,
                        flip=bundle.flip and augment, **common)


__all__ = ["DATASETS", "USER_DATASETS", "DataBundle", "DatasetInfo", "UserData", "UserDataset", "build_loader",
           "channel_stats", "dataset_info", "dataset_names", "forget_user_data", "holdout", "input_image_size",
           "load_data", "register_dataset", "split_indices", "user_data", "user_dataset", "with_validation"]
