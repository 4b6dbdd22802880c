"""The training state on disk: one file name, an atomic write and a safe load, shared by
every session (local, Ray Train worker, Tune trial, DDP pool) and by export."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

CHECKPOINT_FILE = "state.pt"


def save_state(state: dict[str, Any], directory: Path) -> Path:
    """Write a checkpoint atomically (tmp file + rename) so a kill never leaves half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state(source: Path | BinaryIO) -> dict[str, Any]:
    """Load a checkpoint (a file, or its bytes as a stream) with `weights_only=True`: no
    pickled code runs on load."""
    return torch.load(source, map_location="cpu", weights_only=True)
