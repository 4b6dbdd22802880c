"""Every registered method with its default settings against `vanilla` on Fashion-MNIST.

    .venv/bin/python benchmarks/fashion_comparison.py --epochs 4 --train-subset 5000 --seeds 3

All methods share one recipe (skd_ray's defaults: SGD lr 0.05, momentum 0.9, weight decay
5e-4, cosine schedule, batch 64, train-time crop+flip augmentation) and differ only in
`method` (each with its registered default parameters). Each (method, seed) is trained in
this process, one after the other, with `skd_ray.training.engine.fit` and a
`skd_ray.training.session.LocalSession`; `train.seed` is the seed, the data split and subset are the
same for every run. The model evaluated is the one after the LAST epoch (no checkpoint is
selected, on validation or test); its deployable network (the backbone's own classifier,
exits and students are not used) is evaluated once on the 10,000-image TEST split with
`skd_ray.training.engine.evaluate_split`. The validation part (`--val-fraction` of the training set)
is held out and evaluated each epoch by `fit`, as in a search, but selects nothing here.

Printed: a Markdown table (method | test acc mean ± sample std over seeds | runs | mean
epoch time, which includes fit's per-epoch validation pass) and the exact command.
`--out FILE` writes every run's numbers as JSON. Data: Fashion-MNIST IDX files from
`--data-dir` or Debian's /usr/share/datasets/fashion-mnist.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from torch import nn


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train-subset", type=int, default=5000, help="training images (0: the whole training part)")
    p.add_argument("--seeds", default="3", help="a count N (seeds 0..N-1) or a comma-separated list")
    p.add_argument("--methods", help="comma-separated subset of the registered methods (default: all)")
    p.add_argument("--backbone", default="resnet_small")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1, help="torch threads (train.threads)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", help="Fashion-MNIST IDX files (default: Debian's location)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra shared config value for every run, e.g. --set optim.lr=0.1")
    p.add_argument("--out", help="write every run's results to this JSON file")
    args = p.parse_args(argv)
    args.seed_list = ([int(s) for s in args.seeds.split(",") if s.strip()] if "," in args.seeds
                      else list(range(int(args.seeds))))
    if not args.seed_list:
        p.error("--seeds needs at least one seed")
    return args


def shared_config(args: argparse.Namespace) -> dict[str, Any]:
    flat: dict[str, Any] = {
        "data.name": "fashion-mnist", "data.train_subset": args.train_subset,
        "data.val_fraction": args.val_fraction, "model.backbone": args.backbone, "model.width": args.width,
        "train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.threads": args.threads,
        "train.device": args.device,
    }
    if args.data_dir:
        flat["data.dir"] = args.data_dir
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        flat[key.strip()] = value.strip()
    return flat


def run_one(flat: dict[str, Any]) -> dict[str, Any]:
    """Train one configuration to its last epoch; test accuracy of that final model."""
    from skd_ray.training.engine import evaluate_split, fit
    from skd_ray.training.resolve import resolve_config
    from skd_ray.training.session import LocalSession

    class FinalModelSession(LocalSession):
        """LocalSession that keeps a handle on the trained method (final weights after fit)."""

        def prepare_model(self, model: nn.Module) -> nn.Module:
            self.method = model
            return super().prepare_model(model)

    cfg = resolve_config(flat)
    session = FinalModelSession(cfg.train.device, echo=False, total_epochs=cfg.train.epochs)
    start = time.perf_counter()
    final = fit(cfg, session)
    train_s = time.perf_counter() - start
    test = evaluate_split(cfg, session.method, "test", session.device)
    return {
        "method": cfg.method, "seed": cfg.train.seed, "test_acc": test["test_acc"],
        "final_val_acc": final["val_acc"], "final_train_loss": final["train_loss"],
        "epoch_times": [m["time_epoch_s"] for m in session.history], "train_s": train_s,
        "val_acc_history": [m["val_acc"] for m in session.history],
    }


def table(args: argparse.Namespace, runs: list[dict[str, Any]], methods: list[str]) -> str:
    lines = ["| method | test acc (mean ± std) | runs | mean epoch time |", "|---|---|---|---|"]
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            continue
        accs = [100 * r["test_acc"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        epoch_s = statistics.mean(t for r in rs for t in r["epoch_times"])
        lines.append(f"| {m} | {statistics.mean(accs):.2f} ± {std:.2f} % | {len(rs)} | {epoch_s:.1f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from skd_ray.methods import METHODS

    methods = sorted(METHODS) if not args.methods else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(sorted(METHODS))}")
    if "vanilla" in methods:
        methods = ["vanilla"] + [m for m in methods if m != "vanilla"]
    base = shared_config(args)
    command = shlex.join([".venv/bin/python", "benchmarks/fashion_comparison.py", *argv])
    runs: list[dict[str, Any]] = []
    start = time.perf_counter()
    # Seed-major order: an interrupted run still has every method for the seeds it finished.
    for seed in args.seed_list:
        for m in methods:
            r = run_one({**base, "method": m, "train.seed": seed})
            runs.append(r)
            print(f"{m} seed={seed} test_acc={r['test_acc']:.4f} final_val_acc={r['final_val_acc']:.4f} "
                  f"train={r['train_s']:.0f}s elapsed={time.perf_counter() - start:.0f}s", flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps({"command": command, "config": base, "runs": runs}, indent=2))
    print()
    print(table(args, runs, methods))
    print()
    print(f"Budget: Fashion-MNIST, {args.backbone} width {args.width}, train subset {args.train_subset or 'all'}, "
          f"{args.epochs} epochs, seeds {args.seed_list}, batch {args.batch_size}, "
          f"{args.threads} torch thread(s); total {time.perf_counter() - start:.0f}s")
    print(f"Command: {command}")


if __name__ == "__main__":
    main()
