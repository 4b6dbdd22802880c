"""Datasets, held-out splits, loaders and augmentation; every on-disk dataset is made in tmp_path."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from skd_ray.config import DataConfig
from skd_ray.data import build_loader, holdout, load_data
from skd_ray.data.batches import InMemoryLoader, TensorSplit, random_crop_flip
from skd_ray.data.sources import read_idx
from skd_ray.errors import ConfigError, DataError
from skd_ray.training.resolve import resolve_config


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to download fails the test instead of reaching the network."""
    import torchvision.datasets.utils as tv_utils

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to download data")

    for name in ("download_url", "download_and_extract_archive"):
        monkeypatch.setattr(tv_utils, name, refuse)
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", refuse)


def rows(split: TensorSplit) -> Counter:
    """Multiset of (image bytes, label): duplicates in the data are counted, not merged."""
    images = split.images.reshape(len(split), -1)
    return Counter((images[i].numpy().tobytes(), int(split.labels[i])) for i in range(len(split)))


# --- digits ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(name="digits"))


def test_digits_partition(digits) -> None:
    from sklearn.datasets import load_digits

    assert (len(digits.train), len(digits.val), len(digits.test)) == (1294, 144, 359)
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    bunch = load_digits()
    full = TensorSplit(torch.tensor(bunch.images, dtype=torch.float32).div(16).unsqueeze(1),
                       torch.tensor(bunch.target))
    # the three parts are a partition of the 1797 samples (as a multiset: the data has duplicates)
    assert rows(digits.train) + rows(digits.val) + rows(digits.test) == rows(full)
    assert digits.num_classes == 10 and digits.in_channels == 1
    assert digits.train.images.shape[1:] == (1, 8, 8)
    assert torch.allclose(digits.mean, digits.train.images.mean(dim=(0, 2, 3)))
    assert torch.allclose(digits.std, digits.train.images.std(dim=(0, 2, 3)))


def test_digits_val_split_is_fixed(digits) -> None:
    torch.manual_seed(12345)  # the global generator must not matter
    again = load_data(DataConfig(name="digits"))
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(again, part).images, getattr(digits, part).images)
        assert torch.equal(getattr(again, part).labels, getattr(digits, part).labels)
    # the split depends on data.split_seed only; train.seed is not part of the data config
    for seed in (0, 7):
        cfg = resolve_config({"data.name": "digits", "train.seed": seed})
        assert torch.equal(load_data(cfg.data).val.images, digits.val.images)
    other = load_data(DataConfig(name="digits", split_seed=1))
    assert not torch.equal(other.val.images, digits.val.images)
    bigger = load_data(DataConfig(name="digits", val_fraction=0.2))
    assert len(bigger.val) == 288 and len(bigger.train) == 1150


def test_digits_test_part_independent_of_split_seed(digits) -> None:
    other = load_data(DataConfig(name="digits", split_seed=1))
    assert torch.equal(other.test.images, digits.test.images)


def test_holdout() -> None:
    train, val = holdout(100, 0.1, 3)
    assert len(val) == 10 and len(train) == 90
    assert sorted(torch.cat([train, val]).tolist()) == list(range(100))
    again_train, again_val = holdout(100, 0.1, 3)
    assert torch.equal(val, again_val) and torch.equal(train, again_train)
    assert not torch.equal(holdout(100, 0.1, 4)[1], val)
    assert len(holdout(5, 0.01, 0)[1]) == 1  # at least one validation sample


# --- InMemoryLoader -------------------------------------------------------------------------

def toy_split(n: int = 50) -> TensorSplit:
    g = torch.Generator().manual_seed(0)
    return TensorSplit(torch.rand(n, 2, 4, 4, generator=g), torch.arange(n) % 5)


def loader(split: TensorSplit, *, train: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
           batch_size: int = 8, pad: int = 0, flip: bool = False) -> InMemoryLoader:
    mean, std = torch.tensor([0.5, 0.25]), torch.tensor([2.0, 4.0])
    return InMemoryLoader(split, batch_size, mean, std, train=train, augment_pad=pad, augment_flip=flip,
                          seed=seed, rank=rank, world_size=world_size)


def epoch_order(ld: InMemoryLoader, epoch: int) -> list[int]:
    ld.set_epoch(epoch)
    return [i for _, _, idx in ld for i in idx.tolist()]


