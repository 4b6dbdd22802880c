"""The Ray-free training loop: `fit(config, session)`, `train_one_epoch`, `evaluate`.

The loop is generic over methods (it only calls the SelfKDMethod interface) and over where it
runs: a `Session` supplies the device, the rank, DDP wrapping, the checkpoint to resume from
and where reports go. `skd_ray.training.session` has an in-process session,
`skd_ray.search.execution.sessions` the Ray ones.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Any, Protocol

import torch
from torch import nn

from skd_ray.config import TrainConfig
from skd_ray.data import build_loader, load_data
from skd_ray.errors import ConfigError, DataError, TrainingDiverged
from skd_ray.methods import SelfKDMethod
from skd_ray.training import metrics as metric_names
from skd_ray.training.early_exit import exit_compute, exit_metric_sums
from skd_ray.training.hardware import RunSetup, amp_for, describe_device, resolve_setup, share_exceeded, with_setup
from skd_ray.training.metrics import (
    BEST_EPOCH,
    EPOCH,
    LR,
    TIME_EPOCH_S,
    TIME_STARTUP_S,
    TRAIN_LOSS,
    is_accuracy,
    split_key,
    train_term,
)
from skd_ray.training.objective import Objective
from skd_ray.training.resolve import build_run


class Session(Protocol):
    """Where a training run executes and reports (see skd_ray.training.session and
    skd_ray.search.execution.sessions)."""

    rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move/wrap the model for this session (DDP under Ray Train)."""
        ...

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The state saved by the last `report`, when this run is a resume."""
        ...

    def report(self, metrics: dict[str, float], state: dict[str, Any], is_best: bool) -> None:
        """Publish an epoch's metrics and its checkpoint state."""
        ...

    def log_setup(self, setup: RunSetup) -> None:
        """Record how the run trains on its device (run tags; rank 0's under DDP)."""
        ...


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and CUDA generators (data order has its own seeded generators)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def build_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                           nesterov=o.nesterov and o.momentum > 0)


def lr_factor(cfg: TrainConfig, method: SelfKDMethod, epoch: int) -> float:
    """Multiplier of the base LR at `epoch`: warm-up, then cosine/step within the method's cycle."""
    s = cfg.sched
    if epoch < s.warmup_epochs:
        return (epoch + 1) / (s.warmup_epochs + 1)
    pos, length = method.lr_schedule_position(epoch, cfg.train.epochs)
    if s.name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * pos / max(1, length)))
    if s.name == "step":
        return s.gamma ** sum(pos >= m * length for m in s.milestones)
    return 1.0


