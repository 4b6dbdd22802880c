"""Training-batch throughput: skd_ray's in-memory loader against a per-image PIL pipeline.

Both sides produce the same CIFAR-style training batches (random crop 32 with 4 pixels of
zero padding, random horizontal flip, normalisation) from the same 32x32 RGB uint8 images
held in memory, which the benchmark makes itself (random pixels: the work does not depend on
the content):

- `in_memory`: `skd_ray.data.batches.InMemoryLoader`, which slices a batch out of one
  tensor and augments the whole batch with tensor ops;
- `pil_dataloader`: the usual torchvision recipe, a Dataset returning PIL images through
  `transforms.Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(),
  Normalize()])` in a `DataLoader` (`--loader-workers` worker processes, 0 = in process).

Only batch production is timed (no model), with one torch thread, over `--epochs` passes after
one untimed pass. The last line is `in_memory_vs_pil_ratio=<x>` (in-memory images/s over
PIL images/s).

    python benchmarks/data_pipeline.py            # ~1 minute on 2 CPU cores
    python benchmarks/data_pipeline.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from skd_ray.data.batches import InMemoryLoader, TensorSplit

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class PilImages(Dataset):
    """What torchvision's CIFAR datasets do per item: array -> PIL image -> transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: transforms.Compose) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def images_per_second(batches: Iterable, epochs: int) -> float:
    """Batches drawn per second over `epochs` timed passes, after one untimed pass."""
    for _ in batches:
        pass
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in batches:
            count += int(batch[0].shape[0])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="timed passes per side")
    parser.add_argument("--loader-workers", type=int, default=1, help="DataLoader processes of the PIL side")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1,000 images, one pass")
    args = parser.parse_args()
    if args.quick:
        args.images, args.epochs = 1_000, 1
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.images)

    split = TensorSplit(torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels))
    in_memory = InMemoryLoader(split, args.batch_size, torch.tensor(MEAN), torch.tensor(STD), train=True,
                               augment_pad=4, augment_flip=True)
    pil = DataLoader(
        PilImages(hwc, labels, transforms.Compose([
            transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(MEAN, STD)])),
        batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.loader_workers,
        persistent_workers=args.loader_workers > 0,
    )
    fast = images_per_second(in_memory, args.epochs)
    slow = images_per_second(pil, args.epochs)
    print(f"images={args.images} batch_size={args.batch_size} epochs={args.epochs} "
          f"loader_workers={args.loader_workers}")
    print(f"in_memory: {fast:,.0f} images/s")
    print(f"pil_dataloader: {slow:,.0f} images/s")
    print(f"in_memory_vs_pil_ratio={fast / slow:.2f}")


if __name__ == "__main__":
    main()
