"""What a user's dataset factory gives, checked, and the facts read from it.

A factory (see `skd_ray.data.dataset_registry`) returns `(train, test)`. Each part is either

- a pair of tensors `(images, labels)`: images N x C x H x W, uint8 (0..255) or float (0..1),
  integer labels. Kept in memory as a `TensorSplit` and batched by the fast `InMemoryLoader`,
  exactly like the built-in datasets; or
- a map-style `torch.utils.data.Dataset` whose items are `(image, label)`: a C x H x W tensor
  and an int. Read item by item through a DataLoader, so it never has to fit in memory.

What the registration did not say is read from the data: channels and image size from the
first image of each part, the number of classes from the labels (for a Dataset: its `classes`
or `targets` attribute when it has one, else every item's label, which reads every item once).
Since config checks, the data check and every training process need those facts, the factory
is called once per process and its result kept. Everything wrong with what it gives is one
ConfigError naming the dataset, the part and the problem, raised before Ray starts; a factory
that raises, or a Dataset item after the first that differs from it, is one DataError (a
deterministic failure a retry would only repeat). The registration's `pad` and `flip` augment
training batches of either form on the device; a Dataset may also transform its own items.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from skd_ray.data.batches import TensorSplit
from skd_ray.data.dataset_registry import UserDataset
from skd_ray.data.sources import check_dir
from skd_ray.errors import ConfigError, DataError, SkdError

PARTS_FIX = "return (train, test), each an (images, labels) pair of tensors or a torch Dataset of (image, label)"
ITEM_FIX = "make __getitem__ return (image, label): a C x H x W tensor (uint8 0..255 or float 0..1) and an int"
STATS_SAMPLES = 2048  # Dataset training items read for the normalisation's channel statistics
CACHED_DATASETS = 4  # loaded datasets kept per process (a search uses one; tests a few)

Part = TensorSplit | Dataset


@dataclass
class UserData:
    """A user's train and test parts, checked, with the facts read from them."""

    train: Part
    test: Part
    num_classes: int
    in_channels: int
    image_size: int


# (id of the factory, data_dir) -> (spec, data). Keyed by id, since a callable need not be
# hashable; the kept spec holds the factory, so its id cannot be reused while it is cached.
_loaded: OrderedDict[tuple[int, str | None], tuple[UserDataset, UserData]] = OrderedDict()


def load_user_data(name: str, spec: UserDataset, data_dir: str | None) -> UserData:
    """Call `spec.factory(data_dir=data_dir)` once per process, check what it returns and read
    the facts (see the module docstring); later calls return the kept result."""
    key = (id(spec.factory), data_dir)
    kept = _loaded.get(key)
    if kept is not None and kept[0] == spec:
        _loaded.move_to_end(key)
        return kept[1]
    check_dir(data_dir)
    train, test = call_factory(name, spec, data_dir)
    shape = image_shape(name, "train", train)
    test_shape = image_shape(name, "test", test)
    if test_shape != shape:
        raise ConfigError(f"train images of dataset {name} are {fmt(shape)} but its test images {fmt(test_shape)}",
                          "give both parts images of the same channels and size")
    channels, height, width = shape
    if height != width:
        raise ConfigError(f"images of dataset {name} are {fmt(shape)}, not square",
                          "crop or resize them to a square in the factory (the networks here take square images)")
    for what, given, found in (("in_channels", spec.in_channels, channels), ("image_size", spec.image_size, height)):
        if given is not None and given != found:
            raise ConfigError(f"dataset {name} was registered with {what}={given} but its images are {fmt(shape)}",
                              f"fix {what} in register_dataset, or leave it out (it is read from the data)")
    data = UserData(train, test, count_classes(name, spec, train, test), channels, height)
    _loaded[key] = (spec, data)
    while len(_loaded) > CACHED_DATASETS:
        _loaded.popitem(last=False)
    return data


def forget_user_data() -> None:
    """Let the next load call the factories again (tests that change registrations)."""
    _loaded.clear()


def call_factory(name: str, spec: UserDataset, data_dir: str | None) -> tuple[Part, Part]:
    """`factory(data_dir=...)`, checked to accept that call and to return two usable parts."""
    factory = spec.factory
    try:
        inspect.signature(factory).bind(data_dir=data_dir)
    except TypeError as err:
        raise ConfigError(f"dataset factory {name} cannot be called as factory(data_dir=...) ({err})",
                          "give the factory a data_dir keyword parameter (it may ignore it)") from None
    except ValueError:
        pass  # builtins without a signature: let the call decide
    try:
        out = factory(data_dir=data_dir)
    except SkdError:
        raise
    except Exception as err:  # the user's code (or the files it reads) can fail in any way
        raise DataError(f"dataset factory {name} failed ({type(err).__name__}: {first_line(err)})",
                        "fix the factory, or the files it reads (data.dir)") from None
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise ConfigError(f"dataset factory {name} returned {describe(out)}, not (train, test)", PARTS_FIX)
    return as_part(name, "train", out[0]), as_part(name, "test", out[1])