def autocast_for(cfg: TrainConfig, device: torch.device) -> Any:
    """The autocast context of forward passes (`train.amp`; `auto` settled for `device`)."""
    amp = amp_for(cfg.train, device)
    if amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_one_epoch(model: nn.Module, method: SelfKDMethod, loader: Any,
                    optimizer: torch.optim.Optimizer, cfg: TrainConfig, device: torch.device,
                    scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """One pass over `loader`; returns the mean of the loss and of every named term.

    Sums stay on the device and are read once at the end: a per-step `.item()` would
    synchronise the GPU every step. `time_first_step_s` (seconds from the call to the end of
    the first optimiser step) lets `fit` measure a run's start-up cost.
    """
    model.train()
    sums: dict[str, torch.Tensor] = {}
    steps = 0
    wait = 0.0
    start = time.perf_counter()
    tick = start
    first_step = 0.0
    for x, y, index in loader:
        wait += time.perf_counter() - tick
        with autocast_for(cfg, device):
            out = model(x, y, index)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(out.loss).backward()
            scaler.unscale_(optimizer)
        else:
            out.loss.backward()
        if cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        method.on_train_batch_end(out)
        detached = {"loss": out.loss.detach(), **{k: v.detach() for k, v in out.terms.items()}}
        for k, v in detached.items():
            sums[k] = sums[k] + v.float() if k in sums else v.float()
        steps += 1
        tick = time.perf_counter()
        if steps == 1:
            first_step = tick - start
    elapsed = time.perf_counter() - start
    means = {train_term(k): float(v) / max(1, steps) for k, v in sums.items()}
    means["time_data_frac"] = wait / elapsed if elapsed > 0 else 0.0
    means["time_first_step_s"] = first_step
    return means


@torch.no_grad()
def evaluate(method: SelfKDMethod, loader: Any, cfg: TrainConfig, device: torch.device,
             prefix: str = "val") -> dict[str, float]:
    """Accuracy of every exit, the ensemble and the dynamic early-exit policy on `loader`.

    Under DDP each rank evaluates its shard and the sums are all-reduced, so every rank gets
    the metrics of the whole split.
    """
    method.eval()
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), device=device)
    costs = None
    for x, y, _ in loader:
        with autocast_for(cfg, device):
            logits = method.predict(x)
        if costs is None:
            costs = method.exit_costs(x)
        batch = exit_metric_sums(logits, y, costs, cfg.eval.thresholds, method.exit_policy())
        batch["loss"] = nn.functional.cross_entropy(logits["final"].float(), y, reduction="sum")
        for k, v in batch.items():
            sums[k] = sums[k] + v if k in sums else v
        count += y.numel()
    keys = sorted(sums)
    vector = torch.stack([sums[k] for k in keys] + [count])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(vector)
    total = float(vector[-1])
    metrics = {}
    for k, v in zip(keys, vector[:-1].tolist()):
        metrics[split_key(prefix, k)] = v / total
    metrics.update({split_key(prefix, k): v for k, v in exit_compute(costs or {}).items()})
    return metrics


def objective_value(objective: Objective, metrics: dict[str, float]) -> float:
    """The epoch's value of the search's objective (a training or validation metric)."""
    if objective.metric not in metrics:
        raise ConfigError(f"the objective {objective.metric!r} is not among this run's metrics "
                        f"({', '.join(sorted(metrics)[:8])}, ...)",
                        "set the search space's metric: to one the method reports, e.g. val_acc or val_loss")
    return float(metrics[objective.metric])


