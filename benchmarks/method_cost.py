"""Training cost of every registered self-KD method relative to `vanilla`, in one run.

    .venv/bin/python benchmarks/method_cost.py                       # resnet_small on digits
    .venv/bin/python benchmarks/method_cost.py --dataset fashion-mnist --train-subset 5000
    .venv/bin/python benchmarks/method_cost.py --quick               # smoke run, < 1 min
    .venv/bin/python benchmarks/method_cost.py --backbone resnet18 --synthetic 128 --batch-size 32
                                        # ResNet-18 on CIFAR-shaped inputs (3x32x32, 100 classes)
    .venv/bin/python benchmarks/method_cost.py --backbone wrn_16_2 --synthetic 256
    .venv/bin/python benchmarks/method_cost.py --backbone timm:mobilenetv3_small_100 --synthetic 256
                                        # any family: a Wide ResNet, a timm model, package.module:factory

Every method is measured in a fresh child process (this script re-invoked with `--child`),
one after the other, never in parallel, with the same data, backbone, width, batch size,
seed, torch thread count and device. A child builds the method with `skd_ray.methods`
(through `skd_ray.training.engine`'s helpers and `skd_ray.data`'s loader) and drives it as
`engine.fit` does (epoch hooks, then `engine.train_one_epoch`), so what is timed is the
project's real training step: forward, loss, backward, optimiser step, per-batch hooks and
the methods' epoch-end synchronisation. Validation is not timed.

What is reported, per method:

- `time_ratio`: median seconds per training epoch over `--epochs` measured epochs (the first
  `--warmup` epochs are excluded), divided by vanilla's. The median is over whole epochs,
  so schedule-dependent work is included where it falls in the measured window: with the
  defaults SRDL's snapshot is taken half-way through the run, so its measured epochs mix
  stage 1 (plain CE), the epoch that fills its teacher cache (one extra forward per sample)
  and cached stage-2 epochs.
- `mac_ratio`: multiply-accumulates of one training forward pass per image (conv and linear
  layers: backbone, exit heads, students, SRDL's online teacher), divided by vanilla's, counted
  at the first measured epoch. It is what the method adds in arithmetic; `time_ratio` / `mac_ratio`
  far from 1 means the extra work runs less (or more) efficiently than the backbone's.
- `mem_ratio`: peak training memory divided by vanilla's. On a GPU it is
  `torch.cuda.max_memory_allocated()` (reset after the data is loaded, before the model is
  built): parameters, buffers, gradients, optimiser state and activations. On a CPU it is
  the growth of the child's resident set from just before the model is built to its peak
  during training (Linux: the peak, VmHWM, is reset through /proc/self/clear_refs at that
  point). Before that point the child runs one throw-away vanilla step and returns freed
  heap pages to the OS (malloc_trim), so torch's lazily loaded kernels and code pages are
  in the baseline rather than charged to the method. The growth covers the same things as
  the GPU number plus allocator slack and the code pages only a method's extra operators
  touch, so it is noisier and sensitive to how glibc reuses memory; the interpreter,
  torch's libraries and the dataset are excluded. Where the peak cannot be reset it falls back to the whole
  process's ru_maxrss (the line says so), which the baseline dominates for small models.
- Details (not ratios): seconds per epoch, images/s, the resident-set growth (or GPU peak)
  in MB and the exact bytes of parameters + buffers + optimiser state after training
  (`state_mb`), which is allocator-independent.

One run on a shared machine is noisy: `--rounds R` measures every method R times,
interleaved, and takes the median per method.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHILD_TAG = "RESULT "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="digits", help="digits (default) | fashion-mnist | cifar10 | ...")
    p.add_argument("--data-dir", help="where the dataset's files are (fashion-mnist: Debian's location by default)")
    p.add_argument("--backbone", default="resnet_small")
    p.add_argument("--width", type=int, help="backbone width (default: the backbone's own)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-subset", type=int, default=0, help="train on this many images (0: all)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="instead of --dataset: N random CIFAR-shaped images (3x32x32, 100 classes, crop+flip)")
    p.add_argument("--epochs", type=int, default=3, help="measured epochs per method (median taken)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs before the measured ones")
    p.add_argument("--threads", type=int, default=1, help="torch threads in every child")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--methods", help="comma-separated subset (vanilla is always measured)")
    p.add_argument("--rounds", type=int, default=1, help="measure every method this many times, interleaved")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the measurements to this file")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: digits, width 4, 256 images, 1 warm-up + 2 measured epochs")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.width, args.train_subset, args.warmup, args.epochs = "digits", 4, 256, 1, 2
    if args.epochs < 1 or args.warmup < 0 or args.rounds < 1:
        p.error("--epochs and --rounds must be >= 1, --warmup >= 0")
    return args


def flat_config(args: argparse.Namespace, method: str) -> dict[str, Any]:
    flat: dict[str, Any] = {
        # synthetic data: resolve as CIFAR-100, whose shape it has
        "method": method, "data.name": "cifar100" if args.synthetic else args.dataset,
        "data.train_subset": args.train_subset,
        "model.backbone": args.backbone, "train.batch_size": args.batch_size, "train.seed": args.seed,
        "train.threads": args.threads, "train.device": args.device,
        "train.epochs": args.warmup + args.epochs,
    }
    if args.width is not None:
        flat["model.width"] = args.width
    if args.data_dir:
        flat["data.dir"] = args.data_dir
    return flat


# ---------------------------------------------------------------- child: one method

def read_status_kb(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return read_status_kb("VmHWM") is not None


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so the next RSS
    growth is new memory rather than reuse of pages freed earlier."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def synthetic_data(args: argparse.Namespace, cfg: Any, device: Any) -> tuple[Any, Any]:
    """(bundle, training loader) of `args.synthetic` random CIFAR-100-shaped images: the
    cost of a step does not depend on what the pixels show, and no dataset is needed."""
    import torch

    from skd_ray.data import DataBundle
    from skd_ray.data.batches import InMemoryLoader, TensorSplit

    gen = torch.Generator().manual_seed(args.seed)
    split = TensorSplit(torch.randint(0, 256, (args.synthetic, 3, 32, 32), dtype=torch.uint8, generator=gen),
                        torch.randint(0, 100, (args.synthetic,), generator=gen))
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    bundle = DataBundle("synthetic", split, None, None, 100, 3, mean, std)
    loader = InMemoryLoader(split, cfg.train.batch_size, mean, std, train=True, augment_pad=4, augment_flip=True,
                            seed=cfg.train.seed, device=device)
    return bundle, loader


def image_size_of(cfg: Any) -> int:
    from skd_ray.data import input_image_size

    return input_image_size(cfg.data)


def prime(cfg: Any, data: Any, loader: Any, device: Any) -> None:
    """One throw-away vanilla training step: loads what torch initialises lazily (kernels,
    code pages, the optimiser's first-use imports: about 150 MB of RSS) before the baseline
    is taken, so it is not charged to the method being measured."""
    import torch

    from skd_ray.methods import METHODS, MethodContext, build_method
    from skd_ray.models import build_backbone
    from skd_ray.training.engine import build_optimizer

    backbone = build_backbone(cfg.model.backbone, cfg.model.width, data.in_channels, data.num_classes,
                              image_size=image_size_of(cfg), stages=cfg.model.stages)
    model = build_method("vanilla", backbone, METHODS["vanilla"].default_params(), MethodContext()).to(device)
    optimizer = build_optimizer(cfg, model.parameters())
    x, y, index = next(iter(loader))
    model(x, y, index).loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.predict(x)
    del model, backbone, optimizer, x, y, index
    release_freed_memory()


def training_macs(method: Any, loader: Any, epoch: int, total: int) -> int:
    """MACs per image of one training forward pass at `epoch`, counted on a copy (the count runs
    a forward in training mode, which would move BN statistics and per-batch method state)."""
    import copy

    from skd_ray.models.flops import count_macs

    twin = copy.deepcopy(method)
    twin.on_epoch_start(epoch, total)
    x, y, index = next(iter(loader))
    return count_macs(twin, x[:2], y[:2], index[:2])  # per sample; 2 keep BN's batch statistics defined


def state_bytes(module: Any, optimizer: Any) -> int:
    import torch

    tensors = list(module.parameters()) + list(module.buffers())
    for per_param in optimizer.state.values():
        tensors += [v for v in per_param.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def measure_child(args: argparse.Namespace, method_name: str) -> dict[str, Any]:
    import resource

    import torch

    from skd_ray.data import build_loader, load_data
    from skd_ray.methods import MethodContext, build_method
    from skd_ray.models import build_backbone
    from skd_ray.training.engine import build_optimizer, seed_everything, train_one_epoch
    from skd_ray.training.resolve import resolve_config
    from skd_ray.training.session import pick_device

    cfg = resolve_config(flat_config(args, method_name))
    torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device)
    if args.synthetic:
        data, loader = synthetic_data(args, cfg, device)
    else:
        data = load_data(cfg.data)
        loader = build_loader(data, "train", cfg, device=device)
    prime(cfg, data, loader, device)
    seed_everything(cfg.train.seed)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        mem_source = "cuda_max_allocated"
    else:
        mem_source = "rss_growth" if reset_peak_rss() else "process_ru_maxrss"
    rss_before_kb = read_status_kb("VmRSS") or 0

    backbone = build_backbone(cfg.model.backbone, cfg.model.width, data.in_channels, data.num_classes,
                              image_size=image_size_of(cfg), stages=cfg.model.stages)
    method = build_method(cfg.method, backbone, cfg.method_params,
                          MethodContext(num_train_samples=len(data.train))).to(device)
    optimizer = build_optimizer(cfg, method.parameters())
    total = cfg.train.epochs
    macs = training_macs(method, loader, args.warmup, total)
    times = []
    for epoch in range(total):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        method.on_epoch_start(epoch, total)
        loader.set_epoch(epoch)
        train_one_epoch(method, method, loader, optimizer, cfg, device)
        method.on_epoch_end(epoch, total)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)

    if mem_source == "cuda_max_allocated":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    elif mem_source == "rss_growth":
        peak_mb = ((read_status_kb("VmHWM") or 0) - rss_before_kb) / 1024
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    measured = times[args.warmup:]
    epoch_s = statistics.median(measured)
    return {
        "method": method_name, "epoch_s": epoch_s, "epoch_times": measured,
        "images_per_s": len(loader) * cfg.train.batch_size / epoch_s,
        "peak_mb": peak_mb, "mem_source": mem_source, "macs": macs,
        "state_mb": state_bytes(method, optimizer) / 2**20,
        "device": str(device), "threads": torch.get_num_threads(),
        "train_images": len(data.train), "steps_per_epoch": len(loader),
    }


# ---------------------------------------------------------------- parent: every method

def run_child(args: argparse.Namespace, method: str, argv: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", method]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(CHILD_TAG)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"measuring {method} failed (exit code {proc.returncode})")
    return json.loads(lines[-1].removeprefix(CHILD_TAG))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        print(CHILD_TAG + json.dumps(measure_child(args, args.child)), flush=True)
        return

    from skd_ray.methods import METHODS

    names = sorted(METHODS) if not args.methods else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(sorted(METHODS))}")
    names = ["vanilla"] + [m for m in names if m != "vanilla"]
    start = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
    for _ in range(args.rounds):
        for m in names:
            runs[m].append(run_child(args, m, argv))
    results = {}
    for m, rs in runs.items():
        epoch_s = statistics.median(r["epoch_s"] for r in rs)
        results[m] = {**rs[-1], "epoch_s": epoch_s, "peak_mb": statistics.median(r["peak_mb"] for r in rs),
                      "images_per_s": rs[-1]["steps_per_epoch"] * args.batch_size / epoch_s}
    base = results["vanilla"]
    source = "synthetic 3x32x32, 100 classes" if args.synthetic else args.dataset
    print(f"# {args.backbone} width={args.width or 'default'} on {source} ({base['train_images']} training "
          f"images, batch {args.batch_size}, {base['steps_per_epoch']} steps/epoch), device={base['device']} "
          f"threads={base['threads']}, warm-up {args.warmup} + median of {args.epochs} epochs, "
          f"{args.rounds} round(s), memory: {base['mem_source']}")
    print(f"# {'method':<10} {'s/epoch':>8} {'img/s':>7} {'MMACs':>8} {'peak_MB':>8} {'state_MB':>8}")
    for m in names:
        r = results[m]
        print(f"# {m:<10} {r['epoch_s']:8.3f} {r['images_per_s']:7.0f} {r['macs'] / 1e6:8.2f} {r['peak_mb']:8.1f} "
              f"{r['state_mb']:8.3f}")
    for m in names:
        r = results[m]
        time_ratio = r["epoch_s"] / base["epoch_s"]
        mem_ratio = r["peak_mb"] / base["peak_mb"] if base["peak_mb"] > 0 else float("nan")
        mac_ratio = r["macs"] / base["macs"]
        print(f"method={m} backbone={args.backbone} time_ratio={time_ratio:.2f} mac_ratio={mac_ratio:.2f} "
              f"mem_ratio={mem_ratio:.2f}")
    print(f"# total {time.perf_counter() - start:.1f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": runs}, indent=2))


if __name__ == "__main__":
    main()
