"""Readers for the bundled and on-disk datasets, returning uint8/float tensors in memory.

Nothing here downloads unless `data.download` is true: tests and offline clusters must fail
with a clear message naming the missing files instead of hanging on a network call.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from skd_ray.data.batches import TensorSplit
from skd_ray.data.node_cache import cached_splits, file_fingerprint
from skd_ray.errors import DataError

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DIGITS_TRAIN_SIZE = 1797 - 359  # scikit-learn's digits less the fixed 20% test part
# What reading a damaged or vanished dataset file raises (truncated gzip or pickle, a file
# deleted between the check and the read, an undecodable image): turned into DataError, a
# deterministic failure that a retry of the trial would only repeat.
READ_ERRORS = (OSError, EOFError, ValueError, struct.error, pickle.UnpicklingError, zlib.error)


def load_digits_splits(test_fraction: float = 0.2, split_seed: int = 0) -> tuple[TensorSplit, TensorSplit]:
    """scikit-learn's bundled 8x8 digits (1,797 images) with a fixed held-out test part.

    The data ships with no test split, so a seeded 20% is set aside once and never used
    for model selection.
    """
    from importlib.metadata import version

    return cached_splits("digits", (test_fraction, split_seed, version("scikit-learn")),
                         lambda: _decode_digits(test_fraction, split_seed))


def _decode_digits(test_fraction: float, split_seed: int) -> tuple[TensorSplit, TensorSplit]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(10_000 + split_seed))
    n_test = int(round(test_fraction * len(labels)))
    full = TensorSplit(images, labels)
    return full.subset(order[n_test:]), full.subset(order[:n_test])


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file", "check the Fashion-MNIST files")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz", directory / "raw" / stem,
                      directory / "raw" / f"{stem}.gz", directory / "FashionMNIST" / "raw" / stem,
                      directory / "FashionMNIST" / "raw" / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def load_fashion_mnist(data_dir: str | None, download: bool) -> tuple[TensorSplit, TensorSplit]:
    """Fashion-MNIST from IDX files: `data_dir`, else Debian's dataset-fashion-mnist location."""
    dirs = [Path(data_dir)] if data_dir else [Path(d) for d in FASHION_MNIST_DIRS]
    if data_dir and download:
        import torchvision

        torchvision.datasets.FashionMNIST(data_dir, train=True, download=True)
        torchvision.datasets.FashionMNIST(data_dir, train=False, download=True)
    for directory in dirs:
        paths = {k: [find_idx(directory, s) for s in stems] for k, stems in FASHION_FILES.items()}
        if all(p is not None for ps in paths.values() for p in ps):
            files = [p for ps in paths.values() for p in ps if p is not None]
            return cached_splits("fashion-mnist", file_fingerprint(files), lambda found=paths: _decode_fashion(found))
    where = data_dir or FASHION_MNIST_DIRS[0]
    raise DataError(
        f"Fashion-MNIST IDX files not found under {where}",
        "run `apt-get install dataset-fashion-mnist`, or pass --data-dir DIR holding "
        "train-images-idx3-ubyte[.gz] etc., or add --set data.download=true with network access",
    )


def _decode_fashion(paths: dict[str, list[Path | None]]) -> tuple[TensorSplit, TensorSplit]:
    splits = []
    for part in ("train", "test"):
        img_path, lab_path = paths[part]
        assert img_path is not None and lab_path is not None
        try:
            images = torch.from_numpy(read_idx(img_path).copy()).unsqueeze(1)
            labels = torch.from_numpy(read_idx(lab_path).astype(np.int64))
        except READ_ERRORS as err:
            raise DataError(f"Fashion-MNIST files {img_path} / {lab_path} cannot be read "
                            f"({type(err).__name__}: {err})", "replace them with the original files") from None
        splits.append(TensorSplit(images, labels))
    return splits[0], splits[1]


def load_cifar(name: str, data_dir: str | None, download: bool) -> tuple[TensorSplit, TensorSplit]:
    """CIFAR-10/100 through torchvision's reader (python pickle batches) into uint8 tensors."""
    if not data_dir:
        raise DataError(f"{name} needs a data directory", "pass --data-dir DIR (with cifar-*-python inside, "
                        "or add --set data.download=true to fetch it there)")
    files = file_fingerprint(p for p in Path(data_dir).glob("cifar-*-python/*") if p.is_file())
    if not files or download:
        return _decode_cifar(name, data_dir, download)  # missing (clear error) or being fetched
    return cached_splits(name, files, lambda: _decode_cifar(name, data_dir, download))


def _decode_cifar(name: str, data_dir: str, download: bool) -> tuple[TensorSplit, TensorSplit]:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        parts = [cls(data_dir, train=train, download=download) for train in (True, False)]
    except (RuntimeError, *READ_ERRORS) as err:
        raise DataError(
            f"{name} not found or damaged under {data_dir} ({type(err).__name__}: {err})",
            "place the extracted cifar-*-python folder there or add --set data.download=true",
        ) from None
    out = []
    for part in parts:
        images = torch.from_numpy(np.ascontiguousarray(part.data)).permute(0, 3, 1, 2).contiguous()
        out.append(TensorSplit(images, torch.tensor(part.targets, dtype=torch.int64)))
    return out[0], out[1]


def check_dir(data_dir: str | None) -> None:
    """Fail early with a clear message when a given data directory does not exist."""
    if data_dir and not os.path.isdir(data_dir):
        raise DataError(f"data directory {data_dir} does not exist", "pass an existing --data-dir")
