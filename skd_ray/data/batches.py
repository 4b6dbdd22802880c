"""Batch iterators for in-memory datasets, with augmentation done on whole batches.

Small datasets (digits, Fashion-MNIST, CIFAR) fit in memory as one tensor. Shuffling an
index, slicing batches and augmenting them on the training device avoids per-image PIL
transforms and DataLoader worker processes, which would dominate a CPU epoch of a small net.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class TensorSplit:
    """Images (N, C, H, W) as uint8 (0..255) or float (0..1), and int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> TensorSplit:
        return TensorSplit(self.images[index], self.labels[index])


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding `pad` and random horizontal flip, per sample, batched."""
    b, _, h, w = x.shape
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device)[None, :])  # (B, H)
        cols = (ox[:, None] + torch.arange(w, device=x.device)[None, :])  # (B, W)
        bidx = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(b, generator=gen) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x.contiguous()


class InMemoryLoader:
    """Yields normalised (images, labels) batches on `device` from a TensorSplit.

    In distributed training every rank gets an equal, disjoint share of each epoch's
    permutation (the remainder is dropped), so all ranks run the same number of steps and
    DDP's collectives never wait on a rank that ran out of data. Evaluation has no
    collectives per step, so its shards are strided and cover every sample exactly once.
    """

    def __init__(
        self,
        split: TensorSplit,
        batch_size: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        train: bool,
        augment_pad: int = 0,
        augment_flip: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        self.split = split
        self.batch_size = batch_size
        self.train = train
        self.pad = augment_pad if train else 0
        self.flip = augment_flip and train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.epoch = 0
        self.mean = mean.view(1, -1, 1, 1).to(self.device)
        self.std = std.view(1, -1, 1, 1).to(self.device)
        self.pin = self.device.type == "cuda"
        if self.pin:
            self.split = TensorSplit(split.images.pin_memory(), split.labels.pin_memory())

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle deterministically from (seed, epoch) so resumed runs see the same order."""
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.split)
        if not self.train:  # evaluation covers every sample once; uneven shards are fine there
            return torch.arange(n)[self.rank::self.world_size]
        per_rank = n // self.world_size
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=gen)
        return order[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __len__(self) -> int:
        n = len(self._indices())
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yields (images, labels, sample indices); the indices let methods cache per sample."""
        idx = self._indices()
        gen = torch.Generator().manual_seed(self.seed * 7_919 + self.epoch * 31 + self.rank)
        for i in range(len(self)):
            batch = idx[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.split.images[batch].to(self.device, non_blocking=True)
            y = self.split.labels[batch].to(self.device, non_blocking=True)
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
            if self.pad or self.flip:
                x = random_crop_flip(x, self.pad, self.flip, gen)
            x = (x - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y, batch.to(self.device, non_blocking=True)