def as_part(name: str, which: str, part: Any) -> Part:
    """One part as a TensorSplit (an (images, labels) pair) or a Dataset, checked."""
    where = f"the {which} part of dataset {name}"
    if isinstance(part, tuple | list):
        if len(part) != 2:
            raise ConfigError(f"{where} is a {type(part).__name__} of {len(part)} items, not (images, labels)",
                              PARTS_FIX)
        return tensor_split(where, part[0], part[1])
    if isinstance(part, torch.Tensor | np.ndarray | dict | str | bytes) or not (
            hasattr(part, "__getitem__") and hasattr(part, "__len__")):
        raise ConfigError(f"{where} is {describe(part)}, not (images, labels) tensors or a Dataset", PARTS_FIX)
    if len(part) == 0:
        raise ConfigError(f"{where} is an empty Dataset", "give each part at least one image")
    return part  # its first item is checked when its shape is read (`image_shape`)


def read_item(where: str, dataset: Any, index: int) -> Any:
    """`dataset[index]`; what the user's `__getitem__` raises becomes one DataError naming the item."""
    try:
        return dataset[index]
    except SkdError:
        raise
    except Exception as err:
        raise DataError(f"reading item {index} of {where} failed ({type(err).__name__}: {first_line(err)})",
                        "fix the Dataset's __getitem__, or the file it reads") from None


def tensor_split(where: str, images: Any, labels: Any) -> TensorSplit:
    """(images, labels) checked: N x C x H x W uint8 or float images, N integer labels."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ConfigError(f"{where} is ({describe(images)}, {describe(labels)}), not a pair of tensors", PARTS_FIX)
    if images.dim() != 4:
        raise ConfigError(f"images of {where} are {images.dim()}-D {tuple(images.shape)}, not N x C x H x W",
                          "add the channel dimension (images.unsqueeze(1) for grey images)")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ConfigError(f"images of {where} are {images.dtype}", "give uint8 (0..255) or float (0..1) images")
    if not integer_dtype(labels.dtype):
        raise ConfigError(f"labels of {where} are {labels.dtype}, not integers", "pass class indices (labels.long())")
    if labels.dim() != 1 or len(labels) != len(images):
        raise ConfigError(f"{where} has {len(images)} images but labels of shape {tuple(labels.shape)}",
                          "give one integer label per image (a 1-D tensor)")
    if len(images) == 0:
        raise ConfigError(f"{where} holds no images", "give each part at least one image")
    return TensorSplit(images, labels.long())


def integer_dtype(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def item_label(label: Any) -> int | None:
    """The label as an int, or None when it is not an integer (bools are not class indices)."""
    if isinstance(label, bool | np.bool_):
        return None
    if isinstance(label, int | np.integer):
        return int(label)
    if isinstance(label, torch.Tensor) and label.numel() == 1 and integer_dtype(label.dtype):
        return int(label.item())
    return None


def check_item(where: str, item: Any, index: int) -> tuple[torch.Tensor, int]:
    """A Dataset item checked to be (C x H x W image tensor, int label)."""
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise ConfigError(f"item {index} of {where} is {describe(item)}, not (image tensor, int label)", ITEM_FIX)
    image, label = item
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        got = f"a {image.dim()}-D tensor {tuple(image.shape)}" if isinstance(image, torch.Tensor) else describe(image)
        raise ConfigError(f"the image of item {index} of {where} is {got}, not a C x H x W tensor", ITEM_FIX)
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise ConfigError(f"the image of item {index} of {where} is {image.dtype}", ITEM_FIX)
    value = item_label(label)
    if value is None:
        raise ConfigError(f"the label of item {index} of {where} is {describe(label)}, not an integer", ITEM_FIX)
    return image, value


def image_shape(name: str, which: str, part: Part) -> tuple[int, int, int]:
    """(C, H, W) of a part's images; of a Dataset, its first item's, which is checked here
    (`IndexedDataset` checks the others as they are read)."""
    if isinstance(part, TensorSplit):
        return tuple(part.images.shape[1:])  # type: ignore[return-value]
    where = f"the {which} part of dataset {name}"
    image, _ = check_item(where, read_item(where, part, 0), 0)
    return tuple(image.shape)  # type: ignore[return-value]


def part_labels(where: str, part: Part, read_items: bool) -> torch.Tensor | None:
    """Every label of a part: the tensor, a Dataset's `targets`, else (when `read_items`) each
    item's label, which reads, and checks, every item; None when not read."""
    if isinstance(part, TensorSplit):
        return part.labels
    targets = getattr(part, "targets", None)
    if targets is not None and len(targets) == len(part):
        labels = torch.as_tensor(targets)
        if not integer_dtype(labels.dtype) or labels.dim() != 1:
            raise ConfigError(f"targets of {where} are {describe(targets)} of {labels.dtype}, not integer labels",
                              "make targets the items' int labels, in order")
        return labels.long()
    if not read_items:
        return None
    return torch.tensor([check_item(where, read_item(where, part, i), i)[1] for i in range(len(part))],
                        dtype=torch.int64)


