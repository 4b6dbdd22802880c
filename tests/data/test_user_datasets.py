"""Datasets from the user's own code: registered from Python (tensors or a Dataset), named by
import path, declared as an entry point; split, normalised, loaded, trained on, and refused
with one ConfigError when what the factory gives cannot work."""

from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from skd_ray import plugins
from skd_ray.config import DataConfig
from skd_ray.data import (
    USER_DATASETS,
    build_loader,
    dataset_info,
    dataset_names,
    forget_user_data,
    load_data,
    register_dataset,
)
from skd_ray.data.batches import InMemoryLoader, TensorSplit
from skd_ray.data.checks import check_batch_fits, check_dataset
from skd_ray.data.imagefolder import FolderLoader
from skd_ray.errors import ConfigError, DataError
from skd_ray.training.engine import fit
from skd_ray.training.resolve import build_run, resolve_config
from skd_ray.training.session import LocalSession

N_TRAIN, N_TEST, CLASSES = 120, 30, 3


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """Registrations and loaded data a test adds are gone after it."""
    before = dict(USER_DATASETS)
    forget_user_data()
    yield
    USER_DATASETS.clear()
    USER_DATASETS.update(before)
    forget_user_data()


def numbered(n: int, channels: int = 1, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float images whose first pixel is their number (index / 1000): a split's
    membership is read back from its images. Labels cycle through CLASSES."""
    images = torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))
    images[:, 0, 0, 0] = torch.arange(n) / 1000
    return images, torch.arange(n) % CLASSES


def numbers(images: torch.Tensor) -> list[int]:
    return [round(float(v) * 1000) for v in images[:, 0, 0, 0]]


class Items(Dataset):
    """A map-style Dataset of (image, int label), with no `targets` or `classes` to read."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels
        self.reads = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.reads += 1
        return self.images[i], int(self.labels[i])


def tensor_factory(calls: list[str | None] | None = None) -> Any:
    def make(data_dir: str | None = None) -> tuple[Any, Any]:
        if calls is not None:
            calls.append(data_dir)
        return numbered(N_TRAIN), numbered(N_TEST, seed=1)
    return make


def dataset_factory(data_dir: str | None = None) -> tuple[Items, Items]:
    return Items(*numbered(N_TRAIN)), Items(*numbered(N_TEST, seed=1))


def tiny_cfg(name: str, **extra: Any) -> Any:
    return resolve_config({"method": "vanilla", "data.name": name, "data.val_fraction": 0.25, "data.loader_workers": 0,
                           "train.batch_size": 16, "eval.batch_size": 32, "train.device": "cpu", **extra})


# --- registered from Python -----------------------------------------------------------------

def test_tensor_dataset_facts_split_and_in_memory_loader() -> None:
    calls: list[str | None] = []
    register_dataset("user_tensors", tensor_factory(calls), pad=1, flip=True)
    assert "user_tensors" in dataset_names()
    info = dataset_info("user_tensors")
    assert (info.num_classes, info.in_channels, info.image_size, info.pad, info.flip) == (3, 1, 8, 1, True)

    cfg = tiny_cfg("user_tensors")
    bundle = load_data(cfg.data)
    assert calls == [None]  # once per process: the config check and the load share one call
    assert isinstance(bundle.train, TensorSplit) and (bundle.num_classes, bundle.in_channels) == (3, 1)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (90, 30, N_TEST)
    train, val = numbers(bundle.train.images), numbers(bundle.val.images)
    assert not set(train) & set(val) and sorted(train + val) == list(range(N_TRAIN))
    assert torch.allclose(bundle.mean, bundle.train.images.mean(dim=(0, 2, 3)))
    assert torch.allclose(bundle.std, bundle.train.images.std(dim=(0, 2, 3)))

    again = load_data(DataConfig(name="user_tensors", val_fraction=0.25))
    assert numbers(again.val.images) == val  # the same seeded split every time
    other = load_data(DataConfig(name="user_tensors", val_fraction=0.25, split_seed=1))
    assert numbers(other.val.images) != val
    subset = load_data(DataConfig(name="user_tensors", val_fraction=0.25, train_subset=20))
    assert len(subset.train) == 20 and set(numbers(subset.train.images)) <= set(train)
    merged = load_data(DataConfig(name="user_tensors", val_fraction=0.25, train_on_validation=True))
    assert sorted(numbers(merged.train.images)) == list(range(N_TRAIN)) and len(merged.val) == 30

    loader = build_loader(bundle, "train", cfg)
    assert isinstance(loader, InMemoryLoader) and (loader.pad, loader.flip) == (1, True)
    x, y, idx = next(iter(loader))
    assert x.shape == (16, 1, 8, 8) and y.dtype == torch.int64
    assert torch.equal(y, bundle.train.labels[idx])
    assert check_dataset(cfg.data) == N_TRAIN
    check_batch_fits(N_TRAIN, 0.25, 0, False, 16, 1)


def test_registered_facts_skip_the_factory_until_loading() -> None:
    calls: list[str | None] = []
    register_dataset("user_declared", tensor_factory(calls), num_classes=5, in_channels=1, image_size=8)
    info = dataset_info("user_declared")
    assert (info.num_classes, info.in_channels, info.image_size) == (5, 1, 8) and calls == []
    assert load_data(DataConfig(name="user_declared")).num_classes == 5  # labels 0..2 of 5 classes


def test_numpy_uint8_images_and_int32_labels_are_accepted() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    register_dataset("user_numpy", lambda data_dir=None: (
        (rng.integers(0, 256, (40, 3, 6, 6), dtype=np.uint8), np.arange(40, dtype=np.int32) % 2),
        (rng.integers(0, 256, (10, 3, 6, 6), dtype=np.uint8), np.arange(10, dtype=np.int32) % 2)))
    bundle = load_data(DataConfig(name="user_numpy"))
    assert bundle.train.images.dtype == torch.uint8 and bundle.train.labels.dtype == torch.int64
    assert (bundle.num_classes, bundle.in_channels) == (2, 3)
    assert 0.3 < float(bundle.mean[0]) < 0.7  # on the 0..1 scale


def test_dataset_facts_split_sharding_and_normalisation() -> None:
    register_dataset("user_items", dataset_factory)
    info = dataset_info("user_items")
    assert (info.num_classes, info.in_channels, info.image_size) == (3, 1, 8)  # labels read item by item

    cfg = tiny_cfg("user_items")
    bundle = load_data(cfg.data)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (90, 30, N_TEST)
    train = [round(float(bundle.train[i][0][0, 0, 0]) * 1000) for i in range(len(bundle.train))]
    val = [round(float(bundle.val[i][0][0, 0, 0]) * 1000) for i in range(len(bundle.val))]
    assert not set(train) & set(val) and sorted(train + val) == list(range(N_TRAIN))
    register_dataset("user_same_as_tensors", tensor_factory())
    tensors = load_data(DataConfig(name="user_same_as_tensors", val_fraction=0.25))
    assert (train, val) == (numbers(tensors.train.images), numbers(tensors.val.images))  # split like tensors
    images = torch.stack([bundle.train[i][0] for i in range(len(bundle.train))])
    assert torch.allclose(bundle.mean, images.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bundle.std, images.std(dim=(0, 2, 3)), atol=1e-2)

    loader = build_loader(bundle, "train", cfg)
    assert isinstance(loader, FolderLoader) and len(loader) == 90 // 16
    x, y, idx = next(iter(loader))
    assert x.shape == (16, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    raw = torch.stack([bundle.train[i][0] for i in idx.tolist()])
    assert torch.allclose(x, (raw - bundle.mean.view(1, -1, 1, 1)) / bundle.std.view(1, -1, 1, 1))
    assert y.tolist() == [bundle.train[i][1] for i in idx.tolist()]

    shards = [build_loader(bundle, "train", cfg, rank=r, world_size=2) for r in (0, 1)]
    seen = [torch.cat([i for _, _, i in shard]).tolist() for shard in shards]
    assert len(seen[0]) == len(seen[1]) == 32 and not set(seen[0]) & set(seen[1])
    tests = [build_loader(bundle, "test", cfg, rank=r, world_size=2) for r in (0, 1)]
    assert sorted(sum((torch.cat([i for _, _, i in t]).tolist() for t in tests), [])) == list(range(N_TEST))
    assert check_dataset(cfg.data) == N_TRAIN


def test_dataset_targets_and_classes_spare_reading_every_item() -> None:
    train, test = dataset_factory()
    train.targets = train.labels.tolist()  # type: ignore[attr-defined]
    test.classes = ["a", "b", "c"]  # type: ignore[attr-defined]
    train.classes = ["a", "b", "c", "d"]  # type: ignore[attr-defined]
    register_dataset("user_targets", lambda data_dir=None: (train, test))
    assert dataset_info("user_targets").num_classes == 4  # the classes the Dataset lists
    assert train.reads == test.reads == 1  # the first item of each part: shape and type


def test_dataset_batches_are_augmented_on_the_device_when_registered_so() -> None:
    register_dataset("user_items_augmented", dataset_factory, pad=2, flip=True)
    cfg = tiny_cfg("user_items_augmented")
    bundle = load_data(cfg.data)
    loader = build_loader(bundle, "train", cfg)
    assert (loader.pad, loader.flip) == (2, True)
    x, _, idx = next(iter(loader))
    plain = (torch.stack([bundle.train[i][0] for i in idx.tolist()]) - bundle.mean.view(1, -1, 1, 1)) \
        / bundle.std.view(1, -1, 1, 1)
    assert x.shape == plain.shape and not torch.allclose(x, plain)
    off = build_loader(bundle, "train", tiny_cfg("user_items_augmented", **{"data.augment": False}))
    assert (off.pad, off.flip) == (0, False)
    assert (build_loader(bundle, "val", cfg).pad, build_loader(bundle, "val", cfg).flip) == (0, False)


def test_tensor_train_and_dataset_test_mix() -> None:
    register_dataset("user_mixed", lambda data_dir=None: (numbered(N_TRAIN), Items(*numbered(N_TEST, seed=1))))
    cfg = tiny_cfg("user_mixed")
    bundle = load_data(cfg.data)
    assert isinstance(build_loader(bundle, "train", cfg), InMemoryLoader)
    assert isinstance(build_loader(bundle, "test", cfg), FolderLoader)
    assert sum(len(y) for _, y, _ in build_loader(bundle, "test", cfg)) == N_TEST


# --- import paths and entry points ----------------------------------------------------------

MODULE = '''
import torch

def make(data_dir=None):
    SEEN.append(data_dir)
    g = torch.Generator().manual_seed(0)
    return ((torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(40) % 4),
            (torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(12) % 4))

SEEN = []
NOT_CALLABLE = 3

def no_data_dir():
    return make()

def one_part(data_dir=None):
    return make()[0][0]

def bare_images(data_dir=None):
    (x, _), (tx, _) = make()
    return x, tx

def float_labels(data_dir=None):
    (x, y), test = make()
    return (x, y.float()), test

def flat_images(data_dir=None):
    (x, y), test = make()
    return (x[:, 0], y), test

def more_channels(data_dir=None):
    train, (x, y) = make()
    return train, (x.expand(-1, 3, -1, -1), y)

def wider(data_dir=None):
    (x, y), (tx, ty) = make()
    return (torch.cat([x, x], dim=3), y), (torch.cat([tx, tx], dim=3), ty)

def one_class(data_dir=None):
    (x, y), (tx, ty) = make()
    return (x, y * 0), (tx, ty * 0)

def negative(data_dir=None):
    (x, y), test = make()
    return (x, y - 1), test

def raises(data_dir=None):
    raise FileNotFoundError("no such file: /data/train.npz")

class Items(torch.utils.data.Dataset):
    def __init__(self, item, n=10):
        self.item, self.n = item, n
    def __len__(self):
        return self.n
    def __getitem__(self, i):
        return self.item(i)

def dict_items(data_dir=None):
    return Items(lambda i: {"image": torch.zeros(1, 8, 8), "label": 0}), make()[1]

def float_item_labels(data_dir=None):
    return Items(lambda i: (torch.zeros(1, 8, 8), 0.5)), make()[1]

def flat_item_images(data_dir=None):
    return Items(lambda i: (torch.zeros(8, 8), i % 2)), make()[1]

def odd_item(data_dir=None):
    return Items(lambda i: (torch.zeros(1, 8 if i != 7 else 9, 8), i % 4), n=40), make()[1]
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "tiny_user_data.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("tiny_user_data", None)


def test_import_path_dataset_gets_the_data_dir(user_module: Path) -> None:
    cfg = tiny_cfg("tiny_user_data:make", **{"data.dir": str(user_module)})
    assert dataset_info("tiny_user_data:make", str(user_module)).num_classes == 4
    bundle = load_data(cfg.data)
    assert (len(bundle.train), len(bundle.val), len(bundle.test), bundle.num_classes) == (30, 10, 12, 4)
    assert sys.modules["tiny_user_data"].SEEN == [str(user_module)]  # one call, with data.dir
    assert check_dataset(cfg.data) == 40


def test_entry_point_dataset_is_listed_and_found(monkeypatch: pytest.MonkeyPatch) -> None:
    def shapes(data_dir: str | None = None) -> tuple[Any, Any]:
        return numbered(N_TRAIN), numbered(N_TEST, seed=1)

    point = SimpleNamespace(name="plugin_shapes", value="their_pkg.data:shapes", dist=None, load=lambda: shapes)
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda group: [point] if group == "skd_ray.datasets" else real(group=group))
    plugins.forget_loaded()
    try:
        assert "plugin_shapes" in dataset_names()
        assert dataset_info("plugin_shapes").num_classes == CLASSES
        with pytest.raises(ConfigError) as info:
            dataset_info("no_such_data")
        assert "plugin_shapes" in info.value.fix and "cifar10" in info.value.fix
        assert "package.module:factory" in info.value.fix
    finally:
        plugins.forget_loaded()


def test_entry_point_that_is_no_factory_or_takes_a_built_in_name(monkeypatch: pytest.MonkeyPatch) -> None:
    points: list[Any] = []
    monkeypatch.setattr(metadata, "entry_points", lambda group: points if group == "skd_ray.datasets" else [])
    for point, problem in ((SimpleNamespace(name="bad_plugin", value="x:y", dist=None, load=lambda: 3),
                            "not a factory"),
                           (SimpleNamespace(name="cifar10", value="x:y", dist=None, load=lambda: dataset_factory),
                            "built-in")):
        points[:] = [point]
        plugins.forget_loaded()
        with pytest.raises(ConfigError) as info:
            dataset_names()
        assert problem in info.value.problem
    plugins.forget_loaded()


# --- training -------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["tensors", "dataset"])
def test_one_epoch_on_a_user_dataset(form: str) -> None:
    def make(data_dir: str | None = None) -> tuple[Any, Any]:
        g = torch.Generator().manual_seed(0)
        parts = [(torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)) for n in (96, 32)]
        return parts if form == "tensors" else [Items(*p) for p in parts]

    register_dataset("user_random", make)
    cfg = resolve_config({"method": "byot", "data.name": "user_random", "model.backbone": "resnet_small",
                          "model.width": 4, "train.epochs": 1, "train.batch_size": 16, "train.device": "cpu",
                          "data.loader_workers": 0, "eval.test_at_end": True})
    data, method = build_run(cfg)
    assert (data.in_channels, data.num_classes, len(data.train)) == (1, 4, 86)
    session = LocalSession("cpu", echo=False)
    final = fit(cfg, session)
    assert final["epoch"] == 1 and math.isfinite(final["train_loss"])
    assert 0.0 <= final["val_acc"] <= 1.0 and 0.0 <= final["test_acc"] <= 1.0


# --- bad input: one ConfigError naming the problem ------------------------------------------

BAD = [
    ("no_such_module_here:make", "does not import"),
    ("tiny_user_data:absent", "has no 'absent'"),
    ("tiny_user_data:NOT_CALLABLE", "not a callable factory"),
    ("tiny_user_data:no_data_dir", "cannot be called as factory(data_dir=...)"),
    ("tiny_user_data:one_part", "returned a Tensor of shape (40, 1, 8, 8), not (train, test)"),
    ("tiny_user_data:bare_images", "is a Tensor of shape (40, 1, 8, 8), not (images, labels) tensors or a Dataset"),
    ("tiny_user_data:float_labels", "are torch.float32, not integers"),
    ("tiny_user_data:flat_images", "are 3-D (40, 8, 8), not N x C x H x W"),
    ("tiny_user_data:more_channels", "test images 3x8x8"),
    ("tiny_user_data:wider", "not square"),
    ("tiny_user_data:one_class", "a classifier needs 2"),
    ("tiny_user_data:negative", "include -1"),
    ("tiny_user_data:dict_items", "is a dict, not (image tensor, int label)"),
    ("tiny_user_data:float_item_labels", "is a float, not an integer"),
    ("tiny_user_data:flat_item_images", "is a 2-D tensor (8, 8), not a C x H x W tensor"),
    (":make", "is not an import path"),
]


@pytest.mark.usefixtures("user_module")
@pytest.mark.parametrize(("name", "problem"), BAD, ids=[b[0].split(":")[-1] for b in BAD])
def test_bad_user_data_is_one_config_error(name: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config({"data.name": name})
    assert problem in info.value.problem, info.value.problem
    assert info.value.fix


def test_unknown_name_lists_every_choice() -> None:
    register_dataset("user_listed", dataset_factory)
    with pytest.raises(ConfigError) as info:
        resolve_config({"data.name": "mnist-but-not"})
    for choice in ("digits", "imagefolder", "user_listed", "package.module:factory"):
        assert choice in info.value.fix


def test_registered_facts_that_contradict_the_data() -> None:
    register_dataset("user_wrong_channels", tensor_factory(), in_channels=3)
    register_dataset("user_few_classes", tensor_factory(), num_classes=2)
    with pytest.raises(ConfigError, match="in_channels=3"):
        dataset_info("user_wrong_channels")
    with pytest.raises(ConfigError, match="num_classes=2"):
        load_data(DataConfig(name="user_few_classes"))


def test_a_failing_factory_is_one_data_error(user_module: Path) -> None:
    with pytest.raises(DataError) as info:
        check_dataset(DataConfig(name="tiny_user_data:raises"))
    assert "FileNotFoundError: no such file: /data/train.npz" in info.value.problem


def test_a_stray_dataset_item_fails_with_its_index_while_loading(user_module: Path) -> None:
    cfg = tiny_cfg("tiny_user_data:odd_item", **{"data.val_fraction": 0.1})  # item 0 and the shape are fine
    with pytest.raises(DataError, match="item 7 .* is 1x9x8"):
        bundle = load_data(cfg.data)  # the channel statistics read the training items
        for part in ("train", "val"):
            list(build_loader(bundle, part, cfg))


def test_registration_mistakes_are_programming_errors() -> None:
    register_dataset("user_once", dataset_factory)
    with pytest.raises(ValueError, match="twice"):
        register_dataset("user_once", dataset_factory)
    with pytest.raises(ValueError, match="twice"):
        register_dataset("cifar10", dataset_factory)
    with pytest.raises(ValueError, match="import paths"):
        register_dataset("pkg:make", dataset_factory)
