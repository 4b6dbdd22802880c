"""Placement groups whose creating actor died (a Ray Train controller ended with its trial)
are kept by Ray until the driver exits; the search's resource watch frees them, and only them."""

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
import sys, time
import ray
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table
from skd_ray.search.cluster.connect import connect_ray
from skd_ray.search.cluster.orphans import actor_state
from skd_ray.search.cluster.waiting import ResourceWatch

connect_ray(None, temp_dir=sys.argv[1])

@ray.remote(num_cpus=0)
class Maker:
    def make(self):
        group = placement_group([{"CPU": 0.5}])
        ray.get(group.ready())
        return group.id.hex()

def state(group_id):
    return placement_group_table(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id))))["state"]

gone, alive = Maker.remote(), Maker.remote()
orphan, kept = ray.get(gone.make.remote()), ray.get(alive.make.remote())
own = placement_group([{"CPU": 0.5}])
ray.get(own.ready())
ray.kill(gone)
deadline = time.time() + 30
while actor_state(gone._actor_id.hex()) != "DEAD" and time.time() < deadline:
    time.sleep(0.2)
time.sleep(1)
print("BEFORE", state(orphan), state(kept), state(own.id.hex()))
ctx = ray.get_runtime_context()
lines = []
ResourceWatch("probe", ctx.gcs_address, ctx.get_job_id(), False, 900.0, say=lines.append).check()
print("AFTER", state(orphan), state(kept), state(own.id.hex()))
print("SAID", *lines, sep="\\n")
ray.shutdown()
"""


def test_a_group_whose_creator_died_is_freed_and_no_other() -> None:
    with tempfile.TemporaryDirectory(prefix="skdo", dir="/tmp") as tmp:  # short: Ray's socket paths
        res = subprocess.run([sys.executable, "-c", PROBE, tmp], cwd=REPO, env=dict(os.environ),
                             capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    out = res.stdout.splitlines()
    (before,) = [x for x in out if x.startswith("BEFORE")]
    (after,) = [x for x in out if x.startswith("AFTER")]
    assert before.split()[1:] == ["CREATED", "CREATED", "CREATED"], before  # Ray keeps the orphan
    assert after.split()[1:] == ["REMOVED", "CREATED", "CREATED"], after
    said = out[out.index("SAID") + 1:]
    assert len(said) == 1 and said[0].startswith("freed {CPU: 0.5} that a Ray Train run left behind"), said
