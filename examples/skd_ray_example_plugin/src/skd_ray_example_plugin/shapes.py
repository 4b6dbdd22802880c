"""Toy shapes: 16x16 grey images of a square, a cross or a ring at a random place and size, with
pixel noise. Drawn from a fixed seed, so every process (and every Ray worker) makes the same data
and nothing is downloaded."""

from __future__ import annotations

import torch

SIZE = 16
CLASSES = ("square", "cross", "ring")


def draw(kind: int, generator: torch.Generator) -> torch.Tensor:
    """One image of class `kind` (0..2), values 0..255."""
    r = int(torch.randint(3, 6, (1,), generator=generator))
    cy, cx = (int(v) for v in torch.randint(r, SIZE - r, (2,), generator=generator))
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    dy, dx = (yy - cy).abs(), (xx - cx).abs()
    if kind == 0:
        mask = (torch.maximum(dy, dx) == r)
    elif kind == 1:
        mask = ((dy == 0) & (dx <= r)) | ((dx == 0) & (dy <= r))
    else:
        dist = ((yy - cy) ** 2 + (xx - cx) ** 2).float().sqrt()
        mask = (dist - r).abs() < 0.7
    noise = torch.randint(0, 60, (SIZE, SIZE), generator=generator)
    return torch.where(mask, torch.full_like(noise, 230), noise)


def make(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(CLASSES), (n,), generator=generator)
    images = torch.stack([draw(int(k), generator) for k in labels]).unsqueeze(1).to(torch.uint8)
    return images, labels


Split = tuple[torch.Tensor, torch.Tensor]


def toy_shapes(data_dir: str | None = None) -> tuple[Split, Split]:
    """(train, test) as (uint8 images N x 1 x 16 x 16, int64 labels): 1,200 and 300 images."""
    return make(1200, seed=0), make(300, seed=1)
