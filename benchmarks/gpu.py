"""One GPU check: what the GPU path gains and where a GPU trial's time goes, in one run.

    bash benchmarks/gpu_check.sh                   # the full check, under `timeout 480`, output kept in a file
    .venv/bin/python benchmarks/gpu.py             # the same, printed here (it budgets itself 420 s)
    .venv/bin/python benchmarks/gpu.py --quick     # smoke run on CPU in seconds: ResNet-20, batch 8, two methods,
                                                   # fp32 and bf16 (GPU-only parts say why they skip)

Four measurements, side by side in one process (the searches in child processes), each with a
share of a time budget (`--budget-s`, 420 s by default, so the whole check ends before the
script's 480 s limit; a part that would not fit says so and is skipped):

1. Training images/s. ResNet-18 (`build_backbone("resnet18", None, 3, 100, image_size=32)`) at
   32x32, batch `--batch-size`, for vanilla and every registered method, on synthetic batches
   made once and kept in device memory (no loader: the step alone). The step is the engine's
   own `train_one_epoch`: forward under the run's autocast, loss, backward, optimiser step,
   per-batch hooks. Each method is put in its last epoch's regime (`on_epoch_start(1, 2)`:
   SRDL distils from its cached snapshot, PS-KD mixes in its stored predictions). Four
   settings: `fp32`, `bf16` (autocast), `bf16_cl` (bf16 + channels-last model and batches) and
   `compiled` (bf16_cl + `torch.compile`, default mode). Each is warmed up (cuDNN autotuning,
   compilation: the warm-up time is printed), then timed over as many steps as fill
   `--seconds`, with the device synchronised at both ends. Ratios: each setting against the
   method's fp32, and each method against vanilla in bf16_cl (the GPU default). Compilation
   costs tens of seconds per method, so it runs last, vanilla first, within `--compile-budget-s`.
2. The share of a training step spent waiting for data: the project's in-memory loader
   (`build_loader`: batches gathered from pinned host memory, copied, cropped, flipped and
   normalised on the device) feeding the same step for vanilla with the device's defaults.
   Synchronised: the device is synchronised before and after each `__next__`, so the time in
   it is the batch's whole cost, over the epoch's time; unsynchronised: the engine's own
   `time_data_frac` (time between steps, what the loop really waits while the GPU is queued).
3. GPU utilisation of a real trial: `nvidia-smi --query-gpu=utilization.gpu` polled every
   0.2 s in a thread while `run_search.py` runs a 1-trial search (vanilla ResNet-18 on
   CIFAR-shaped synthetic data from `synthetic_cifar` below, the project's defaults). Printed:
   the mean over the whole search and over its busy window (first to last nonzero sample), so
   Ray's start-up is seen apart from the trial. Skipped without nvidia-smi.
4. Trials per hour with 1, 2 and 4 trials packed on one GPU: three searches of 4 trials each
   (`--gpus-per-worker 1`, `0.5`, `0.25`, no early stopping). Trials per hour is the completed
   trials over the span from the first trial's start to the last one's end (MLflow's run
   times), so Ray's start-up is not counted; the most trials seen running at once, the trials'
   `skd.amp` / `skd.gpu_share` tags and any failure reason are printed with it.

Every search trial runs with the project's defaults (`train.amp` and `train.channels_last`
`auto`): the tags printed in (4) say what that resolved to on this GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from skd_ray.results.store import MlflowStore

REPO = Path(__file__).resolve().parents[1]
SETTINGS: dict[str, dict[str, Any]] = {
    "fp32": {"train.amp": "off", "train.channels_last": False, "train.compile": "off"},
    "bf16": {"train.amp": "bf16", "train.channels_last": False, "train.compile": "off"},
    "bf16_cl": {"train.amp": "bf16", "train.channels_last": True, "train.compile": "off"},
    "compiled": {"train.amp": "bf16", "train.channels_last": True, "train.compile": "default"},
}
GPU_ONLY = ("bf16_cl", "compiled")  # channels-last and inductor pay off on GPUs; on CPU they cost minutes
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 50_000, 1_000  # CIFAR's training size: a trial's epoch is a real one
PACKING = (1.0, 0.5, 0.25)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--methods", help="comma-separated subset (vanilla is always measured); default: every method")
    p.add_argument("--seconds", type=float, default=1.5, help="timed seconds per method and setting")
    p.add_argument("--compile-budget-s", type=float, default=120.0, help="seconds for the compiled setting")
    p.add_argument("--budget-s", type=float, default=420.0, help="the whole check; parts that would not fit skip")
    p.add_argument("--search-epochs", type=int, default=3, help="epochs of the utilisation search's trial")
    p.add_argument("--pack-epochs", type=int, default=2, help="epochs of each trial of the packing searches")
    p.add_argument("--pack-trials", type=int, default=4, help="trials of each packing search")
    p.add_argument("--cpus-per-worker", type=float, default=2.0, help="CPUs each search trial reserves")
    p.add_argument("--json", help="also write the measurements to this file")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run on CPU: resnet20, batch 8, vanilla and byot, fp32 and bf16, no searches")
    args = p.parse_args(argv)
    if args.quick:
        args.device, args.backbone, args.batch_size, args.methods = "cpu", "resnet20", 8, "vanilla,byot"
        args.seconds, args.threads = 0.0, 1
    return args


# ---------------------------------------------------------------- synthetic data

def synthetic_cifar(data_dir: str | None = None) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """`--dataset benchmarks.gpu:synthetic_cifar`: CIFAR-100-shaped random images, the same in
    every process that calls it (fixed seed), so search trials need no dataset on the machine.
    What a step costs does not depend on what the pixels show."""
    import torch

    gen = torch.Generator().manual_seed(0)
    # SKD_GPU_CHECK_IMAGES shrinks the training part, for a trial of the search path on a CPU.
    train = int(os.environ.get("SKD_GPU_CHECK_IMAGES", SYNTHETIC_TRAIN))

    def part(n: int) -> tuple[Any, Any]:
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
        labels = torch.arange(n) % 100  # every class present
        return images, labels[torch.randperm(n, generator=gen)]

    return part(train), part(SYNTHETIC_TEST)


# ---------------------------------------------------------------- 1. images/s

def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: Any, compiled: bool = False) -> None:
    """Free what the last measurement left (its model and batches are gone with its frame)."""
    import gc

    import torch

    if compiled:
        torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def throughput(args: argparse.Namespace, method_name: str, setting: str, device: Any) -> dict[str, Any]:
    """Images/s of `method_name`'s training step in `setting`, on batches kept on `device`."""
    import torch

    from skd_ray.methods import MethodContext, build_method
    from skd_ray.models import build_backbone
    from skd_ray.training.engine import build_optimizer, seed_everything, train_one_epoch
    from skd_ray.training.resolve import resolve_config

    cfg = resolve_config({"method": method_name, "data.name": "cifar100", "model.backbone": args.backbone,
                          "train.batch_size": args.batch_size, "train.device": device.type, **SETTINGS[setting]})
    seed_everything(0)
    distinct = 8  # batches cycled; the per-sample stores (PS-KD, SRDL) see 8 x batch samples
    backbone = build_backbone(args.backbone, None, 3, 100, image_size=32)
    method = build_method(method_name, backbone, cfg.method_params,
                          MethodContext(num_train_samples=distinct * args.batch_size)).to(device)
    channels_last = bool(cfg.train.channels_last)
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    method.on_epoch_start(1, 2)
    optimizer = build_optimizer(cfg, method.parameters())
    model = torch.compile(method, mode=cfg.train.compile) if cfg.train.compile != "off" else method
    batches = []
    for i in range(distinct):
        x = torch.randn(args.batch_size, 3, 32, 32, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        batches.append((x, torch.randint(0, 100, (args.batch_size,), device=device),
                        torch.arange(i * args.batch_size, (i + 1) * args.batch_size, device=device)))

    def run(steps: int) -> tuple[float, dict[str, float]]:
        synchronize(device)
        t0 = time.perf_counter()
        metrics = train_one_epoch(model, method, [batches[i % distinct] for i in range(steps)], optimizer, cfg,
                                  device)
        synchronize(device)
        return time.perf_counter() - t0, metrics

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup_s, _ = run(3 if device.type == "cuda" else 1)  # autotuning, compilation, lazy inits
    probe_s, _ = run(3 if device.type == "cuda" else 1)
    steps = max(2, min(2000, math.ceil(args.seconds / (probe_s / (3 if device.type == "cuda" else 1)))))
    seconds, metrics = run(steps)
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    loss = metrics["train_loss"]
    if not math.isfinite(loss):
        raise SystemExit(f"{method_name} {setting}: loss {loss}")
    return {"method": method_name, "setting": setting, "images_per_s": steps * args.batch_size / seconds,
            "steps": steps, "seconds": seconds, "warmup_s": warmup_s, "peak_gib": peak_gib, "loss": loss}


def measure_throughput(args: argparse.Namespace, names: list[str], settings: list[str], device: Any,
                       deadline: float) -> dict[tuple[str, str], dict[str, Any]]:
    """Every method in every eager setting (`settings` without `compiled`), while time lasts."""
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for name in names:
        for setting in settings:
            if time.monotonic() > deadline:
                print(f"throughput method={name} setting={setting} skipped (time budget spent)", flush=True)
                continue
            r = throughput(args, name, setting, device)
            release(device)
            results[(name, setting)] = r
            print(f"throughput method={name} setting={setting} images_per_s={r['images_per_s']:.1f} "
                  f"(warm-up {r['warmup_s']:.1f}s, {r['steps']} steps)", flush=True)
    return results


def measure_compiled(args: argparse.Namespace, names: list[str], device: Any, deadline: float,
                     results: dict[tuple[str, str], dict[str, Any]]) -> None:
    """The compiled setting, vanilla first, until `--compile-budget-s` or the deadline runs out."""
    end = min(deadline, time.monotonic() + args.compile_budget_s)
    expected = 75.0  # seconds one compilation may take, until the first one says
    for name in names:
        if time.monotonic() + expected > end:
            print(f"throughput method={name} setting=compiled skipped (about {expected:.0f}s to compile; the "
                  f"compile budget of {args.compile_budget_s:.0f}s or the time budget is spent)", flush=True)
            continue
        r = throughput(args, name, "compiled", device)
        release(device, compiled=True)
        expected = r["warmup_s"] + r["seconds"] + 5
        results[(name, "compiled")] = r
        print(f"throughput method={name} setting=compiled images_per_s={r['images_per_s']:.1f} "
              f"(compile + warm-up {r['warmup_s']:.1f}s, {r['steps']} steps)", flush=True)


def print_throughput(args: argparse.Namespace, names: list[str], settings: list[str], device_name: str,
                     results: dict[tuple[str, str], dict[str, Any]]) -> None:
    print(f"# images/s, {args.backbone} at 32x32, batch {args.batch_size}, {device_name}; "
          f"ratio: to the method's fp32; time_vs_vanilla: vanilla's images/s over the method's")
    print("# " + f"{'method':<10}" + "".join(f"{s:>10}" for s in settings) + f"{'peak_GiB':>10}")
    for name in names:
        row = [results.get((name, s)) for s in settings]
        cells = "".join(f"{r['images_per_s']:>10.0f}" if r else f"{'-':>10}" for r in row)
        peaks = [r["peak_gib"] for r in row if r and not math.isnan(r["peak_gib"])]
        print(f"# {name:<10}{cells}{(max(peaks) if peaks else float('nan')):>10.2f}")
    reference = "bf16_cl" if "bf16_cl" in settings else settings[-1]
    for name in names:
        base = results.get((name, "fp32"))
        parts = [f"{s}_ratio={results[(name, s)]['images_per_s'] / base['images_per_s']:.2f}"
                 for s in settings if s != "fp32" and base and (name, s) in results]
        vanilla, own = results.get(("vanilla", reference)), results.get((name, reference))
        if vanilla and own:
            parts.append(f"time_vs_vanilla_{reference}={vanilla['images_per_s'] / own['images_per_s']:.2f}")
        print(f"method={name} " + " ".join(parts))


# ---------------------------------------------------------------- 2. data wait

class TimedLoader:
    """Wraps a loader and adds up the time spent in its `__next__`, the device synchronised
    before and after each call, so the time is the batch's own whole cost."""

    def __init__(self, loader: Any, device: Any) -> None:
        self.loader, self.device, self.wait = loader, device, 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        batches = iter(self.loader)
        while True:
            synchronize(self.device)
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            synchronize(self.device)
            self.wait += time.perf_counter() - t0
            yield batch


def measure_data_wait(args: argparse.Namespace, device: Any, images: int) -> dict[str, float]:
    """The share of a vanilla training step spent in the in-memory loader (module docstring, 2)."""
    import torch

    from skd_ray.data import DataBundle, build_loader
    from skd_ray.data.batches import TensorSplit
    from skd_ray.methods import MethodContext, build_method
    from skd_ray.models import build_backbone
    from skd_ray.training.engine import build_optimizer, seed_everything, train_one_epoch
    from skd_ray.training.hardware import describe_device, resolve_setup, with_setup
    from skd_ray.training.resolve import resolve_config

    cfg = resolve_config({"method": "vanilla", "data.name": "cifar100", "model.backbone": args.backbone,
                          "train.batch_size": args.batch_size, "train.device": device.type})
    setup = resolve_setup(cfg.train, describe_device(device))
    cfg = with_setup(cfg, setup)
    seed_everything(0)
    gen = torch.Generator().manual_seed(0)
    split = TensorSplit(torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=gen),
                        torch.randint(0, 100, (images,), generator=gen))
    bundle = DataBundle("synthetic", split, None, None, 100, 3, torch.full((3,), 0.5), torch.full((3,), 0.25),
                        pad=4, flip=True)
    loader = build_loader(bundle, "train", cfg, device=device)
    method = build_method("vanilla", build_backbone(args.backbone, None, 3, 100, image_size=32), cfg.method_params,
                          MethodContext(num_train_samples=images)).to(device)
    if cfg.train.channels_last:
        method = method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, method.parameters())
    train_one_epoch(method, method, loader, optimizer, cfg, device)  # warm-up
    timed = TimedLoader(loader, device)
    synchronize(device)
    t0 = time.perf_counter()
    train_one_epoch(method, method, timed, optimizer, cfg, device)
    synchronize(device)
    synced = timed.wait / (time.perf_counter() - t0)
    unsynced = train_one_epoch(method, method, loader, optimizer, cfg, device)["time_data_frac"]
    return {"synced": synced, "unsynced": unsynced, "steps": len(timed), "amp": setup.amp,
            "channels_last": setup.channels_last}


