"""ImageNet / Tiny ImageNet folder layouts, streamed from disk with per-image transforms.

These datasets do not fit in memory on every node, so they keep torchvision's ImageFolder
and a DataLoader with worker processes (`FolderLoader`, which also reads users' own
Datasets). Layout: `DIR/train/<class>/*` and either `DIR/val/<class>/*` (ImageNet after the
usual re-sort) or Tiny ImageNet's `DIR/val/images/*` with `DIR/val/val_annotations.txt`.
`val/` serves as the test set; the validation split for model selection is held out of
`train/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from skd_ray.data.batches import random_crop_flip
from skd_ray.errors import DataError, read_text_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class IndexedSamples(Dataset):
    """(path, label) samples with a transform; items are (image, label, index)."""

    def __init__(self, samples: list[tuple[str, int]], transform: object) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                return self.transform(img.convert("RGB")), label, i  # type: ignore[operator]
        except (OSError, ValueError, SyntaxError) as err:  # UnidentifiedImageError, truncated, deleted
            # A DataError is deterministic: the trial fails once with this reason instead of
            # being retried (DataLoader workers re-raise it in the training process as DataError).
            raise DataError(f"image {path} cannot be decoded ({type(err).__name__}: {err})",
                            "replace or remove the damaged file") from None


def scan_imagefolder(root: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """Return (train samples, test samples, number of classes) for DIR/train and DIR/val."""
    from torchvision.datasets import ImageFolder

    base = Path(root)
    if not (base / "train").is_dir() or not (base / "val").is_dir():
        raise DataError(f"{root} lacks train/ and val/ folders",
                        "point --data-dir at a folder with train/<class>/ and val/ (ImageNet layout)")
    try:
        train = ImageFolder(str(base / "train"))
    except (FileNotFoundError, OSError) as err:  # no class folder, or none with an image
        raise DataError(f"{root}/train holds no usable class folders ({err})",
                        "put each class's images in its own folder under train/") from None
    annotations = base / "val" / "val_annotations.txt"
    if annotations.exists():  # Tiny ImageNet: flat val/images with a label file
        test = []
        for line in read_text_file(annotations, "Tiny ImageNet's label file").splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] in train.class_to_idx:
                test.append((str(base / "val" / "images" / parts[0]), train.class_to_idx[parts[1]]))
    else:
        try:
            val = ImageFolder(str(base / "val"))
        except (FileNotFoundError, OSError) as err:
            raise DataError(f"{root}/val holds no usable class folders ({err})",
                            "make val/ hold the same class folders as train/") from None
        if val.class_to_idx != train.class_to_idx:
            raise DataError(f"{root}/val classes differ from {root}/train",
                            "make val/ hold the same class folders as train/")
        test = list(val.samples)
    return list(train.samples), test, len(train.classes)


def build_transforms(image_size: int, train: bool) -> object:
    """Standard ImageNet recipe: RandomResizedCrop + flip for training, resize + centre crop else."""
    from torchvision import transforms as T

    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if train:
        return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    return T.Compose([T.Resize(int(image_size * 256 / 224)), T.CenterCrop(image_size), T.ToTensor(), norm])


class FolderLoader:
    """DataLoader over a Dataset of (image, label, index) items that moves batches to the device.

    Serves image folders (whose per-image transforms normalise) and users' own Datasets. Given
    `mean` and `std`, a batch is brought to the 0..1 scale (uint8 images), augmented with `pad`
    and `flip` when training and normalised on the device, as `InMemoryLoader` does. Training
    shards come from a DistributedSampler with `drop_last`, so every rank runs the same number
    of steps; evaluation shards are strided and cover every sample once.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, train: bool, seed: int,
                 rank: int, world_size: int, device: torch.device | str, num_workers: int,
                 channels_last: bool = False, mean: torch.Tensor | None = None, std: torch.Tensor | None = None,
                 pad: int = 0, flip: bool = False) -> None:
        self.sampler = DistributedSampler(dataset, world_size, rank, shuffle=True, seed=seed,
                                          drop_last=True) if train else None
        # Evaluation: strided shards cover every sample once (DistributedSampler would pad).
        eval_shard = None if train else list(range(rank, len(dataset), world_size))  # type: ignore[arg-type]
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler or eval_shard,
                                 num_workers=num_workers, drop_last=train,
                                 pin_memory=torch.device(device).type == "cuda",
                                 persistent_workers=num_workers > 0)
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.mean = None if mean is None else mean.view(1, -1, 1, 1).to(self.device)
        self.std = None if std is None else std.view(1, -1, 1, 1).to(self.device)
        self.pad = pad if train else 0
        self.flip = flip and train
        self.seed, self.rank, self.epoch = seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 7_919 + self.epoch * 31 + self.rank)
        for x, y, idx in self.loader:
            x = x.to(self.device, non_blocking=True)
            if self.mean is not None and self.std is not None:
                x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
                if self.pad or self.flip:
                    x = random_crop_flip(x, self.pad, self.flip, gen)
                x = (x - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True).long(), idx.to(self.device, non_blocking=True)
