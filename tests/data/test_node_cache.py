"""The per-process and node-local cache of decoded datasets (skd_ray.data.node_cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skd_ray.data import node_cache
from skd_ray.data.batches import TensorSplit


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv(node_cache.CACHE_ENV, str(directory))
    node_cache.clear_in_process()
    yield directory
    node_cache.clear_in_process()


def splits(value: float) -> tuple[TensorSplit, TensorSplit]:
    return (TensorSplit(torch.full((3, 1, 2, 2), value), torch.arange(3)),
            TensorSplit(torch.full((2, 1, 2, 2), -value), torch.arange(2)))


class Builder:
    """Counts decodes, the cost the cache exists to avoid."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> tuple[TensorSplit, TensorSplit]:
        self.calls += 1
        return splits(self.value)


def test_a_new_process_reads_the_node_cache_instead_of_decoding(cache: Path) -> None:
    first = Builder(1.0)
    train, test = node_cache.cached_splits("toy", ("a",), first)
    assert first.calls == 1 and len(list(cache.glob("toy-*.pt"))) == 1
    assert node_cache.cached_splits("toy", ("a",), first)[0] is train  # same process: same tensors
    node_cache.clear_in_process()  # what a fresh Ray worker process starts with
    later = Builder(99.0)
    train2, test2 = node_cache.cached_splits("toy", ("a",), later)
    assert later.calls == 0
    assert torch.equal(train2.images, train.images) and torch.equal(test2.labels, test.labels)


def test_changed_sources_are_decoded_again(cache: Path) -> None:
    node_cache.cached_splits("toy", ("v1",), Builder(1.0))
    node_cache.clear_in_process()
    changed = Builder(2.0)
    train, _ = node_cache.cached_splits("toy", ("v2",), changed)
    assert changed.calls == 1 and float(train.images[0, 0, 0, 0]) == 2.0


def test_an_unreadable_cache_file_is_decoded_again(cache: Path) -> None:
    node_cache.cached_splits("toy", ("a",), Builder(1.0))
    (path,) = cache.glob("toy-*.pt")
    path.write_bytes(b"truncated")
    node_cache.clear_in_process()
    again = Builder(3.0)
    train, _ = node_cache.cached_splits("toy", ("a",), again)
    assert again.calls == 1 and float(train.images[0, 0, 0, 0]) == 3.0


def test_off_disables_the_node_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(node_cache.CACHE_ENV, "off")
    node_cache.clear_in_process()
    assert node_cache.cache_dir() is None
    builder = Builder(1.0)
    node_cache.cached_splits("toy", ("a",), builder)
    node_cache.clear_in_process()
    node_cache.cached_splits("toy", ("a",), builder)
    assert builder.calls == 2


def test_the_process_keeps_only_the_latest_datasets(cache: Path) -> None:
    for name in ("one", "two", "three"):
        node_cache.cached_splits(name, (), Builder(1.0))
    assert len(node_cache._in_process) == node_cache.IN_PROCESS_ENTRIES


def test_fingerprint_follows_file_contents(tmp_path: Path) -> None:
    f = tmp_path / "data.bin"
    f.write_bytes(b"abc")
    before = node_cache.file_fingerprint([f, tmp_path / "missing"])
    assert len(before) == 1
    f.write_bytes(b"abcd")
    assert node_cache.file_fingerprint([f]) != before


def test_digits_through_the_node_cache_equal_a_fresh_decode(cache: Path) -> None:
    from skd_ray.data.sources import _decode_digits, load_digits_splits

    cached_train, cached_test = load_digits_splits()
    node_cache.clear_in_process()
    from_file, _ = load_digits_splits()
    fresh_train, fresh_test = _decode_digits(0.2, 0)
    assert torch.equal(from_file.images, fresh_train.images) and torch.equal(cached_test.labels, fresh_test.labels)
    assert torch.equal(cached_train.labels, fresh_train.labels)