# ---------------------------------------------------------------- 3 and 4. searches

class UtilisationPoller(threading.Thread):
    """Samples `nvidia-smi`'s GPU utilisation (%) every `interval` seconds until stopped."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5, check=False).stdout.split()
                self.samples.append((time.monotonic(), float(out[0])))  # the first GPU: the one lent
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self.halt.wait(self.interval)

    def summary(self) -> dict[str, float]:
        values = [v for _, v in self.samples]
        busy = [i for i, v in enumerate(values) if v > 0]
        window = values[busy[0]:busy[-1] + 1] if busy else []
        return {"samples": len(values), "mean": statistics.fmean(values) if values else float("nan"),
                "busy_mean": statistics.fmean(window) if window else float("nan"),
                "busy_median": statistics.median(window) if window else float("nan"),
                "busy_s": (self.samples[busy[-1]][0] - self.samples[busy[0]][0]) if busy else 0.0}


def write_space(path: Path, backbone: str, epochs: int, batch_size: int) -> Path:
    """Vanilla on the synthetic data, only the learning rate searched: every trial costs the
    same, so trials per hour compare packings, not configurations."""
    import yaml

    path.write_text(yaml.safe_dump({
        "description": f"GPU check: vanilla {backbone} on synthetic CIFAR-shaped data",
        "metric": "val_acc", "mode": "max",
        "fixed": {"method": "vanilla", "data.name": "benchmarks.gpu:synthetic_cifar", "model.backbone": backbone,
                  "train.epochs": epochs, "train.batch_size": batch_size},
        "params": {"optim.lr": {"type": "float", "low": 0.01, "high": 0.2, "log": True, "default": 0.05}},
    }))
    return path


def run_search(args: argparse.Namespace, root: Path, name: str, trials: int, gpus: float, epochs: int,
               timeout: float) -> dict[str, Any]:
    """`run_search.py` with `trials` trials at `gpus` GPUs each, in a child process; its trials
    read back from MLflow (start and end times, status, tags)."""
    space = write_space(root / f"{name}.yaml", args.backbone, epochs, args.batch_size)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cmd = [sys.executable, str(REPO / "run_search.py"), "--config", str(space), "--num-samples", str(trials),
           "--no-early-stopping", "--gpus-per-worker", f"{gpus:g}", "--cpus-per-worker", f"{args.cpus_per_worker:g}",
           "--storage", str(root / "results"), "--mlflow-uri", uri, "--experiment", name, "-q"]
    t0 = time.monotonic()
    # A session of its own: a search that runs past its time is interrupted as Ctrl-C would
    # (Ray shuts down), then its whole process group is killed, so no Ray process is left
    # holding the GPU while the check goes on.
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        returncode, tail = proc.returncode, out[-1500:]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        returncode, tail = -1, f"ran past its {timeout:.0f}s share of the time budget"
    wall = time.monotonic() - t0
    return {"name": name, "gpus": gpus, "returncode": returncode, "wall_s": wall, "tail": tail,
            "trials": trial_runs(uri, name)}


def trial_runs(uri: str, experiment: str) -> list[dict[str, Any]]:
    from skd_ray.results.names import Tags

    c = MlflowStore(uri).client
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`{Tags.KIND}` = 'trial'")
    return [{"start": r.info.start_time / 1000, "end": (r.info.end_time or 0) / 1000,
             "status": r.data.tags.get(Tags.STATUS, ""), "reason": r.data.tags.get(Tags.FAILURE_REASON, ""),
             "amp": r.data.tags.get(Tags.AMP, "?"), "channels_last": r.data.tags.get(Tags.CHANNELS_LAST, "?"),
             "gpu_share": r.data.tags.get(Tags.GPU_SHARE, "none"), "device": r.data.tags.get(Tags.DEVICE, "?")}
            for r in runs]


def most_at_once(trials: list[dict[str, Any]]) -> int:
    events = sorted([(t["start"], 1) for t in trials] + [(t["end"], -1) for t in trials if t["end"]],
                    key=lambda e: (e[0], e[1]))
    running = best = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


def describe_search(result: dict[str, Any]) -> dict[str, Any]:
    trials = result["trials"]
    done = [t for t in trials if t["status"] == "completed" and t["end"]]
    span = (max(t["end"] for t in done) - min(t["start"] for t in done)) if done else float("nan")
    return {"completed": len(done), "trials": len(trials), "span_s": span,
            "trials_per_hour": len(done) / span * 3600 if done and span > 0 else float("nan"),
            "trial_s": statistics.median(t["end"] - t["start"] for t in done) if done else float("nan"),
            "at_once": most_at_once(trials),
            "tags": sorted({f"amp={t['amp']} channels_last={t['channels_last']} gpu_share={t['gpu_share']}"
                            for t in trials}),
            "reasons": sorted({t["reason"] for t in trials if t["reason"]})}


def measure_utilisation(args: argparse.Namespace, root: Path, deadline: float) -> dict[str, Any] | None:
    need = 90.0
    if shutil.which("nvidia-smi") is None:
        print("gpu_utilisation skipped (nvidia-smi not found)")
        return None
    if deadline - time.monotonic() < need:
        print(f"gpu_utilisation skipped (under {need:.0f}s of the time budget left)")
        return None
    poller = UtilisationPoller()
    poller.start()
    try:
        result = run_search(args, root, "gpu-check-utilisation", 1, 1.0, args.search_epochs,
                            deadline - time.monotonic())
    finally:
        poller.halt.set()
        poller.join()
    util = poller.summary()
    info = describe_search(result)
    print(f"gpu_utilisation search_mean={util['mean']:.1f}% busy_mean={util['busy_mean']:.1f}% "
          f"busy_median={util['busy_median']:.1f}% busy_s={util['busy_s']:.1f} samples={util['samples']} "
          f"(1 trial of {args.search_epochs} epochs, trial {info['trial_s']:.1f}s, search {result['wall_s']:.1f}s; "
          f"{', '.join(info['tags']) or 'no trial recorded'})")
    if result["returncode"] != 0 or info["completed"] != 1:
        print(f"# the utilisation search did not complete its trial (exit {result['returncode']}): "
              f"{'; '.join(info['reasons']) or result['tail'][-600:]}")
    return {"utilisation": util, "search": info}


def measure_packing(args: argparse.Namespace, root: Path, deadline: float) -> dict[float, dict[str, Any]]:
    results: dict[float, dict[str, Any]] = {}
    for i, gpus in enumerate(PACKING):
        left = deadline - time.monotonic()
        share = left / (len(PACKING) - i)
        if share < 45:
            print(f"trials_per_hour gpus_per_worker={gpus:g} skipped ({left:.0f}s of the time budget left)")
            continue
        poller = UtilisationPoller() if shutil.which("nvidia-smi") else None
        if poller:
            poller.start()
        try:
            result = run_search(args, root, f"gpu-check-pack-{gpus:g}", args.pack_trials, gpus, args.pack_epochs,
                                left - 5 * (len(PACKING) - i - 1))
        finally:
            if poller:
                poller.halt.set()
                poller.join()
        info = describe_search(result)
        util = poller.summary()["busy_mean"] if poller else float("nan")
        results[gpus] = {**info, "busy_util": util, "wall_s": result["wall_s"]}
        print(f"trials_per_hour gpus_per_worker={gpus:g} value={info['trials_per_hour']:.1f} "
              f"(completed {info['completed']}/{args.pack_trials}, at most {info['at_once']} at once, span "
              f"{info['span_s']:.1f}s, median trial {info['trial_s']:.1f}s, busy utilisation {util:.0f}%, "
              f"search {result['wall_s']:.1f}s; {', '.join(info['tags']) or 'no trial recorded'})", flush=True)
        if info["reasons"] or result["returncode"] != 0:
            print(f"# failures (exit {result['returncode']}): {'; '.join(info['reasons']) or result['tail'][-600:]}")
    base = results.get(1.0, {}).get("trials_per_hour", float("nan"))
    for gpus, r in results.items():
        if gpus != 1.0:
            print(f"packing_ratio trials_at_once={round(1 / gpus)} value={r['trials_per_hour'] / base:.2f}")
    return results


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.monotonic()
    deadline = start + args.budget_s
    import torch

    from skd_ray.methods import method_names
    from skd_ray.training.hardware import describe_device
    from skd_ray.training.session import pick_device

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    facts = describe_device(device)
    device_name = f"{device} ({facts.name})" if device.type == "cuda" else "cpu"
    known = method_names()
    names = known if not args.methods else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in known]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(known)}")
    names = ["vanilla"] + [m for m in names if m != "vanilla"]
    cuda = device.type == "cuda"
    print(f"# GPU check on {device_name}, torch {torch.__version__}, bf16 native: {facts.bf16}, "
          f"budget {args.budget_s:.0f}s{' (quick)' if args.quick else ''}", flush=True)
    eager = ["fp32", "bf16"] + ([s for s in GPU_ONLY if s != "compiled"] if cuda else [])
    if not cuda:
        print(f"throughput settings {', '.join(GPU_ONLY)} skipped (GPU only: no CUDA device)")

    # Eager throughput may start measurements until 40 % of the budget is spent; data wait, the searches
    # and compilation share the rest.
    results = measure_throughput(args, names, eager, device, start + args.budget_s * 0.4)
    wait = measure_data_wait(args, device, images=32 if args.quick else 50 * args.batch_size)
    release(device)
    print(f"data_wait synced={wait['synced']:.3f} unsynced={wait['unsynced']:.3f} "
          f"(share of a vanilla step in the in-memory loader, {wait['steps']} steps, amp={wait['amp']}, "
          f"channels_last={wait['channels_last']})", flush=True)

    searches: dict[str, Any] = {}
    if args.quick or not cuda:
        reason = "--quick" if args.quick else "no CUDA device"
        print(f"gpu_utilisation skipped (GPU only: {reason})")
        print(f"trials_per_hour skipped (GPU only: {reason})")
    else:
        with tempfile.TemporaryDirectory(prefix="skd_gpu_check_") as tmp:
            # Compilation keeps a share of the budget: the searches get what is left beyond it.
            search_deadline = deadline - min(args.compile_budget_s, 0.25 * args.budget_s)
            searches["utilisation"] = measure_utilisation(args, Path(tmp), search_deadline)
            searches["packing"] = measure_packing(args, Path(tmp), search_deadline)
        measure_compiled(args, names, device, deadline, results)

    settings = eager + (["compiled"] if any(s == "compiled" for _, s in results) else [])
    print_throughput(args, names, settings, device_name, results)
    total = time.monotonic() - start
    print(f"# total {total:.1f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "device": device_name,
            "throughput": [r for r in results.values()], "data_wait": wait,
            "searches": json.loads(json.dumps(searches, default=str)), "total_s": total}, indent=2))


if __name__ == "__main__":
    main()
