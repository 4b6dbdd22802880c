"""PS-KD: alpha schedule, soft targets from the per-sample memory by hand, state, DDP sync."""

from __future__ import annotations

import pytest
import torch

from skd_ray.errors import ConfigError
from skd_ray.methods import MethodContext
from skd_ray.methods.pskd import Pskd, PskdParams
from tests.helpers.handcalc import (
    batch,
    close,
    cross_entropy,
    run_two_ranks,
    soft_cross_entropy,
    softmax,
    tiny_backbone,
)

N = 6


def make(seed: int = 0, alpha_T: float = 0.8, n: int = N) -> Pskd:
    return Pskd(tiny_backbone(seed=seed), PskdParams(alpha_T=alpha_T), MethodContext(num_train_samples=n))


def test_alpha_grows_linearly_to_alpha_T():
    m = make()
    assert [m.alpha_at(e, 10) for e in (0, 4, 9)] == pytest.approx([0.08, 0.4, 0.8])


def test_first_visit_uses_one_hot_and_stores_predictions():
    m = make()
    m.on_epoch_start(0, 4)
    x, y = batch(n=2)
    idx = torch.tensor([0, 4])
    out = m(x, y, idx)
    z = m.backbone(x)
    assert close(out.loss, cross_entropy(z, y))  # alpha_t > 0, but nothing remembered yet
    assert m.memory.filled.tolist() == [True, False, False, False, True, False]
    assert close(m.memory.values[idx], softmax(z), tol=5e-4)  # half precision: 2^-11 relative


def test_targets_mix_one_hot_and_last_epoch_predictions():
    m = make()
    m.on_epoch_start(0, 4)
    x, y = batch(n=2)
    m(x, y, torch.tensor([0, 4]))
    remembered = m.memory.values[0].clone()
    m.on_epoch_start(1, 4)  # alpha_t = 0.8 * 2 / 4
    x2, y2 = batch(n=2, seed=7)
    out = m(x2, y2, torch.tensor([0, 5]))  # sample 0 seen before, sample 5 never
    z2 = m.backbone(x2)
    targets = torch.zeros(2, 4, dtype=torch.float64)
    targets[0, int(y2[0])] = 0.6
    targets[0] += 0.4 * remembered.double()
    targets[1, int(y2[1])] = 1.0
    assert close(out.loss, soft_cross_entropy(targets, z2))
    assert close(m.memory.values[0], softmax(z2)[0], tol=5e-4)  # refreshed


def test_memory_is_not_differentiable_and_gradients_reach_the_backbone():
    m = make()
    m.on_epoch_start(1, 4)
    out = m(*batch(n=2), torch.tensor([1, 2]))
    out.loss.backward()
    assert not m.memory.values.requires_grad
    assert m.backbone.fc.weight.grad.abs().sum() > 0


def test_state_dict_round_trip_gives_identical_next_step():
    m = make()
    m.on_epoch_start(0, 4)
    m(*batch(n=2), torch.tensor([0, 4]))
    state = m.state_dict()
    assert {"memory.values", "memory.filled"} <= set(state)
    assert "memory.fresh" not in state  # rank-local bookkeeping, not checkpointed
    fresh = make(seed=42)
    fresh.load_state_dict(state)
    for module in (m, fresh):
        module.on_epoch_start(1, 4)
    x, y = batch(n=2, seed=3)
    idx = torch.tensor([4, 1])
    assert close(m(x, y, idx).loss, fresh(x, y, idx).loss, tol=1e-7)


def test_needs_indices_and_training_set_size():
    m = make()
    with pytest.raises(ValueError):
        m(*batch(n=2))
    with pytest.raises(ValueError):
        make(n=0)(*batch(n=2), torch.tensor([0, 1]))


def test_validate_params_rejects_impossible_values():
    with pytest.raises(ConfigError):
        Pskd.validate_params(PskdParams(alpha_T=1.5), 4)
    Pskd.validate_params(PskdParams(), 4)


def _distributed_memory(rank: int) -> None:
    m = Pskd(tiny_backbone(seed=0), PskdParams(), MethodContext(num_train_samples=8))
    ddp = torch.nn.parallel.DistributedDataParallel(m)
    m.on_epoch_start(0, 4)
    x, y = batch(n=4, seed=rank)
    idx = torch.arange(4) + 4 * rank  # disjoint shards
    ddp(x, y, idx).loss.backward()
    own = m.memory.values[idx].clone()
    x2, y2 = batch(n=2, seed=10 + rank)
    ddp(x2, y2, torch.arange(2) + 4 * rank).loss.backward()  # rewrites 2 of this rank's rows
    own[:2] = m.memory.values[4 * rank:4 * rank + 2]
    assert torch.equal(m.memory.values[idx], own), "DDP overwrote this rank's rows with rank 0's"
    m.on_epoch_end(0, 4)  # merge before the epoch's checkpoint
    assert bool(m.memory.filled.all())
    assert torch.equal(m.memory.values[idx], own)
    gathered = [torch.zeros_like(m.memory.values) for _ in range(2)]
    torch.distributed.all_gather(gathered, m.memory.values.clone())
    assert torch.equal(gathered[0], gathered[1])


def test_memory_is_merged_across_ranks():
    run_two_ranks(_distributed_memory)