def mean_over_ranks(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """Under DDP each rank trains on its own shard: average the epoch's means over the ranks
    so the logged training loss describes all the data, not rank 0's share. Every rank has
    the same keys (same method), so one all-reduce suffices."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return metrics
    keys = sorted(metrics)
    vector = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(vector)
    return dict(zip(keys, (vector / torch.distributed.get_world_size()).tolist()))


def checkpoint_state(method: SelfKDMethod, optimizer: torch.optim.Optimizer,
                     scheduler: Any, scaler: Any, epoch: int, best: dict[str, float],
                     metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """Everything needed to continue exactly after `epoch` (method state included), plus that
    epoch's metrics so a run resumed after its last epoch can still hand them back."""
    return {
        "model": method.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "best": dict(best),
        "rng": torch.get_rng_state(),
        "metrics": dict(metrics or {}),
    }


def fit(cfg: TrainConfig, session: Session) -> dict[str, float]:
    """Train `cfg` to the end of its epoch budget (or from a checkpoint); returns final metrics.

    `auto` numerics are settled for the session's device first (`skd_ray.training.hardware`)
    and logged on the run; on CUDA, cuDNN's autotuner is switched on.

    Optional session attributes: when the session knows when its trial started (`started_at`,
    wall-clock seconds), the first epoch this process trains reports `time_startup_s`: trial
    start to the end of the first optimiser step, i.e. what the framework cost before training
    began. When it capped the GPU's memory at the trial's share (`gpu_share`), running out of
    it ends the run with `GpuShareExceeded` (one line: the share, what the run held, the fix).
    """
    device = session.device
    setup = resolve_setup(cfg.train, describe_device(device), getattr(session, "gpu_share", None))
    if setup.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    session.log_setup(setup)
    try:
        return train_run(with_setup(cfg, setup), session)
    except torch.OutOfMemoryError as err:
        if setup.gpu_share is None:
            raise
        raise share_exceeded(err, setup.gpu_share, device) from None


def train_run(cfg: TrainConfig, session: Session) -> dict[str, float]:
    """`fit`'s loop, for a config whose numerics are concrete (no `auto`)."""
    seed_everything(cfg.train.seed)
    device = session.device
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    data, method = build_run(cfg)
    method = method.to(device)
    if cfg.train.channels_last:
        method = method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, method.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(cfg, method, e))
    scaler = torch.amp.GradScaler(device.type) if cfg.train.amp == "fp16" else None
    start_epoch, best = 0, {}
    objective = Objective(cfg.eval.objective, cfg.eval.objective_mode)
    state = session.load_checkpoint()
    if state is not None:
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        start_epoch, best = int(state["epoch"]), dict(state["best"])
    model = session.prepare_model(method)
    if cfg.train.compile != "off":
        # The training forward only: evaluation, hooks and checkpoints use the plain module,
        # whose parameters the compiled one shares.
        model = torch.compile(model, mode=cfg.train.compile)
    loaders = {part: build_loader(data, part, cfg, rank=session.rank, world_size=session.world_size,
                                  device=device) for part in ("train", "val")}
    metrics: dict[str, float] = dict(state.get("metrics") or {}) if state is not None else {}
    started_at = getattr(session, "started_at", None)
    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        wall0 = time.time()
        method.on_epoch_start(epoch, cfg.train.epochs)
        loaders["train"].set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        train_metrics = train_one_epoch(model, method, loaders["train"], optimizer, cfg, device, scaler)
        first_step = train_metrics.pop("time_first_step_s")
        train_metrics = mean_over_ranks(train_metrics, device)
        if started_at is not None and epoch == start_epoch:
            train_metrics[TIME_STARTUP_S] = wall0 + first_step - started_at
        method.on_epoch_end(epoch, cfg.train.epochs)
        if TRAIN_LOSS not in train_metrics:
            raise DataError(f"epoch {epoch + 1} trained no batch: the training split on this worker is "
                            f"smaller than train.batch_size={cfg.train.batch_size}",
                            "lower train.batch_size, raise data.train_subset or use fewer workers")
        if not math.isfinite(train_metrics[TRAIN_LOSS]):
            raise TrainingDiverged(
                f"loss became {train_metrics[TRAIN_LOSS]} in epoch {epoch + 1}",
                "lower optim.lr or the method's loss weights, or set train.grad_clip",
            )
        scheduler.step()
        val_metrics = evaluate(method, loaders["val"], cfg, device)
        value = objective_value(objective, {**train_metrics, **val_metrics})
        is_best = objective.improves(value, best.get(objective.best_key))
        for k, v in val_metrics.items():
            if is_accuracy(k, "val"):
                best[metric_names.best(k)] = max(best.get(metric_names.best(k), -1.0), v)
        if is_best or objective.best_key not in best:  # the objective's best, in its own direction
            best[objective.best_key] = value
        if is_best:  # reported, so readers need no metric history to find the best checkpoint's epoch
            best[BEST_EPOCH] = epoch + 1
        if cfg.eval.test_at_end and epoch + 1 == cfg.train.epochs:
            # Final evaluation only: the last epoch's model is scored on the test split, once.
            test_loader = build_loader(data, "test", cfg, rank=session.rank, world_size=session.world_size,
                                       device=device)
            val_metrics.update(evaluate(method, test_loader, cfg, device, prefix="test"))
        metrics = {EPOCH: epoch + 1, LR: lr, **train_metrics, **val_metrics, **best,
                   TIME_EPOCH_S: time.perf_counter() - t0}
        session.report(metrics, checkpoint_state(method, optimizer, scheduler, scaler, epoch + 1, best, metrics),
                       is_best)
    return metrics


def evaluate_split(cfg: TrainConfig, method: SelfKDMethod, part: str,
                   device: torch.device | str = "cpu") -> dict[str, float]:
    """Evaluate a trained method on one split (`test` for the chosen configuration)."""
    data = load_data(cfg.data)
    loader = build_loader(data, part, cfg, device=device)
    return evaluate(method, loader, cfg, torch.device(device), prefix=part)