def test_loader_batches_are_normalised_samples() -> None:
    split = toy_split()
    ld = loader(split)
    ld.set_epoch(0)
    count = 0
    for x, y, idx in ld:
        assert x.shape == (8, 2, 4, 4) and x.dtype == torch.float32
        assert torch.equal(y, split.labels[idx])
        expected = (split.images[idx] - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / \
            torch.tensor([2.0, 4.0]).view(1, 2, 1, 1)
        assert torch.allclose(x, expected)
        count += 1
    assert count == len(ld) == 50 // 8  # training drops the last partial batch


def test_uint8_images_are_scaled() -> None:
    split = TensorSplit(torch.full((4, 1, 2, 2), 255, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64))
    ld = InMemoryLoader(split, 4, torch.zeros(1), torch.ones(1), train=False)
    x, _, _ = next(iter(ld))
    assert torch.allclose(x, torch.ones(4, 1, 2, 2))


def test_loader_order_deterministic_per_seed_and_epoch() -> None:
    split = toy_split()
    a, b = loader(split, seed=3), loader(split, seed=3)
    assert epoch_order(a, 5) == epoch_order(b, 5)
    assert epoch_order(a, 0) != epoch_order(a, 1)
    assert epoch_order(a, 0) == epoch_order(loader(split, seed=3), 0)  # going back reproduces
    assert epoch_order(loader(split, seed=4), 0) != epoch_order(a, 0)
    order = epoch_order(a, 2)
    assert len(order) == len(set(order)) == 48 and set(order) <= set(range(50))


def test_augmentation_deterministic_per_seed_and_epoch() -> None:
    split = toy_split()

    def images(ld: InMemoryLoader, epoch: int) -> torch.Tensor:
        ld.set_epoch(epoch)
        return torch.cat([x for x, _, _ in ld])

    a, b = loader(split, pad=1, flip=True), loader(split, pad=1, flip=True)
    assert torch.equal(images(a, 2), images(b, 2))
    assert not torch.equal(images(a, 2), images(a, 3))


def test_eval_loader_is_ordered_complete_and_unaugmented() -> None:
    split = toy_split()
    ld = loader(split, train=False, pad=4, flip=True)
    ld.set_epoch(3)
    batches = list(ld)
    assert len(batches) == len(ld) == 7  # ceil(50 / 8): nothing dropped
    assert torch.cat([idx for _, _, idx in batches]).tolist() == list(range(50))
    plain = loader(split, train=False)
    assert torch.equal(torch.cat([x for x, _, _ in batches]), torch.cat([x for x, _, _ in plain]))


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_shards_disjoint_and_equal(world_size: int) -> None:
    split = toy_split(50)
    for epoch in (0, 1):
        shards = [epoch_order(loader(split, rank=r, world_size=world_size, batch_size=4), epoch)
                  for r in range(world_size)]
        lengths = {len(s) for s in shards}
        assert len(lengths) == 1  # every rank runs the same number of steps
        per_rank = 50 // world_size
        assert lengths == {per_rank - per_rank % 4}
        flat = [i for s in shards for i in s]
        assert len(flat) == len(set(flat))  # disjoint
        assert {len(loader(split, rank=r, world_size=world_size, batch_size=4)) for r in range(world_size)} \
            == {per_rank // 4}


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_shards_cover_the_epoch_permutation(world_size: int) -> None:
    split = toy_split(51)
    single = loader(split, batch_size=1)
    single.set_epoch(4)
    order = torch.cat([idx for _, _, idx in single]).tolist()
    shards = [epoch_order(loader(split, rank=r, world_size=world_size, batch_size=1), 4)
              for r in range(world_size)]
    per_rank = 51 // world_size
    assert [i for s in shards for i in s] == order[:per_rank * world_size]


def test_eval_shards_cover_the_whole_split() -> None:
    split = toy_split(50)
    seen = [i for r in range(3) for i in epoch_order(loader(split, train=False, rank=r, world_size=3), 0)]
    assert sorted(seen) == list(range(50))


# --- random_crop_flip -----------------------------------------------------------------------

def test_crop_flip_identity_without_augmentation() -> None:
    x = torch.rand(6, 3, 5, 7)
    out = random_crop_flip(x, 0, False, torch.Generator().manual_seed(0))
    assert torch.equal(out, x)


def test_flip_only_per_sample() -> None:
    x = torch.rand(64, 2, 4, 5)
    out = random_crop_flip(x, 0, True, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    flipped = [bool(torch.equal(out[i], x[i].flip(2))) for i in range(64)]
    kept = [bool(torch.equal(out[i], x[i])) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54 and 10 < sum(kept) < 54  # both happen, per sample


def test_crop_is_a_window_of_the_padded_image() -> None:
    pad, h, w = 2, 5, 6
    x = torch.rand(32, 3, h, w) + 0.1  # no zeros inside, so the padding is recognisable
    out = random_crop_flip(x, pad, False, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    offsets = set()
    for i in range(32):
        matches = [(oy, ox) for oy in range(2 * pad + 1) for ox in range(2 * pad + 1)
                   if torch.equal(out[i], padded[i, :, oy:oy + h, ox:ox + w])]
        assert matches, f"sample {i} is not a crop of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 5  # offsets are drawn per sample


def test_crop_flip_deterministic_given_generator() -> None:
    x = torch.rand(8, 1, 6, 6)
    a = random_crop_flip(x, 2, True, torch.Generator().manual_seed(5))
    b = random_crop_flip(x, 2, True, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


# --- Fashion-MNIST (IDX files) --------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    magic = 0x00000800 | array.ndim  # 0x0803 for images, 0x0801 for labels
    payload = struct.pack(">I", magic) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload += array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def fake_fashion(directory: Path, gz: bool, n_train: int = 20, n_test: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3 % 10).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(directory / name, array, gz)
    return arrays


def test_idx_header_is_the_real_format(tmp_path: Path) -> None:
    fake_fashion(tmp_path, gz=False, n_train=3)
    head = (tmp_path / "train-images-idx3-ubyte").read_bytes()[:16]
    assert struct.unpack(">IIII", head) == (0x00000803, 3, 28, 28)
    assert struct.unpack(">II", (tmp_path / "train-labels-idx1-ubyte").read_bytes()[:8]) == (0x00000801, 3)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("subdir", ["", "raw", "FashionMNIST/raw"])
def test_fashion_mnist_reader(tmp_path: Path, gz: bool, subdir: str) -> None:
    arrays = fake_fashion(tmp_path / subdir if subdir else tmp_path, gz)
    bundle = load_data(DataConfig(name="fashion-mnist", dir=str(tmp_path), val_fraction=0.25))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (15, 5, 6)
    assert bundle.num_classes == 10 and bundle.in_channels == 1
    assert bundle.test.images.dtype == torch.uint8 and bundle.test.images.shape == (6, 1, 28, 28)
    assert torch.equal(bundle.test.images[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert bundle.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert bundle.test.labels.dtype == torch.int64
    train_images = torch.from_numpy(arrays["train-images-idx3-ubyte"]).unsqueeze(1)
    train_labels = torch.from_numpy(arrays["train-labels-idx1-ubyte"].astype(np.int64))
    whole = TensorSplit(train_images, train_labels)
    assert rows(bundle.train) + rows(bundle.val) == rows(whole)
    expected_mean = bundle.train.images.float().div(255).mean()
    assert bundle.mean.shape == (1,) and float(bundle.mean[0]) == pytest.approx(float(expected_mean), rel=1e-5)
    cfg = resolve_config({"data.name": "fashion-mnist", "data.dir": str(tmp_path), "train.batch_size": 4})
    x, y, idx = next(iter(build_loader(bundle, "train", cfg)))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(y, bundle.train.labels[idx])


def test_fashion_mnist_missing_files(tmp_path: Path) -> None:
    fake_fashion(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="fashion-mnist", dir=str(tmp_path)))
    assert str(tmp_path) in info.value.problem and "Fashion-MNIST" in info.value.problem
    assert "train-images-idx3-ubyte" in info.value.fix and "data.download=true" in info.value.fix


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="fashion-mnist", dir=str(tmp_path / "absent")))
    assert "absent" in info.value.problem


def test_idx_rejects_non_byte_data(tmp_path: Path) -> None:
    path = tmp_path / "floats-idx1"
    path.write_bytes(struct.pack(">HBBI", 0, 0x0D, 1, 2) + np.zeros(2, dtype=">f4").tobytes())
    with pytest.raises(DataError):
        read_idx(path)


# --- CIFAR (torchvision's python pickle layout) ---------------------------------------------

def write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def fake_cifar(root: Path, name: str, per_batch: int = 4, n_test: int = 6) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(1)
    n_classes = 10 if name == "cifar10" else 100
    label_key = "labels" if name == "cifar10" else "fine_labels"
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    all_data, all_labels = [], []
    for k, fname in enumerate(train_files):
        n = per_batch * (5 if name == "cifar100" else 1)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [(k * n + i) % n_classes for i in range(n)]
        write_pickle(folder / fname, {"data": data, label_key: labels})
        all_data.append(data)
        all_labels += labels
    test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    write_pickle(folder / ("test_batch" if name == "cifar10" else "test"),
                 {"data": test, label_key: [i % n_classes for i in range(n_test)]})
    if name == "cifar10":
        write_pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    else:
        write_pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    return np.concatenate(all_data), all_labels


@pytest.fixture
def trust_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in files cannot match the real archives' MD5 sums; only check they exist."""
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity",
                        lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_standin(tmp_path: Path, trust_checksums: None, name: str) -> None:
    train_data, train_labels = fake_cifar(tmp_path, name)
    cfg = resolve_config({"data.name": name, "data.dir": str(tmp_path), "data.val_fraction": 0.25,
                          "train.batch_size": 5})
    bundle = load_data(cfg.data)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (15, 5, 6)
    assert bundle.num_classes == (10 if name == "cifar10" else 100) and bundle.in_channels == 3
    whole = TensorSplit(torch.from_numpy(train_data).reshape(-1, 3, 32, 32), torch.tensor(train_labels))
    assert bundle.train.images.dtype == torch.uint8
    assert rows(bundle.train) + rows(bundle.val) == rows(whole)
    assert bundle.mean.shape == (3,)
    ld = build_loader(bundle, "train", cfg)
    assert ld.pad == 4 and ld.flip  # the CIFAR recipe: crop 4 + flip
    batches = list(ld)
    assert len(batches) == 3 and all(x.shape == (5, 3, 32, 32) for x, _, _ in batches)
    no_aug = resolve_config({**cfg.to_flat(), "data.augment": False})
    plain = build_loader(bundle, "train", no_aug)
    assert plain.pad == 0 and not plain.flip
    test_ld = build_loader(bundle, "test", cfg)
    assert sum(len(y) for _, y, _ in test_ld) == 6


def test_cifar_corrupt_or_missing(tmp_path: Path) -> None:
    fake_cifar(tmp_path, "cifar10")  # checksums do not match the real archive
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="cifar10", dir=str(tmp_path)))
    assert "cifar10" in info.value.problem and str(tmp_path) in info.value.problem
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="cifar100"))
    assert "data directory" in info.value.problem


# --- image folders --------------------------------------------------------------------------

def write_png(path: Path, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(path)


def folder_cfg(root: Path, **extra: object):
    return resolve_config({"data.name": "imagefolder", "data.dir": str(root), "data.val_fraction": 0.25,
                           "data.image_size": 8, "data.loader_workers": 0, "train.batch_size": 2,
                           "eval.batch_size": 3, **extra})


def test_imagefolder_layout(tmp_path: Path) -> None:
    for c, cls in enumerate(("ant", "bee")):
        for i in range(4):
            write_png(tmp_path / "train" / cls / f"{i}.png", 10 * c + i)
        for i in range(2):
            write_png(tmp_path / "val" / cls / f"v{i}.png", 100 + 10 * c + i)
    cfg = folder_cfg(tmp_path)
    bundle = load_data(cfg.data)
    assert bundle.num_classes == 2 and bundle.in_channels == 3
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (6, 2, 4)
    assert {Path(p).name for p, _ in bundle.train + bundle.val} == {f"{i}.png" for i in range(4)}
    assert len(set(bundle.train + bundle.val)) == 8
    assert sorted(label for _, label in bundle.test) == [0, 0, 1, 1]
    assert all((Path(p).parent.name == "bee") == (label == 1) for p, label in bundle.train + bundle.test)

    train = build_loader(bundle, "train", cfg)
    train.set_epoch(0)
    batches = list(train)
    assert len(batches) == len(train) == 3
    seen = []
    for x, y, idx in batches:
        assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
        assert y.tolist() == [bundle.train[i][1] for i in idx.tolist()]
        seen += idx.tolist()
    assert sorted(seen) == list(range(6))

    test = build_loader(bundle, "test", cfg)
    labels = torch.cat([y for _, y, _ in test]).tolist()
    assert [len(y) for _, y, _ in test] == [3, 1]
    assert labels == [label for _, label in bundle.test]


def test_tiny_imagenet_layout(tmp_path: Path) -> None:
    for c, wnid in enumerate(("n01", "n02")):
        for i in range(3):
            write_png(tmp_path / "train" / wnid / "images" / f"{wnid}_{i}.png", 10 * c + i)
    lines = []
    for i, wnid in enumerate(("n02", "n01", "n02", "n99")):  # n99 is not a training class
        write_png(tmp_path / "val" / "images" / f"val_{i}.png", 50 + i)
        lines.append(f"val_{i}.png\t{wnid}\t0\t0\t10\t10")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    cfg = folder_cfg(tmp_path, **{"data.val_fraction": 0.34})
    bundle = load_data(cfg.data)
    assert bundle.num_classes == 2
    assert [(Path(p).name, label) for p, label in bundle.test] == [("val_0.png", 1), ("val_1.png", 0),
                                                                     ("val_2.png", 1)]
    assert len(bundle.train) + len(bundle.val) == 6
    xs, ys = zip(*[(x, y) for x, y, _ in build_loader(bundle, "test", cfg)])
    assert torch.cat(ys).tolist() == [1, 0, 1]
    assert torch.cat(xs).shape == (3, 3, 8, 8)


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_data(DataConfig(name="imagefolder"))
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="imagefolder", dir=str(tmp_path)))
    assert "train/ and val/" in info.value.problem
    write_png(tmp_path / "train" / "a" / "0.png", 0)
    write_png(tmp_path / "val" / "b" / "0.png", 1)
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="imagefolder", dir=str(tmp_path)))
    assert "classes differ" in info.value.problem