def count_classes(name: str, spec: UserDataset, train: Part, test: Part) -> int:
    """The classes given at registration, else a Dataset's `classes`, else one more than the
    largest label; labels that can be read cheaply are checked against the number either way.
    A classifier needs at least two."""
    classes = None if isinstance(train, TensorSplit) else getattr(train, "classes", None)
    given = spec.num_classes if spec.num_classes is not None else (len(classes) if classes is not None else None)
    source = "it was registered with num_classes=" if spec.num_classes is not None else "its classes attribute lists "
    found = 0
    for which, part in (("train", train), ("test", test)):
        where = f"the {which} part of dataset {name}"
        labels = part_labels(where, part, read_items=given is None)
        if labels is None or labels.numel() == 0:
            continue  # a Dataset's labels are then checked item by item while it is read
        if int(labels.min()) < 0:
            raise ConfigError(f"labels of {where} include {int(labels.min())}",
                              "give class indices 0, 1, ..., num_classes - 1")
        top = int(labels.max()) + 1
        if given is not None and top > given:
            raise ConfigError(f"labels of {where} reach {top - 1}, but {source}{given}",
                              "give class indices below the number of classes, or leave num_classes out of "
                              "register_dataset (it is read from the labels)")
        found = max(found, top)
    num_classes = found if given is None else given
    if num_classes < 2:
        raise ConfigError(f"dataset {name} has {num_classes} class(es); a classifier needs 2",
                          "check the labels the factory returns")
    return num_classes


class IndexedDataset(Dataset):
    """Items `indices` of a user's Dataset, as (image, label, position in this split).

    The position lets methods keep per-sample state, as with in-memory splits. Every item is
    checked to look like the first one and to carry a label below `num_classes`, so a stray
    item fails with its index instead of as a collation or loss error deep inside training.
    """

    def __init__(self, dataset: Dataset, indices: torch.Tensor, where: str, shape: tuple[int, int, int],
                 num_classes: int) -> None:
        self.dataset = dataset
        self.indices = indices.tolist()
        self.where = where
        self.shape = shape
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        j = self.indices[i]
        try:
            image, label = check_item(self.where, read_item(self.where, self.dataset, j), j)
        except ConfigError as err:  # found while training: deterministic, so a DataError (no retry)
            raise DataError(err.problem, err.fix) from None
        if tuple(image.shape) != self.shape:
            raise DataError(f"the image of item {j} of {self.where} is {fmt(tuple(image.shape))}, unlike the "
                            f"{fmt(self.shape)} of the others", "give every image the same channels and size")
        if not 0 <= label < self.num_classes:
            raise DataError(f"the label of item {j} of {self.where} is {label}, outside 0..{self.num_classes - 1}",
                            "give class indices below the number of classes")
        return image, label, i


def dataset_channel_stats(split: IndexedDataset, limit: int = STATS_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (0..1 scale) of up to `limit` training items, read in the
    split's order. The training indices are a seeded permutation, so those are a fixed random
    sample: the normalisation of a dataset that does not fit in memory costs one short pass."""
    channels = split.shape[0]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    count = min(len(split), limit)
    for i in range(count):
        image = split[i][0]
        x = image.double().reshape(channels, -1)
        if image.dtype == torch.uint8:
            x = x / 255.0
        total += x.sum(1)
        squares += (x * x).sum(1)
    pixels = count * split.shape[1] * split.shape[2]
    mean = total / pixels
    std = (squares / pixels - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.float(), std.float()


def describe(obj: Any) -> str:
    """A short name for what was given instead, for error messages."""
    if isinstance(obj, torch.Tensor | np.ndarray):
        return f"a {type(obj).__name__} of shape {tuple(obj.shape)}"
    if isinstance(obj, tuple | list):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__name__}"


def fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def first_line(err: BaseException) -> str:
    text = str(err)
    return text.splitlines()[0] if text else ""
