"""Per-training-sample memory: one row per dataset position, kept in the state_dict.

SRDL caches its snapshot's logits per sample and PS-KD keeps last epoch's predictions per
sample. Both need the same three things, so they live here once:

- rows addressed by the loader's sample indices, with a `filled` mask (a row is only trusted
  once written; the training loader drops the last partial batch, so a sample may be missed
  in an epoch);
- persistence (`values` and `filled` are buffers, so checkpoints and resumes are exact);
- merging under torch.distributed: each rank writes only the rows of its own shard, so
  `sync()` all-reduces the rows written since the last sync and every rank (and rank 0's
  checkpoint) ends up with all of them.

The rows live on the training device like every buffer: N x D float32 is 20 MB for CIFAR-100
but 5 GB for ImageNet-1k (1.28M x 1000), where a half-precision or host-side store would be
needed.

DDP broadcasts rank 0's buffers at every forward by default, which would overwrite the rows
other ranks wrote (and send N x D floats per step). `ddp_ignore_names` lists the buffers
for the owning method's `_ddp_params_and_buffers_to_ignore`, which DDP honours.
"""

from __future__ import annotations

import torch
from torch import nn


def distributed_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class SampleMemory(nn.Module):
    """`num_samples` x `dim` float rows plus a filled mask (see module docstring)."""

    def __init__(self, num_samples: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("values", torch.zeros(num_samples, dim))
        self.register_buffer("filled", torch.zeros(num_samples, dtype=torch.bool))
        # Rows written since the last sync: rank-local bookkeeping, not checkpointed.
        self.register_buffer("fresh", torch.zeros(num_samples, dtype=torch.bool), persistent=False)

    @property
    def num_samples(self) -> int:
        return self.values.shape[0]

    def read(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, filled mask) for the given sample indices."""
        return self.values[index], self.filled[index]

    @torch.no_grad()
    def write(self, index: torch.Tensor, rows: torch.Tensor) -> None:
        self.values[index] = rows.detach().to(self.values.dtype)
        self.filled[index] = True
        self.fresh[index] = True

    @torch.no_grad()
    def sync(self) -> None:
        """Merge the rows every rank wrote since the last sync (no-op without a process group).

        Every rank must call this at the same point (it is a collective). A row written by
        more than one rank gets the mean of their values.
        """
        if distributed_ready():
            dist = torch.distributed
            count = self.fresh.sum().to(torch.float32).reshape(1)
            dist.all_reduce(count)
            if count.item() > 0:
                fresh = self.fresh.to(self.values.dtype)
                total = self.values * fresh[:, None]
                dist.all_reduce(total)
                dist.all_reduce(fresh)
                got = fresh > 0
                self.values[got] = total[got] / fresh[got, None]
                self.filled |= got
        self.fresh.zero_()

    def ddp_ignore_names(self, prefix: str) -> list[str]:
        """Fully qualified buffer names DDP must not broadcast (rows are rank-local until sync)."""
        return [f"{prefix}.{name}" for name, _ in self.named_buffers()]
