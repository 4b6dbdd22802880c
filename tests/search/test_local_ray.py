"""The local Ray instance a search starts for itself (no --address)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

PROBE = """
import os, sys
import ray
from skd_ray.search.cluster.connect import connect_ray

connect_ray(None, temp_dir=sys.argv[1])

@ray.remote
def niceness():
    return os.nice(0)

print("NICENESS", os.nice(0), ray.get(niceness.remote()))
ray.shutdown()
"""


def test_the_jobs_workers_run_at_the_niceness_of_the_command() -> None:
    """Ray's default niceness 15 starves trials on a machine shared with other work; a local
    search's workers run at the niceness of the command that started them."""
    with tempfile.TemporaryDirectory(prefix="skdn", dir="/tmp") as tmp:  # short: Ray's socket paths
        res = subprocess.run([sys.executable, "-c", PROBE, tmp], cwd=REPO, env=dict(os.environ),
                             capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    (line,) = [x for x in res.stdout.splitlines() if x.startswith("NICENESS")]
    command, worker = map(int, line.split()[1:])
    assert worker == command, line
