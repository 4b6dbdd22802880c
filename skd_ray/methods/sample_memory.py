"""Per-training-sample memory: one row per dataset position, kept in the state_dict.

SRDL caches its snapshot's logits per sample and PS-KD keeps last epoch's predictions per
sample. Both need the same three things, so they live here once:

- rows addressed by the loader's sample indices, with a `filled` mask (a row is only trusted
  once written; the training loader drops the last partial batch, so a sample may be missed
  in an epoch);
- persistence (`values` and `filled` are in the state_dict under those names, so
  checkpoints and resumes are exact);
- merging under torch.distributed: each rank writes only the rows of its own shard, so
  `sync()` exchanges the rows written since the last sync and every rank (and rank 0's
  checkpoint) ends up with all of them. A checkpoint therefore holds every row and resumes at
  any world size.

Where the rows live: in host memory, in half precision by default. As device buffers in
float32 they cost N x D x 4 bytes of every rank's accelerator: 20 MB for CIFAR-100 but 5.1 GB
for ImageNet-1k (1.28M x 1000). In host memory as float16 they cost 2.6 GB of RAM per rank
and no accelerator memory; a step moves only its batch's rows (B x D) between host and
device. float16 keeps 11 significant bits (relative error <= 2^-11 for values >= 6.1e-5,
absolute error <= 3e-8 below), ample for softmax targets and logits; `dtype=torch.float32`
keeps full precision. Because the rows are not module buffers, `.to(device)` and DDP's
buffer broadcast leave them alone (DDP would otherwise overwrite the rows other ranks wrote
with rank 0's and send N x D values per step).

Why not keep only the rank's own samples: the training loader reshuffles the whole dataset
every epoch and gives each rank a different shard, so the rank that reads a row next epoch is
usually not the one that wrote it, and a sharded store would have to exchange rows at every
epoch start anyway, in an order only the loader knows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Sample indices per exchange in `sync` (bounds its temporary memory: world size x this x D
# values; 16k rows of 1000 float16 values are 33 MB).
SYNC_CHUNK_ROWS = 16384


def distributed_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _collective_device() -> torch.device:
    """NCCL moves only accelerator tensors; gloo moves host tensors."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class SampleMemory(nn.Module):
    """`num_samples` x `dim` rows in host memory plus a filled mask (see module docstring)."""

    def __init__(self, num_samples: int, dim: int, dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        self.values = torch.zeros(num_samples, dim, dtype=dtype)
        self.filled = torch.zeros(num_samples, dtype=torch.bool)
        # Rows written since the last sync: rank-local bookkeeping, not checkpointed.
        self.fresh = torch.zeros(num_samples, dtype=torch.bool)

    @property
    def num_samples(self) -> int:
        return self.values.shape[0]

    def read(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 rows, filled mask) for the given sample indices, on the indices' device."""
        host = index.cpu()
        rows = self.values[host].to(index.device, torch.float32, non_blocking=True)
        return rows, self.filled[host].to(index.device, non_blocking=True)

    @torch.no_grad()
    def write(self, index: torch.Tensor, rows: torch.Tensor) -> None:
        host = index.cpu()
        self.values[host] = rows.detach().to("cpu", self.values.dtype)
        self.filled[host] = True
        self.fresh[host] = True

    @torch.no_grad()
    def sync(self) -> None:
        """Merge the rows every rank wrote since the last sync (no-op without a process group).

        Every rank must call this at the same point (it is a collective). A row written by
        more than one rank gets the mean of their values. Rows travel in blocks of
        SYNC_CHUNK_ROWS consecutive sample indices (the same blocks on every rank, so all
        copies of a row meet in one exchange), and the exchange never holds a copy of the
        whole memory.
        """
        if distributed_ready():
            dist = torch.distributed
            dev = _collective_device()
            mine = self.fresh.nonzero().squeeze(1)
            block = mine // SYNC_CHUNK_ROWS
            blocks = -(-self.num_samples // SYNC_CHUNK_ROWS)
            counts = torch.bincount(block, minlength=blocks).to(dev)
            dist.all_reduce(counts, op=dist.ReduceOp.MAX)  # the most rows any rank sends per block
            for b, most in enumerate(counts.tolist()):
                if most:
                    self._merge_chunk(mine[block == b], most, dev)
        self.fresh.zero_()

    def _merge_chunk(self, index: torch.Tensor, rows: int, dev: torch.device) -> None:
        """All-gather up to `rows` (index, row) pairs from every rank (padded with index -1)."""
        dist = torch.distributed
        world = dist.get_world_size()
        idx = torch.full((rows,), -1, dtype=torch.long)
        idx[:index.numel()] = index
        vals = torch.zeros(rows, self.values.shape[1], dtype=self.values.dtype)
        vals[:index.numel()] = self.values[index]
        idx_all = [torch.empty(rows, dtype=torch.long, device=dev) for _ in range(world)]
        val_all = [torch.empty(rows, self.values.shape[1], dtype=self.values.dtype, device=dev)
                   for _ in range(world)]
        dist.all_gather(idx_all, idx.to(dev))
        dist.all_gather(val_all, vals.to(dev))
        got = torch.cat(idx_all).cpu()
        keep = got >= 0
        got, new = got[keep], torch.cat(val_all).cpu()[keep].float()
        unique, inverse = torch.unique(got, return_inverse=True)
        total = torch.zeros(unique.numel(), new.shape[1]).index_add_(0, inverse, new)
        count = torch.zeros(unique.numel()).index_add_(0, inverse, torch.ones(got.numel()))
        self.values[unique] = (total / count[:, None]).to(self.values.dtype)
        self.filled[unique] = True

    def ddp_ignore_names(self, prefix: str) -> list[str]:
        """Names DDP must not broadcast: none, the rows are not module buffers (kept for
        callers that list them; see the module docstring)."""
        return []

    def nbytes(self) -> int:
        """Host bytes of the rows and masks."""
        return sum(t.numel() * t.element_size() for t in (self.values, self.filled, self.fresh))

    # The rows are plain attributes (not buffers, so `.to()` leaves them in host memory) and
    # enter the state_dict here, under the names buffers would have.
    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        destination[prefix + "values"] = self.values
        destination[prefix + "filled"] = self.filled

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        for name in ("values", "filled"):
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
                continue
            saved, own = state_dict[key], getattr(self, name)
            if saved.shape != own.shape:
                error_msgs.append(f"size mismatch for {key}: {tuple(saved.shape)} in the checkpoint, "
                                  f"{tuple(own.shape)} here")
                continue
            own.copy_(saved.to("cpu", own.dtype))
        self.fresh.zero_()
