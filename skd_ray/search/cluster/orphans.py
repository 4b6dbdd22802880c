"""Free the placement groups that outlived the Ray Train run which created them.

Tune ends a trial by ending its process (ASHA's stop, and a trial's last report: ASHA stops
every trial at `max_t`). A trial that trains through its own Ray Train run loses its Train
controller with it, and the controller, dying, sees its workers die first and retries: it
creates a new worker group's placement group, then dies before Train's `PlacementGroupCleaner`
hears of that group. Ray 2.60 keeps such a group, with its CPUs/GPUs, until the driver of the
search exits: the next trial that needs those resources waits for ever (seen on a 2-CPU
machine: a 2-worker trial pending behind 1 CPU that nothing used), and an autoscaler keeps a
node up for it. Nothing can use a placement group whose creating actor is dead (its workers
were owned by that actor), so the search's resource watch removes this job's such groups.
Groups the driver created (Tune's trial groups) have no creating actor and are left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from skd_ray.search.cluster.autoscaler import cpus_and_gpus

# An empty ActorID (the driver created the group) is all 0xff bytes.
NIL = "f"


@dataclass(frozen=True)
class Orphan:
    """A placement group of this job whose creating actor is dead."""

    group_id: str
    resources: dict[str, float]


def orphaned_groups(job_id: str) -> Iterator[Orphan]:
    """This job's live placement groups whose creating actor is DEAD (not restarting)."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    table = gcs_pb2.PlacementGroupTableData
    accessor = state._connect_and_get_accessor()
    for raw in accessor.get_placement_group_table():
        group = table.FromString(raw)
        if group.state == table.REMOVED or group.creator_job_id.hex() != job_id:
            continue
        creator = group.creator_actor_id.hex()
        if not creator or set(creator) == {NIL}:
            continue
        if actor_state(creator) == "DEAD":
            resources = cpus_and_gpus(bundle.unit_resources for bundle in group.bundles)
            yield Orphan(group.placement_group_id.hex(), dict(resources))


def actor_state(actor_id: str) -> str | None:
    """The actor's state in the GCS; None when the GCS does not know it (any more)."""
    from ray._private.state import state

    info: dict[str, Any] = state.actor_table(actor_id) or {}
    return info.get("State")


def free_orphaned_groups(job_id: str) -> list[Orphan]:
    """Remove this job's orphaned placement groups; the ones removed."""
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    freed = []
    for orphan in orphaned_groups(job_id):
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(orphan.group_id))))
        freed.append(orphan)
    return freed
