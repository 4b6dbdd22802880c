"""SRDL: stage switch, frozen snapshot, online vs cached teacher, LR restart, exact resume."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from skd_ray.errors import ConfigError
from skd_ray.methods import MethodContext
from skd_ray.methods.srdl import Srdl, SrdlParams
from skd_ray.training.engine import lr_factor
from skd_ray.training.resolve import resolve_config
from tests.helpers.handcalc import batch, close, cross_entropy, kl_t, run_two_ranks, tiny_backbone

N = 6  # training-set size of the tiny runs
TOTAL = 4  # epoch budget; snapshot_at 0.5 -> stage 2 starts at epoch 2


def make(seed: int = 0, **kw) -> Srdl:
    params = SrdlParams(**{"alpha": 0.7, "temperature": 2.5, "teacher": "online", **kw})
    return Srdl(tiny_backbone(seed=seed), params, MethodContext(num_train_samples=N))


def sgd_step(m: Srdl, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05)
    opt.zero_grad()
    m(x, y, idx).loss.backward()
    opt.step()


def to_stage2(m: Srdl) -> Srdl:
    """One stage-1 step (so backbone != init), then the snapshot epoch, then another step."""
    x, y = batch(n=4, seed=5)
    m.on_epoch_start(0, TOTAL)
    sgd_step(m, x, y, torch.tensor([1, 2, 1, 2]))
    m.on_epoch_start(2, TOTAL)
    sgd_step(m, x, y, torch.tensor([1, 2, 1, 2]))  # the backbone moves away from the snapshot
    return m


def test_stage1_is_plain_cross_entropy():
    m = make()
    m.on_epoch_start(0, TOTAL)
    x, y = batch()
    out = m(x, y, torch.tensor([0, 4]))
    assert int(m.stage) == 1
    assert close(out.loss, cross_entropy(m.backbone(x), y))
    assert float(out.terms["kd"]) == 0.0


def test_snapshot_copies_backbone_at_the_snapshot_epoch_and_stays_frozen():
    m = make()
    x, y = batch(seed=5)
    m.on_epoch_start(0, TOTAL)
    sgd_step(m, x, y, torch.tensor([0, 1]))
    m.on_epoch_start(1, TOTAL)
    assert int(m.stage) == 1
    assert not torch.equal(m.snapshot.fc.weight, m.backbone.fc.weight)
    m.on_epoch_start(2, TOTAL)
    assert int(m.stage) == 2
    for k, v in m.backbone.state_dict().items():
        assert torch.equal(m.snapshot.state_dict()[k], v), k
    assert all(not p.requires_grad for p in m.snapshot.parameters())
    m.train()
    assert not m.snapshot.training and m.backbone.training


def test_stage2_online_loss_matches_formula():
    m = make()
    x, y = batch(n=4, seed=5)
    m.on_epoch_start(0, TOTAL)
    sgd_step(m, x, y, torch.tensor([1, 2, 1, 2]))
    teacher = copy.deepcopy(m.backbone).eval()  # what the snapshot must hold
    m.on_epoch_start(2, TOTAL)
    sgd_step(m, x, y, torch.tensor([1, 2, 1, 2]))
    xb, yb = batch()
    out = m(xb, yb, torch.tensor([0, 4]))
    z, zt = m.backbone(xb), teacher(xb)
    assert close(out.terms["kd"], kl_t(zt, z, 2.5))
    assert close(out.loss, cross_entropy(z, yb) + 0.7 * kl_t(zt, z, 2.5))
    assert out.terms["kd"].item() > 0


def test_snapshot_never_receives_gradients():
    m = to_stage2(make())
    x, y = batch()
    m(x, y, torch.tensor([0, 4])).loss.backward()
    assert all(p.grad is None for p in m.snapshot.parameters())
    assert m.backbone.fc.weight.grad is not None and m.backbone.fc.weight.grad.abs().sum() > 0


def test_cached_teacher_is_filled_per_sample_and_reused():
    m2 = to_stage2(make(teacher="cached"))
    assert m2.cache.filled.tolist() == [False, True, True, False, False, False]  # to_stage2's step
    x, y = batch()
    idx = torch.tensor([0, 4])
    first = m2(x, y, idx)
    expected_rows = m2.snapshot(x).half().float()  # the cache keeps half precision
    assert m2.cache.filled.tolist() == [True, True, True, False, True, False]
    assert torch.equal(m2.cache.values[idx].float(), expected_rows)
    # Change the snapshot: cached rows must not change, a new sample gets the new teacher.
    with torch.no_grad():
        m2.snapshot.fc.weight.add_(torch.randn_like(m2.snapshot.fc.weight))
    second = m2(x, y, idx)
    z = m2.backbone(x)
    assert close(second.terms["kd"], kl_t(expected_rows, z, 2.5))
    assert close(first.terms["kd"], kl_t(expected_rows, z, 2.5))
    mixed = m2(x, y, torch.tensor([0, 5]))
    teacher = torch.stack([expected_rows[0], m2.snapshot(x)[1].half().float()])
    assert close(mixed.terms["kd"], kl_t(teacher, m2.backbone(x), 2.5))


def test_online_teacher_follows_the_snapshot():
    m = to_stage2(make(teacher="online"))
    x, y = batch()
    before = m(x, y, torch.tensor([0, 4])).terms["kd"]
    with torch.no_grad():
        m.snapshot.fc.weight.add_(torch.randn_like(m.snapshot.fc.weight))
    after = m(x, y, torch.tensor([0, 4])).terms["kd"]
    assert not close(before, after)
    assert m.cache.num_samples == 0  # online runs keep no per-sample state


def test_reinit_restarts_the_backbone_but_keeps_the_snapshot():
    m = make(stage2_start="reinit")
    x, y = batch(seed=5)
    m.on_epoch_start(0, TOTAL)
    sgd_step(m, x, y, torch.tensor([0, 1]))
    trained = copy.deepcopy(m.backbone.state_dict())
    m.on_epoch_start(2, TOTAL)
    assert torch.equal(m.snapshot.stages[0][0].conv1.weight, trained["stages.0.0.conv1.weight"])
    assert not torch.equal(m.backbone.stages[0][0].conv1.weight, trained["stages.0.0.conv1.weight"])
    assert float(m.backbone.stages[0][0].bn1.running_var.mean()) == 1.0  # BN statistics reset too


def test_lr_schedule_restarts_at_stage_two():
    m = make(snapshot_at=0.3)
    assert m.snapshot_epoch(10) == 3
    assert [m.lr_schedule_position(e, 10) for e in (0, 2, 3, 9)] == [(0, 3), (2, 3), (0, 7), (6, 7)]
    flat = make(snapshot_at=0.3, lr_restart=False)
    assert flat.lr_schedule_position(7, 10) == (7, 10)
    cfg = resolve_config({"method": "srdl", "train.epochs": 10, "method.snapshot_at": 0.3})
    assert lr_factor(cfg, m, 3) == pytest.approx(1.0)  # cosine restarts from the top
    assert lr_factor(cfg, m, 2) < 0.3
    # Both stages always get at least one epoch.
    assert make(snapshot_at=0.95).snapshot_epoch(4) == 3
    assert make(snapshot_at=0.05).snapshot_epoch(4) == 1


@pytest.mark.parametrize("teacher", ["online", "cached"])
def test_state_dict_round_trip_resumes_exactly(teacher: str):
    m = to_stage2(make(teacher=teacher))
    x, y = batch()
    m(x, y, torch.tensor([0, 4]))  # fills cache rows 0 and 4 when cached
    state = m.state_dict()
    assert {"stage", "cache.values", "cache.filled"} <= set(state)
    assert set(state) == set(make(teacher=teacher).state_dict())  # keys stable across stages
    fresh = make(seed=123, teacher=teacher)
    fresh.load_state_dict(state)
    assert int(fresh.stage) == 2
    for k, v in state.items():
        assert torch.equal(fresh.state_dict()[k], v), k
    probe = copy.deepcopy(fresh)  # stage 2 right after loading, before any hook runs
    assert probe(x, y, torch.tensor([0, 4])).terms["kd"].item() > 0
    for module in (m, fresh):
        module.on_epoch_start(3, TOTAL)  # a later stage-2 epoch: must not re-snapshot
    assert torch.equal(fresh.snapshot.fc.weight, m.snapshot.fc.weight)
    idx = torch.tensor([4, 5])  # one cached row, one not yet
    assert close(m(x, y, idx).loss, fresh(x, y, idx).loss, tol=1e-7)


def test_validate_params_rejects_impossible_values():
    for bad in ({"snapshot_at": 0.0}, {"snapshot_at": 1.0}, {"stage2_start": "warm"},
                {"teacher": "ema"}, {"temperature": 0.0}, {"alpha": -1.0}):
        with pytest.raises(ConfigError):
            Srdl.validate_params(replace(SrdlParams(), **bad), 4)
    Srdl.validate_params(SrdlParams(), 4)


def _distributed_cache(rank: int) -> None:
    torch.manual_seed(100 + rank)  # different draws per rank: reinit must still agree
    m = Srdl(tiny_backbone(seed=0), SrdlParams(teacher="cached", stage2_start="reinit"),
             MethodContext(num_train_samples=8))
    ddp = torch.nn.parallel.DistributedDataParallel(m)
    torch.manual_seed(200 + rank)
    m.on_epoch_start(2, TOTAL)  # snapshot + reinit
    weights = [torch.zeros_like(m.backbone.fc.weight) for _ in range(2)]
    torch.distributed.all_gather(weights, m.backbone.fc.weight.detach().clone())
    assert torch.equal(weights[0], weights[1]), "re-initialised backbones differ across ranks"
    x, y = batch(n=4, seed=rank)
    idx = torch.arange(4) + 4 * rank  # disjoint shards
    ddp(x, y, idx).loss.backward()
    own = m.cache.values[idx].clone()
    with torch.no_grad():  # a changed snapshot exposes rows that were lost and recomputed
        m.snapshot.fc.bias.add_(torch.arange(4.0))
    ddp(x, y, idx).loss.backward()  # DDP must not overwrite this rank's rows with rank 0's
    assert torch.equal(m.cache.values[idx], own)
    m.on_epoch_end(2, TOTAL)  # merges the shards before the epoch's checkpoint
    assert bool(m.cache.filled.all())
    assert torch.equal(m.cache.values[idx], own)
    gathered = [torch.zeros_like(m.cache.values) for _ in range(2)]
    torch.distributed.all_gather(gathered, m.cache.values.clone())
    assert torch.equal(gathered[0], gathered[1])


def test_cache_is_merged_across_ranks_and_reinit_is_shared():
    run_two_ranks(_distributed_cache)


def _gather(t: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.zeros_like(t) for _ in range(2)]
    torch.distributed.all_gather(out, t.detach().clone().contiguous())
    return out


def _snapshot_agrees(rank: int) -> None:
    m = Srdl(tiny_backbone(seed=0), SrdlParams(teacher="online"), MethodContext(num_train_samples=8))
    ddp = torch.nn.parallel.DistributedDataParallel(m)
    m.train()
    m.on_epoch_start(0, TOTAL)
    x, y = batch(n=4, seed=10 + rank)  # each rank's own batch moves its BN running statistics
    ddp(x, y, torch.arange(4) + 4 * rank).loss.backward()
    mean = m.backbone.stem[1].running_mean
    assert not torch.equal(*_gather(mean)), "the test needs BN statistics that differ across ranks"
    rank0_backbone = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    for v in rank0_backbone.values():
        torch.distributed.broadcast(v, 0)
    m.on_epoch_start(2, TOTAL)  # the snapshot
    for k, v in m.snapshot.state_dict().items():
        a, b = _gather(v)
        assert torch.equal(a, b), f"snapshot {k} differs across ranks"
        assert torch.equal(v, rank0_backbone[k]), f"snapshot {k} is not rank 0's backbone"
    probe, _ = batch(n=3, seed=99)  # the same input on both ranks
    teacher = m.snapshot(probe)
    a, b = _gather(teacher)
    assert torch.equal(a, b), "the ranks distil from different teachers"
    # A run resumed from rank 0's checkpoint has the teacher every rank had before.
    state = {k: v.clone() for k, v in m.state_dict().items()}
    for v in state.values():
        torch.distributed.broadcast(v, 0)
    resumed = Srdl(tiny_backbone(seed=5), SrdlParams(teacher="online"), MethodContext(num_train_samples=8))
    resumed.load_state_dict(state)
    assert torch.equal(resumed.snapshot(probe), teacher)
    xb, yb = batch(n=4, seed=20 + rank)
    assert close(resumed(xb, yb).terms["kd"], m(xb, yb).terms["kd"], tol=1e-6)


def test_snapshot_is_identical_on_every_rank_and_in_the_checkpoint():
    run_two_ranks(_snapshot_agrees)
