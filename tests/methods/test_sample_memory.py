"""SampleMemory: rows in host memory in half precision, state_dict names, chunked DDP merge,
and checkpoints that resume at another world size."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

from skd_ray.methods import sample_memory
from skd_ray.methods.sample_memory import SampleMemory
from tests.helpers.handcalc import run_two_ranks


def test_rows_are_host_half_precision_and_not_buffers():
    m = SampleMemory(5, 3)
    assert m.values.dtype == torch.float16 and m.values.device.type == "cpu"
    assert list(m.named_buffers()) == [] and m.ddp_ignore_names("memory") == []
    m.to(torch.float64)  # module conversions (and .to(device)) leave the rows alone
    assert m.values.dtype == torch.float16
    assert set(m.state_dict()) == {"values", "filled"}
    assert m.nbytes() == 5 * 3 * 2 + 5 + 5


def test_read_gives_float32_rows_rounded_to_half_precision():
    m = SampleMemory(4, 2)
    rows = torch.tensor([[0.1, 1 / 3], [1e-7, 123.456]])
    m.write(torch.tensor([2, 0]), rows)
    got, filled = m.read(torch.tensor([0, 1, 2]))
    assert got.dtype == torch.float32 and filled.tolist() == [True, False, True]
    # float16 by hand: 0.1 -> 0.0999755859375, 1/3 -> 0.333251953125 (11 significant bits),
    # 1e-7 -> the subnormal 1.1920928955078125e-07 (2^-23), 123.456 -> 123.4375
    assert got[2].tolist() == [0.0999755859375, 0.333251953125]
    assert got[0].tolist() == [1.1920928955078125e-07, 123.4375]
    assert got[1].tolist() == [0.0, 0.0]
    exact = SampleMemory(4, 2, dtype=torch.float32)
    exact.write(torch.tensor([2, 0]), rows)
    assert torch.equal(exact.read(torch.tensor([2, 0]))[0], rows)


def test_state_dict_round_trip_and_float32_checkpoints():
    m = SampleMemory(4, 2)
    m.write(torch.tensor([1, 3]), torch.tensor([[0.5, 0.25], [2.0, 4.0]]))
    fresh = SampleMemory(4, 2)
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.values, m.values) and torch.equal(fresh.filled, m.filled)
    assert not fresh.fresh.any()  # rows loaded from a checkpoint are not this rank's news
    old = {"values": torch.full((4, 2), 0.1), "filled": torch.ones(4, dtype=torch.bool)}  # float32 buffers
    fresh.load_state_dict(old)
    assert torch.equal(fresh.values, torch.full((4, 2), 0.1).half())
    with pytest.raises(RuntimeError, match="size mismatch"):
        SampleMemory(3, 2).load_state_dict(old)
    with pytest.raises(RuntimeError, match="Missing key"):
        fresh.load_state_dict({"values": old["values"]})


def _merge(rank: int) -> None:
    sample_memory.SYNC_CHUNK_ROWS = 3  # blocks of indices 0-2, 3-5, 6-8, 9
    m = SampleMemory(10, 2)
    if rank == 0:
        m.write(torch.tensor([0, 2, 4, 6, 8]), torch.arange(10.0).view(5, 2))
        m.write(torch.tensor([9]), torch.tensor([[1.0, 3.0]]))  # also written on rank 1
    else:
        m.write(torch.tensor([9, 1]), torch.tensor([[3.0, 5.0], [-1.0, -2.0]]))
    m.sync()
    expected = torch.zeros(10, 2)
    expected[[0, 2, 4, 6, 8]] = torch.arange(10.0).view(5, 2)
    expected[1] = torch.tensor([-1.0, -2.0])
    expected[9] = torch.tensor([2.0, 4.0])  # the mean of the two ranks' rows
    assert torch.equal(m.values.float(), expected)
    assert m.filled.tolist() == [True, True, True, False, True, False, True, False, True, True]
    assert not m.fresh.any()
    m.sync()  # nothing new: a no-op
    assert torch.equal(m.values.float(), expected)
    path = os.environ["SKD_TEST_CHECKPOINT"]
    if rank == 0:
        torch.save(m.state_dict(), path)


def test_rows_merge_in_chunks_and_rank_zeros_checkpoint_resumes_in_one_process():
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SKD_TEST_CHECKPOINT"] = os.path.join(tmp, "memory.pt")
        try:
            run_two_ranks(_merge)
            single = SampleMemory(10, 2)
            single.load_state_dict(torch.load(os.environ["SKD_TEST_CHECKPOINT"]))
        finally:
            del os.environ["SKD_TEST_CHECKPOINT"]
    rows, filled = single.read(torch.tensor([9, 1, 3]))
    assert rows.tolist() == [[2.0, 4.0], [-1.0, -2.0], [0.0, 0.0]] and filled.tolist() == [True, True, False]
