"""Decoded datasets kept per process and per node, so trials do not decode them again.

A search trains trial after trial on the same data. Decoding costs 0.5-2 s a time
(importing scikit-learn alone takes ~1 s for digits; CIFAR is unpickled from python batches),
and every Ray Train worker is a fresh process. So decoded tensors are kept twice:

- in this process (a Tune trial process that trains trial after trial in place), and
- as one file per dataset in a node-local directory, read back in milliseconds by any later
  process on the node (Ray Train workers of later trials).

The key is the dataset's name, its arguments and a fingerprint of its source files (path,
size, modification time), so changed files are decoded again. Writes are atomic, and an
unreadable cache file is decoded again rather than trusted. Callers only index the cached
tensors (new tensors), never write into them. `SKD_RAY_DATA_CACHE=off` disables the node
cache; `SKD_RAY_DATA_CACHE=DIR` moves it (default: <tmp>/skd_ray_data_cache_<uid>).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from skd_ray.data.batches import TensorSplit

CACHE_ENV = "SKD_RAY_DATA_CACHE"
IN_PROCESS_ENTRIES = 2  # a cross-dataset search alternates at most between a couple

Splits = tuple[TensorSplit, TensorSplit]
_in_process: OrderedDict[str, Splits] = OrderedDict()


def file_fingerprint(paths: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of each existing file, sorted: changes when the data changes."""
    out = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path.resolve()), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


def cache_dir() -> Path | None:
    """The node-local cache directory, or None when disabled."""
    setting = os.environ.get(CACHE_ENV, "")
    if setting.lower() == "off":
        return None
    if setting:
        return Path(setting)
    return Path(tempfile.gettempdir()) / f"skd_ray_data_cache_{os.getuid()}"


def cached_splits(name: str, key_parts: tuple, build: Callable[[], Splits]) -> Splits:
    """`build()`'s (train, test) splits, from this process or the node cache when known."""
    key = f"{name}-{hashlib.sha256(repr(key_parts).encode()).hexdigest()[:20]}"
    if key in _in_process:
        _in_process.move_to_end(key)
        return _in_process[key]
    splits = _read(key)
    if splits is None:
        splits = build()
        _write(key, splits)
    _in_process[key] = splits
    while len(_in_process) > IN_PROCESS_ENTRIES:
        _in_process.popitem(last=False)
    return splits


def _read(key: str) -> Splits | None:
    directory = cache_dir()
    path = directory / f"{key}.pt" if directory else None
    if path is None or not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return (TensorSplit(blob["train_images"], blob["train_labels"]),
                TensorSplit(blob["test_images"], blob["test_labels"]))
    except Exception:  # truncated or foreign file: decode again
        return None


def _write(key: str, splits: Splits) -> None:
    directory = cache_dir()
    if directory is None:
        return
    train, test = splits
    tmp = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        os.close(fd)
        torch.save({"train_images": train.images, "train_labels": train.labels,
                    "test_images": test.images, "test_labels": test.labels}, tmp)
        os.replace(tmp, directory / f"{key}.pt")
    except OSError:
        # A read-only or full disk only costs the next process a decode.
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def clear_in_process() -> None:
    """Forget what this process holds (tests, or to free memory between searches)."""
    _in_process.clear()
