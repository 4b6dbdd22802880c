"""Trainer overhead: one epoch of `vanilla` through skd_ray's engine vs a plain PyTorch loop.

Both sides train the same backbone on the same in-memory batches with the same optimiser,
batch size and thread count; epochs alternate in ABBA order so drift in the
machine's speed hits both equally, and the median of each side is compared. The last line
is `engine_vs_plain_ratio=<engine median / plain median>`.

    python benchmarks/overhead.py            # ~1-2 minutes on 2 CPU cores
    python benchmarks/overhead.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from skd_ray.data import build_loader, load_data
from skd_ray.methods import MethodContext, build_method
from skd_ray.models import build_backbone
from skd_ray.training.engine import build_optimizer, train_one_epoch
from skd_ray.training.resolve import resolve_config


def plain_epoch(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                optimizer: torch.optim.Optimizer) -> None:
    """The minimal loop a user would write: forward, CE, backward, step."""
    model.train()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=7, help="timed epochs per side (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=4, help="digits is tiny: passes over it per 'epoch'")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeat = 2, 1
    torch.set_num_threads(args.threads)
    cfg = resolve_config({"method": "vanilla", "data.name": args.dataset, "data.augment": False})
    data = load_data(cfg.data)
    loader = build_loader(data, "train", cfg)
    # Both sides get the exact same prepared batches, so the ratio is the trainer's own cost
    # (method dispatch, loss-term bookkeeping, hooks), not data loading.
    prepared = list(loader)
    batches = [(x, y) for x, y, _ in prepared]

    class Repeated:
        """The prepared batches, `repeat` passes long (what the plain side iterates too)."""

        def __iter__(self):
            for _ in range(args.repeat):
                yield from prepared

    torch.manual_seed(0)
    plain_model = build_backbone(cfg.model.backbone, None, data.in_channels, data.num_classes)
    plain_opt = build_optimizer(cfg, plain_model.parameters())
    torch.manual_seed(0)
    method = build_method("vanilla", build_backbone(cfg.model.backbone, None, data.in_channels, data.num_classes),
                          cfg.method_params, MethodContext(len(data.train)))
    engine_opt = build_optimizer(cfg, method.parameters())
    device = torch.device("cpu")
    times: dict[str, list[float]] = {"plain": [], "engine": []}
    def run_plain() -> None:
        for _ in range(args.repeat):
            plain_epoch(plain_model, batches, plain_opt)

    def run_engine() -> None:
        train_one_epoch(method, method, Repeated(), engine_opt, cfg, device)

    for epoch in range(args.epochs + 1):
        # ABBA order: neither side always runs first (caches, CPU frequency, neighbours).
        order = [("plain", run_plain), ("engine", run_engine)]
        for name, fn in order if epoch % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            if epoch > 0:  # the first epoch of each side is a warm-up
                times[name].append(time.perf_counter() - start)
    plain, engine = statistics.median(times["plain"]), statistics.median(times["engine"])
    images = len(batches) * cfg.train.batch_size * args.repeat
    print(f"dataset={args.dataset} images_per_epoch={images} threads={args.threads} epochs={args.epochs}")
    print(f"plain_epoch_s={plain:.3f} ({images / plain:.0f} img/s)  engine_epoch_s={engine:.3f} "
          f"({images / engine:.0f} img/s)")
    print(f"engine_vs_plain_ratio={engine / plain:.3f}")


if __name__ == "__main__":
    main()
