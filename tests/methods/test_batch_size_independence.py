"""A configuration means the same at any world size: under DDP (per-rank batch B/2, gradients
averaged over 2 ranks) TESKD's feature loss and BYOT's hint give the single-process loss and
gradients at batch B. BatchNorm is left aside (eval mode: running statistics), since batch
statistics depend on the per-rank batch by design. The official reductions (batch sum,
torch.dist over the batch) do not have that property; the test shows by how much."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from skd_ray.methods.byot import Byot, ByotParams
from skd_ray.methods.teskd import Teskd, TeskdParams
from tests.helpers.handcalc import batch, close, run_two_ranks, tiny_backbone

B = 8


def build(name: str, official: bool) -> Any:
    backbone = tiny_backbone(seed=0)
    if name == "teskd":
        return Teskd(backbone, TeskdParams(w_fea=0.01, fea_reduction="sum" if official else "per_sample"))
    return Byot(backbone, ByotParams(hint_weight=0.5, hint_reduction="batch" if official else "per_sample"))


def feature_terms(out: Any) -> torch.Tensor:
    return sum(v for k, v in out.terms.items() if k.startswith(("fea_", "hint_")))


def _world_of_two(rank: int) -> None:
    x, y = batch(n=B, seed=3)  # the same global batch on both ranks
    half = slice(rank * B // 2, (rank + 1) * B // 2)
    for name in ("teskd", "byot"):
        for official in (False, True):
            single = build(name, official).eval()  # BatchNorm aside: running statistics
            whole = single(x, y)
            whole.loss.backward()
            method = build(name, official).eval()
            ddp = torch.nn.parallel.DistributedDataParallel(method)
            out = ddp(x[half], y[half])
            out.loss.backward()  # DDP averages the gradients over the ranks
            loss, feat = out.loss.detach().clone(), feature_terms(out).detach().clone()
            for t in (loss, feat):
                torch.distributed.all_reduce(t)
                t /= 2
            if not official:
                assert close(loss, whole.loss, tol=1e-5), name
                assert close(feat, feature_terms(whole), tol=1e-5), name
                for (k, p), q in zip(method.named_parameters(), single.parameters()):
                    assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), f"{name} {k}"
            elif name == "teskd":  # a batch sum: half the batch, half the loss
                assert close(feat, feature_terms(whole) / 2, tol=1e-5)
            else:  # one L2 norm over the batch: about 1/sqrt(2) of it on half the batch
                ratio = float(feat / feature_terms(whole))
                assert 0.6 < ratio < 0.8 and not close(feat, feature_terms(whole), tol=1e-2), ratio


def test_loss_and_gradients_at_world_size_two_equal_single_process_ones():
    run_two_ranks(_world_of_two)


@pytest.mark.parametrize("name", ["teskd", "byot"])
def test_per_sample_loss_of_a_batch_is_the_mean_of_its_halves(name: str):
    """The same property in one process: the mean of the two half-batch losses is the loss."""
    m = build(name, official=False).eval()
    x, y = batch(n=B, seed=3)
    halves = [m(x[:B // 2], y[:B // 2]).loss, m(x[B // 2:], y[B // 2:]).loss]
    assert close((halves[0] + halves[1]) / 2, m(x, y).loss)
