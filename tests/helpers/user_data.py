"""Datasets as a user's own package would write them, named by import path in tests
(`--dataset tests.helpers.user_data:<factory>`)."""

from __future__ import annotations

import torch

Split = tuple[torch.Tensor, torch.Tensor]


def colour_32(data_dir: str | None = None) -> tuple[Split, Split]:
    """CIFAR-shaped random images (3x32x32) whose class is the brightest channel plus a
    quadrant: learnable, tiny (96 training and 48 test images), made the same in every process."""
    def part(n: int, seed: int) -> Split:
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, 4, (n,), generator=g)
        images = torch.randint(0, 100, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        for i, k in enumerate(labels.tolist()):
            y, x = divmod(k, 2)
            images[i, k % 3, 16 * y:16 * y + 16, 16 * x:16 * x + 16] += 150
        return images, labels

    return part(96, 0), part(48, 1)
