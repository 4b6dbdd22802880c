"""What an autoscaling Ray cluster can grow to, and what its autoscaler is doing now.

A cluster started from a launcher config (`ray up`, or `ray start --head --autoscaling-config`)
often has nothing to train on when a search starts (a head with `--num-cpus=0`, workers with
`min_workers: 0`): sizing a search by the resources that are up would refuse every trial.
So the search is sized by the node types the autoscaler may launch (max workers x resources).

Where Ray 2.60 publishes that:
- autoscaler v2 (`RAY_enable_autoscaler_v2=1`) puts its ClusterConfig in the GCS key-value store;
- autoscaler v1 (the default) publishes only a status report (`ray status` reads it: active,
  pending and launching nodes by type) and not the node types, so they are read from the
  launcher config the autoscaler runs with: its path is on the monitor's command line on the
  head (`~/ray_bootstrap_config.yaml` under `ray up`). A driver on the head (Ray Jobs,
  `ray attach`) therefore always finds them.
A cluster without a launcher config still runs a monitor, with read-only node types named
`node_<56 hex>`: that is "no autoscaler".
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skd_ray.errors import SkdError, read_text_file
from skd_ray.search.cluster.connect import cap_concurrency, plan_concurrency
from skd_ray.search.request import SearchRequest

READONLY_NODE_TYPE = re.compile(r"^node_[0-9a-f]{56}$")
STATUS_KEY = b"__autoscaling_status"
V2_NAMESPACE = b"__autoscaler"
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml").expanduser()


@dataclass(frozen=True)
class NodeType:
    """One kind of node the autoscaler may run: at most `max_workers` of them, each with `resources`."""

    name: str
    max_workers: int
    resources: dict[str, float]
    head: bool = False


@dataclass
class AutoscalerView:
    """The cluster's autoscaler: its node types (empty when they cannot be read from here)."""

    node_types: list[NodeType] = field(default_factory=list)
    max_workers: int | None = None  # the cluster-wide cap on worker nodes


@dataclass(frozen=True)
class Activity:
    """What the autoscaler is doing now (from its status report)."""

    launching: dict[str, int]  # node type -> nodes being launched
    pending: int  # nodes launched but not yet up
    active: dict[str, int]  # node type -> nodes up


def _gcs(address: str) -> Any:
    from ray._raylet import GcsClient

    return GcsClient(address=address)


def read_status(address: str) -> dict[str, Any] | None:
    """The v1 autoscaler's status report (what `ray status` prints), or None."""
    raw = _gcs(address).internal_kv_get(STATUS_KEY, None)
    return json.loads(raw) if raw else None


def activity(address: str) -> Activity | None:
    """Launching / pending / active nodes by type, or None when there is no report."""
    status = read_status(address)
    report = (status or {}).get("autoscaler_report") or {}
    if not report:
        return None
    return Activity(dict(report.get("pending_launches") or {}), len(report.get("pending_nodes") or []),
                    dict(report.get("active_nodes") or {}))


def find_autoscaler(address: str) -> AutoscalerView | None:
    """The autoscaler of the cluster at GCS `address`, or None when it has none."""
    gcs = _gcs(address)
    if gcs.internal_kv_get(b"__autoscaler_v2_enabled", V2_NAMESPACE) == b"1":
        types = v2_node_types(gcs)
        return AutoscalerView(types) if types else None
    status = read_status(address)
    report = (status or {}).get("autoscaler_report") or {}
    seen = set(report.get("active_nodes") or {}) | set((report.get("node_type_mapping") or {}).values())
    if not seen or all(READONLY_NODE_TYPE.match(name) for name in seen):
        return None
    config = launcher_config_path(address)
    return read_launcher_config(config) if config else AutoscalerView()


def v2_node_types(gcs: Any) -> list[NodeType]:
    """Node types from the ClusterConfig autoscaler v2 publishes in the GCS."""
    import ray
    from ray.core.generated import autoscaler_pb2

    raw = gcs.internal_kv_get(ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY.encode(),
                              ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE.encode())
    if not raw:
        return []
    config = autoscaler_pb2.ClusterConfig.FromString(raw)
    return [NodeType(g.name, g.max_count, dict(g.resources)) for g in config.node_group_configs]


def launcher_config_path(address: str) -> Path | None:
    """The launcher config of the v1 autoscaler serving `address`: from the command line of
    its monitor process when it runs on this machine, else `ray up`'s bootstrap config."""
    port = address.rpartition(":")[2]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(a.endswith("autoscaler/_private/monitor.py") for a in args):
            continue
        gcs = next((a.partition("=")[2] for a in args if a.startswith("--gcs-address=")), "")
        config = next((a.partition("=")[2] for a in args if a.startswith("--autoscaling-config=")), "")
        if config and (gcs == address or gcs.rpartition(":")[2] == port):
            return Path(config).expanduser()
    return BOOTSTRAP_CONFIG if BOOTSTRAP_CONFIG.is_file() else None


