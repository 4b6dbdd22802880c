"""Dataset names -> what to load: the built-in datasets and datasets from the user's own code.

A `data.name` is one of: a built-in dataset (`DATASETS`), a dataset registered from Python
with `register_dataset`, one declared by an installed package in the entry point group
`skd_ray.datasets`, or an import path `package.module:factory` (nothing to register). The
last three name a factory called as `factory(data_dir=...)` returning `(train, test)`; see
`skd_ray.data.user` for what those may be and how they are checked.

A dataset registered from Python exists in the processes that ran the registration. Ray's
workers are other processes: for searches, name the factory by import path or declare an entry
point, both of which every process resolves on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skd_ray.errors import ConfigError
from skd_ray.models.external import import_factory
from skd_ray.plugins import load_group

PLUGIN_GROUP = "skd_ray.datasets"
IMPORT_PATH = "package.module:factory"


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


@dataclass(frozen=True)
class UserDataset:
    """A dataset factory and the facts its registration gave (None: read from the data).

    Compared by value, so an import path resolved again finds the data its first resolution
    loaded (`user.load_user_data` keeps it per process).
    """

    factory: Callable[..., Any]
    num_classes: int | None = None
    in_channels: int | None = None
    image_size: int | None = None
    pad: int = 0
    flip: bool = False
    summary: str = ""

    def facts_given(self) -> bool:
        """True when the registration says everything a config check needs, so checking a
        config need not call the factory."""
        return None not in (self.num_classes, self.in_channels, self.image_size)


USER_DATASETS: dict[str, UserDataset] = {}


def register_dataset(name: str, factory: Callable[..., Any], *, num_classes: int | None = None,
                     in_channels: int | None = None, image_size: int | None = None, pad: int = 0,
                     flip: bool = False, summary: str = "") -> None:
    """Make `factory(data_dir=...)` trainable as `--dataset name`.

    The factory returns `(train, test)`, each `(images, labels)` tensors or a map-style
    `torch.utils.data.Dataset` of `(image, label)` items. `num_classes`, `in_channels` and
    `image_size` left None are read from the data (the factory is then called once per
    process); given ones are checked against it. `pad` and `flip` are the training
    augmentation (random crop with that zero padding, horizontal flip), off by default since
    not every kind of image keeps its class when flipped.
    """
    if name in DATASETS or name in USER_DATASETS:
        raise ValueError(f"dataset {name} registered twice")
    if ":" in name:
        raise ValueError(f"dataset name {name} is reserved for import paths ({IMPORT_PATH})")
    if not callable(factory):
        raise TypeError(f"dataset factory for {name} is a {type(factory).__name__}, not a callable")
    for what, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if value is not None and value < 1:
            raise ValueError(f"{what} of dataset {name} must be >= 1, not {value}")
    if pad < 0:
        raise ValueError(f"pad of dataset {name} must be >= 0, not {pad}")
    USER_DATASETS[name] = UserDataset(factory, num_classes, in_channels, image_size, pad, flip,
                                      summary or (factory.__doc__ or "").strip().split("\n")[0])


def _register_plugin(name: str, obj: object) -> None:
    """An entry point of group `skd_ray.datasets` names a factory. Its module may also have
    called `register_dataset(name, ...)` itself on import, to give facts or augmentation."""
    if name in USER_DATASETS:
        return
    if name in DATASETS or ":" in name:
        raise ConfigError(f"plugin dataset {name} ({getattr(obj, '__qualname__', obj)}) takes the name of a built-in "
                          "dataset or an import path", f"rename its entry point in the {PLUGIN_GROUP} group")
    if not callable(obj):
        raise ConfigError(f"plugin dataset {name} is a {type(obj).__name__}, not a factory",
                          f"point the {PLUGIN_GROUP} entry point at a function called as factory(data_dir=...)")
    register_dataset(name, obj)


def dataset_names() -> list[str]:
    """Built-in, registered and plugin dataset names, for `--help` and error messages."""
    load_group(PLUGIN_GROUP, _register_plugin)
    return [*DATASETS, *sorted(USER_DATASETS)]


def user_dataset(name: str) -> UserDataset | None:
    """The factory behind dataset `name`; None for a built-in; ConfigError listing every
    choice when the name is none of the kinds in the module docstring."""
    if name in DATASETS:
        return None
    if name in USER_DATASETS or name in dataset_names():
        return USER_DATASETS[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        if not module or not attr:
            raise ConfigError(f"dataset {name!r} is not an import path (data.name)", f"write it as {IMPORT_PATH}")
        return UserDataset(import_factory(name, "factory(data_dir=...) returning (train, test)"), summary=name)
    raise ConfigError(f"unknown dataset {name!r} (data.name)",
                      f"choose one of: {', '.join(dataset_names())}, or {IMPORT_PATH} (your own data)")
