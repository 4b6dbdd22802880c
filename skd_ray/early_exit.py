"""Accuracy of every exit, of their ensemble and of the dynamic early-exit policy.

Dynamic early exit (BYOT): take the first exit, shallow to deep, whose maximum softmax
probability reaches the threshold; if none does, answer with the ensemble (mean softmax of
all exits). The policy's compute per sample is the cumulative cost of the exits it ran.
Results are sums over samples so that shards of a distributed evaluation add up exactly.
"""

from __future__ import annotations

import torch

from skd_ray.methods.base import FINAL, ExitCost


def threshold_key(threshold: float) -> str:
    """Metric-name fragment for a threshold, e.g. 0.95 -> 't0.95'."""
    return f"t{threshold:g}"


def exit_metric_sums(logits: dict[str, torch.Tensor], y: torch.Tensor,
                     costs: dict[str, ExitCost], thresholds: list[float]) -> dict[str, torch.Tensor]:
    """Per-batch sums: correct counts per exit, ensemble, and dynamic policy per threshold.

    Keys: `acc.<exit>`, `acc.ensemble`, `acc.dynamic_<t>`, `compute.dynamic_<t>` (sums over
    the batch; divide by the sample count for means). Single-exit methods get `acc.final`.
    """
    sums: dict[str, torch.Tensor] = {}
    probs = {name: torch.softmax(z.float(), dim=1) for name, z in logits.items()}
    for name, z in logits.items():
        sums[f"acc.{name}"] = (z.argmax(1) == y).sum().float()
    if len(logits) == 1:
        return sums
    names = list(logits)
    assert names[-1] == FINAL, "predict() must list the deployable exit last"
    stacked = torch.stack([probs[n] for n in names])  # (exits, batch, classes)
    ensemble = stacked.mean(0)
    sums["acc.ensemble"] = (ensemble.argmax(1) == y).sum().float()
    conf, pred = stacked.max(dim=2)  # (exits, batch)
    cumulative = torch.tensor([costs[n].cumulative for n in names], device=y.device)
    for t in thresholds:
        confident = conf >= t
        any_conf = confident.any(0)
        first = torch.where(any_conf, confident.float().argmax(0), torch.full_like(y, len(names) - 1))
        chosen = pred.gather(0, first[None]).squeeze(0)
        chosen = torch.where(any_conf, chosen, ensemble.argmax(1))
        key = threshold_key(t)
        sums[f"acc.dynamic_{key}"] = (chosen == y).sum().float()
        sums[f"compute.dynamic_{key}"] = cumulative[first].sum()
    return sums
