"""Accuracy of every exit, of their ensemble and of the dynamic early-exit policy.

Dynamic early exit (BYOT): take the first exit, shallow to deep, whose maximum softmax
probability reaches its threshold; if none does, answer with the ensemble of all exits. The
method's `ExitPolicy` says what the ensemble averages (logits, as the BYOT journal code does,
or probabilities) and may give each exit its own threshold as an offset to the swept one.
The policy's compute per sample is the cumulative cost of the exits it ran. Results are sums
over samples so that shards of a distributed evaluation add up exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skd_ray.methods.base import FINAL, ExitCost, ExitPolicy
from skd_ray.training.metrics import (
    ENSEMBLE,
    acc,
    batch_key,
    compute,
    compute_answers,
    dynamic_answer,
    is_dynamic,
    threshold_of,
)


def exit_thresholds(threshold: float, num_exits: int, policy: ExitPolicy) -> torch.Tensor:
    """Per-exit thresholds at swept value `threshold`: plus the policy's offsets, in [0, 1]."""
    offsets = torch.tensor(policy.threshold_offsets or (0.0,) * num_exits, dtype=torch.float64)
    if offsets.numel() != num_exits:
        raise ValueError(f"{offsets.numel()} threshold offsets for {num_exits} exits")
    return (threshold + offsets).clamp(0.0, 1.0)


def exit_metric_sums(logits: dict[str, torch.Tensor], y: torch.Tensor,
                     costs: dict[str, ExitCost], thresholds: list[float],
                     policy: ExitPolicy | None = None) -> dict[str, torch.Tensor]:
    """Per-batch sums: correct counts per exit, ensemble, and dynamic policy per threshold.

    Keys: `acc.<exit>`, `acc.ensemble`, `acc.dynamic_<t>`, `compute.dynamic_<t>` (sums over
    the batch; divide by the sample count for means). Single-exit methods get `acc.final`.
    """
    policy = policy or ExitPolicy()
    sums: dict[str, torch.Tensor] = {}
    probs = {name: torch.softmax(z.float(), dim=1) for name, z in logits.items()}
    for name, z in logits.items():
        sums[batch_key("acc", name)] = (z.argmax(1) == y).sum().float()
    if len(logits) == 1:
        return sums
    names = list(logits)
    assert names[-1] == FINAL, "predict() must list the deployable exit last"
    stacked = torch.stack([probs[n] for n in names])  # (exits, batch, classes)
    if policy.ensemble == "softmax":
        ensemble = stacked.mean(0)
    else:
        ensemble = torch.stack([logits[n].float() for n in names]).mean(0)
    sums[batch_key("acc", ENSEMBLE)] = (ensemble.argmax(1) == y).sum().float()
    conf, pred = stacked.max(dim=2)  # (exits, batch)
    cumulative = torch.tensor([costs[n].cumulative for n in names], device=y.device)
    for t in thresholds:
        per_exit = exit_thresholds(t, len(names), policy).to(conf.device, conf.dtype)
        confident = conf >= per_exit[:, None]
        any_conf = confident.any(0)
        first = torch.where(any_conf, confident.float().argmax(0), torch.full_like(y, len(names) - 1))
        chosen = pred.gather(0, first[None]).squeeze(0)
        chosen = torch.where(any_conf, chosen, ensemble.argmax(1))
        sums[batch_key("acc", dynamic_answer(t))] = (chosen == y).sum().float()
        sums[batch_key("compute", dynamic_answer(t))] = cumulative[first].sum()
    return sums


def exit_compute(costs: dict[str, ExitCost]) -> dict[str, float]:
    """Relative compute (MACs / the plain backbone's) of answering with each exit alone, and of
    the ensemble, which must run every exit head: `compute.<exit>`, `compute.ensemble`.

    Single-exit methods get nothing: their only exit is the unit of compute.
    """
    if len(costs) <= 1:
        return {}
    out = {batch_key("compute", name): cost.standalone for name, cost in costs.items()}
    out[batch_key("compute", ENSEMBLE)] = max(cost.cumulative for cost in costs.values())
    return out


@dataclass(frozen=True)
class TradeoffPoint:
    """One way to answer: an exit, the ensemble or the dynamic policy at one threshold."""

    label: str  # exit name, "ensemble", or the threshold as text
    accuracy: float
    compute: float  # relative to the plain backbone (the deployable network = 1)


@dataclass(frozen=True)
class Tradeoff:
    """Accuracy versus compute of every exit, the ensemble and the dynamic policy per threshold."""

    exits: list[TradeoffPoint]  # cheapest first; the deployable exit is named FINAL
    ensemble: TradeoffPoint | None
    dynamic: list[TradeoffPoint]  # lowest threshold first


def tradeoff_from_metrics(metrics: dict[str, float], prefix: str = "val") -> Tradeoff | None:
    """Read the trade-off back from evaluation metrics as `engine.evaluate` names them
    (`<prefix>_acc.<exit>`, `<prefix>_compute.<exit>`, `<prefix>_acc.dynamic_t<t>`, ...).

    None for single-exit methods, which log no compute metrics.
    """
    exits, ensemble, dynamic = [], None, []
    for name in compute_answers(metrics, prefix):
        key = acc(prefix) if name == FINAL else acc(prefix, name)
        if key not in metrics:
            continue
        cost = metrics[compute(prefix, name)]
        if is_dynamic(name):
            dynamic.append(TradeoffPoint(threshold_of(name), metrics[key], cost))
        elif name == ENSEMBLE:
            ensemble = TradeoffPoint(name, metrics[key], cost)
        else:
            exits.append(TradeoffPoint(name, metrics[key], cost))
    if not exits:
        return None
    exits.sort(key=lambda p: p.compute)
    dynamic.sort(key=lambda p: float(p.label))
    return Tradeoff(exits, ensemble, dynamic)
