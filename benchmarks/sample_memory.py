"""Memory of a per-sample store (PS-KD, SRDL's teacher cache) at ImageNet-1k scale, allocated
and filled, not trained.

    .venv/bin/python benchmarks/sample_memory.py                  # N = 1,281,167, 1000 classes
    .venv/bin/python benchmarks/sample_memory.py --quick          # N = 50,000, 100 classes

Builds `pskd` on ResNet-18 with the given N and classes, moves it to the device (`.to()` as
the engine does), writes every row once (batches of 256, as training would over an epoch) and
reports:

- `device_mb`: bytes of the method's parameters and buffers, i.e. what lives on the training
  device, with the store (rows in host memory) and, for comparison, what the former design
  (float32 rows as device buffers) would add: N x classes x 4 bytes;
- `store_mb`: bytes of the store's rows and masks (host memory);
- `rss_growth_mb`: growth of this process's resident set from before building the method to
  after every row was written (the rows are touched, so they are resident);
- `write_s` / `state_dict_s`: seconds to write all rows and to build the state_dict.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch

from skd_ray.methods import METHODS, MethodContext, build_method
from skd_ray.models import build_backbone

IMAGENET_TRAIN = 1_281_167


def rss_mb() -> float:
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) / 1024 if match else float("nan")


def tensor_mb(tensors: list[torch.Tensor]) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=IMAGENET_TRAIN)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="N = 50,000 and 100 classes")
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.classes = 50_000, 100
    torch.set_num_threads(1)
    device = torch.device(args.device)
    before = rss_mb()
    backbone = build_backbone("resnet18", None, 3, args.classes)
    method = build_method("pskd", backbone, METHODS["pskd"].default_params(),
                          MethodContext(num_train_samples=args.samples)).to(device)
    store = method.memory
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    for start in range(0, args.samples, 256):
        index = torch.arange(start, min(start + 256, args.samples))
        rows = torch.softmax(torch.randn(index.numel(), args.classes, generator=gen), dim=1)
        store.write(index.to(device), rows.to(device))
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = method.state_dict()
    state_dict_s = time.perf_counter() - t0
    on_device = tensor_mb(list(method.parameters()) + list(method.buffers()))
    float32_rows = args.samples * args.classes * 4 / 2**20
    print(f"# pskd on resnet18, N={args.samples:,} classes={args.classes} device={device} "
          f"store dtype={store.values.dtype} on {store.values.device}")
    print(f"device_mb={on_device:.1f} (former float32 device rows would add {float32_rows:.1f})")
    print(f"store_mb={store.nbytes() / 2**20:.1f} rss_growth_mb={rss_mb() - before:.1f} "
          f"checkpoint_rows_mb={tensor_mb([state['memory.values'], state['memory.filled']]):.1f}")
    print(f"write_s={write_s:.2f} state_dict_s={state_dict_s:.3f}")


if __name__ == "__main__":
    main()
