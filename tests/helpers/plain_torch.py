"""Run an exported model in a fresh Python that imports torch only (never skd_ray)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

RUN_EXPORTED = """
import sys
import torch
model = torch.export.load(sys.argv[1]).module()
out = model(torch.load(sys.argv[2]))
torch.save(out, sys.argv[3])
print("SKD_RAY_IMPORTED", any(m.split(".")[0] == "skd_ray" for m in sys.modules))
"""


def run_plain_torch(model: Path, inputs: torch.Tensor, tmp: Path) -> Any:
    """Outputs of `model` (a model.pt2) on `inputs`, computed by `python -I` in `tmp`."""
    torch.save(inputs, tmp / "inputs.pt")
    proc = subprocess.run([sys.executable, "-I", "-c", RUN_EXPORTED, str(model), str(tmp / "inputs.pt"),
                           str(tmp / "outputs.pt")], cwd=tmp, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SKD_RAY_IMPORTED False" in proc.stdout
    return torch.load(tmp / "outputs.pt")