def read_launcher_config(path: Path) -> AutoscalerView:
    """Node types of a launcher config (the head type counts once; a worker type without its own
    `max_workers` may use the cluster's)."""
    import yaml

    try:
        config = yaml.safe_load(read_text_file(path, "the autoscaler's launcher config")) or {}
    except (OSError, SkdError, yaml.YAMLError):  # unreadable, not UTF-8, not YAML: plan without node types
        return AutoscalerView()
    head = config.get("head_node_type")
    cap = config.get("max_workers")
    types = [NodeType(name, 1 if name == head else int(spec.get("max_workers", cap or 0)),
                      {k: float(v) for k, v in (spec.get("resources") or {}).items()}, name == head)
             for name, spec in (config.get("available_node_types") or {}).items()]
    return AutoscalerView(types, int(cap) if cap is not None else None)


def fits(bundle: dict[str, float], resources: dict[str, float]) -> int:
    """How many `bundle`s one node with `resources` holds."""
    counts = [math.floor(resources.get(k, 0.0) / v + 1e-9) for k, v in bundle.items() if v > 0]
    return min(counts) if counts else 0


def plan_on_node_types(view: AutoscalerView, req: SearchRequest) -> int:
    """Trials at once on what the cluster can grow to, capped by --max-concurrent; a trial
    whose workers no node type can hold is refused, naming the node types."""
    bundle = req.worker_bundle()
    per_type = sorted(((fits(bundle, t.resources), t) for t in view.node_types), key=lambda p: -p[0])
    slots, workers_left = 0, view.max_workers
    for per_node, node_type in per_type:
        count = node_type.max_workers
        if not node_type.head and workers_left is not None:
            count = min(count, workers_left)
            workers_left -= count
        slots += per_node * count
    limit = slots // req.workers
    if limit < 1:
        shown = ", ".join(f"{t.name} (up to {t.max_workers} x {format_resources(t.resources)})"
                          for t in view.node_types)
        raise SkdError(
            f"one trial needs {req.workers} worker(s) x {format_resources(bundle)} but no mix of the cluster's "
            f"node types holds that: {shown}",
            "lower --workers-per-trial, --cpus-per-worker or --gpus-per-worker, or add a node type that fits "
            "(available_node_types in the cluster config)")
    return cap_concurrency(limit, req)


def format_resources(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}" if resources else "{}"


def cpus_and_gpus(bundles: Iterable[Mapping[str, float]]) -> Counter:
    """The CPUs and GPUs that placement-group bundles reserve, summed (other keys ignored)."""
    total: Counter = Counter()
    for bundle in bundles:
        for key, value in bundle.items():
            if key in ("CPU", "GPU") and value:
                total[key] += value
    return total


def plan_search(req: SearchRequest, say: Any = print) -> tuple[int, bool]:
    """Size the search to the cluster this driver is connected to: (trials at once, whether the
    cluster autoscales). On an autoscaling cluster the DDP pools are turned off (docs/cluster.md):
    a pool holds its workers, and so their nodes, for the whole search, so
    the cluster could neither release idle nodes nor grow for waiting trials; a multi-worker
    trial then starts its own Ray Train run, whose workers leave with it."""
    import ray

    view = find_autoscaler(ray.get_runtime_context().gcs_address)
    if view is None:
        return plan_concurrency(ray.cluster_resources(), req), False
    known = [t for t in view.node_types if t.resources or t.head]
    if not view.node_types or len(known) < len(view.node_types):
        # The node types (or their resources) cannot be read from this machine: size the
        # search to what is up if a trial fits there, else one trial at a time.
        try:
            limit = plan_concurrency(ray.cluster_resources(), req)
        except SkdError:
            limit = max(1, min(req.max_concurrent or 1, req.num_samples))
        say(f"autoscaling cluster, but its node types are not readable here (run the search on the head "
            f"node); {limit} trial(s) at once")
    else:
        limit = plan_on_node_types(view, req)
        say("autoscaling cluster: " + ", ".join(f"{t.name} up to {t.max_workers} x {format_resources(t.resources)}"
                                                for t in view.node_types if not t.head)
            + f"; {limit} trial(s) at once")
    pools_on_autoscaling(req, say)
    return limit, True


def pools_on_autoscaling(req: SearchRequest, say: Any = print) -> None:
    """Multi-worker trials on an autoscaling cluster: a Train run per trial (`req.ddp_pool`
    turned off), unless the user keeps the pools (`--keep-ddp-pools`); either way one line says
    which and why."""
    if req.workers < 2 or not req.ddp_pool:
        return
    if req.keep_pools:
        say("multi-worker trials train in DDP pools (--keep-ddp-pools): the pools' nodes stay up until the "
            "search ends")
    else:
        req.ddp_pool = False
        say("multi-worker trials start their own Ray Train run: DDP pools would hold their nodes for the "
            "whole search (--keep-ddp-pools keeps them)")
