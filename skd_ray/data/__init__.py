"""Dataset registry, the held-out validation split and loader construction.

Every dataset yields three disjoint parts: train (fitting), val (held out of the training
set with a fixed seed; model selection and early stopping use it) and test (reported for
the chosen configuration only).

Owns: the dataset registry (`DATASETS`), loading and caching (`sources`, `imagefolder`,
`node_cache`), in-memory batches (`batches`) and the checks that find missing or damaged data
before anything starts (`checks`). May import: `errors`, `config`; never Ray, Optuna or MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from skd_ray.config import DataConfig, TrainConfig
from skd_ray.data.batches import InMemoryLoader, TensorSplit
from skd_ray.data.imagefolder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FolderLoader,
    IndexedSamples,
    build_transforms,
    scan_imagefolder,
)
from skd_ray.data.sources import check_dir, load_cifar, load_digits_splits, load_fashion_mnist
from skd_ray.errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset and its default augmentation."""

    num_classes: int
    in_channels: int
    pad: int  # random-crop padding when augmenting
    flip: bool
    image_size: int  # side of the (square) images; 0: data.image_size decides (imagefolder)


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(10, 1, 0, False, 8),  # 8x8 digits: flips and shifts change the class
    "fashion-mnist": DatasetInfo(10, 1, 2, True, 28),
    "cifar10": DatasetInfo(10, 3, 4, True, 32),  # crop 4 + flip: the recipe of every CIFAR paper
    "cifar100": DatasetInfo(100, 3, 4, True, 32),
    "imagefolder": DatasetInfo(0, 3, 0, True, 0),  # classes read from the folder
}


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


def dataset_info(name: str) -> DatasetInfo:
    """Facts for dataset `name`; ConfigError listing the choices when unknown."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r} (data.name)", f"choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def input_image_size(cfg: DataConfig) -> int:
    """Side of the images a model trained on `cfg`'s data sees."""
    return dataset_info(cfg.name).image_size or cfg.image_size


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


def load_data(cfg: DataConfig) -> DataBundle:
    """Load dataset `cfg.name` and split off the validation part (see module docstring)."""
    info = dataset_info(cfg.name)
    check_dir(cfg.dir)
    if cfg.name == "imagefolder":
        return _load_imagefolder(cfg)
    if cfg.name == "digits":
        train_full, test = load_digits_splits()  # fixed test part; split_seed moves val only
    elif cfg.name == "fashion-mnist":
        train_full, test = load_fashion_mnist(cfg.dir, cfg.download)
    else:
        train_full, test = load_cifar(cfg.name, cfg.dir, cfg.download)
    train_idx, val_idx = holdout(len(train_full), cfg.val_fraction, cfg.split_seed)
    if 0 < cfg.train_subset < len(train_idx):
        train_idx = train_idx[:cfg.train_subset]  # already a seeded permutation: a fixed random subset
    train = train_full.subset(with_validation(train_idx, val_idx, cfg))
    mean, std = channel_stats(train)
    return DataBundle(cfg.name, train, train_full.subset(val_idx), test, info.num_classes,
                      info.in_channels, mean, std)


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
    if bundle.name == "imagefolder":
        dataset = IndexedSamples(split, build_transforms(cfg.data.image_size, train and augment))
        return FolderLoader(dataset, batch_size, train=train, seed=cfg.train.seed, rank=rank,
                            world_size=world_size, device=device,
                            num_workers=cfg.data.loader_workers, channels_last=cfg.train.channels_last)
    info = DATASETS[bundle.name]
    return InMemoryLoader(
        split, batch_size, bundle.mean, bundle.std, train=train,
        augment_pad=info.pad if augment else 0, augment_flip=info.flip and augment,
        seed=cfg.train.seed, rank=rank, world_size=world_size, device=device,
        channels_last=cfg.train.channels_last,
    )
