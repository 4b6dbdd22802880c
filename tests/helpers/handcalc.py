"""Loss formulas written out by hand (float64), independent of skd_ray.methods.losses, plus
tiny models and batches the method tests share, and a two-rank gloo launcher."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import torch
import torch.multiprocessing as mp

from skd_ray.models import StagedResNet


def tiny_backbone(num_classes: int = 4, width: int = 2, seed: int = 0) -> StagedResNet:
    torch.manual_seed(seed)
    return StagedResNet([1, 1, 1, 1], width, 1, num_classes)


def batch(n: int = 2, size: int = 8, seed: int = 1, num_classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return x, y


def log_softmax(z: torch.Tensor) -> torch.Tensor:
    z = z.double()
    m = z.max(dim=1, keepdim=True).values
    return z - m - torch.log(torch.exp(z - m).sum(dim=1, keepdim=True))


def softmax(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(log_softmax(z))


def cross_entropy(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logp = log_softmax(z)
    return -sum(logp[i, int(y[i])] for i in range(len(y))) / len(y)


def soft_cross_entropy(targets: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return -(targets.double() * log_softmax(z)).sum() / z.shape[0]


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Batch mean of sum_k p log(p / q) for row distributions p (target) and q (no zeros)."""
    p, q = p.double(), q.double()
    return (p * (torch.log(p) - torch.log(q))).sum() / p.shape[0]


def kl_t(teacher: torch.Tensor, student: torch.Tensor, t: float, t_squared: bool = True) -> torch.Tensor:
    """T^2 KL(softmax(teacher/T) || softmax(student/T)), batch mean, from log-probabilities."""
    log_p, log_q = log_softmax(teacher.double() / t), log_softmax(student.double() / t)
    value = (torch.exp(log_p) * (log_p - log_q)).sum() / teacher.shape[0]
    return value * t * t if t_squared else value


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a.double() - b.double()) ** 2).sum() / a.numel()


def close(a: torch.Tensor | float, b: torch.Tensor | float, tol: float = 1e-5) -> bool:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return bool(torch.allclose(a, b, rtol=tol, atol=tol))


def grad_is_zero(module: torch.nn.Module) -> bool:
    return all(p.grad is None or not p.grad.abs().sum() for p in module.parameters())


def _entry(rank: int, fn: Callable[[int], None], store: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        fn(rank)
    finally:
        torch.distributed.destroy_process_group()


def run_two_ranks(fn: Callable[[int], None]) -> None:
    """Run `fn(rank)` on two gloo ranks (a module-level function of a test module)."""
    with tempfile.TemporaryDirectory() as tmp:
        # fork: the children inherit the imported modules (spawn re-imports torch, ~5 s each).
        mp.start_processes(_entry, args=(fn, os.path.join(tmp, "store")), nprocs=2, join=True,
                           start_method="fork")
