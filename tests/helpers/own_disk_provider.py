"""Ray's autoscaler simulator with a runtime-resources directory of its own per simulated node.

The simulator (`fake_multinode`) starts every "node" as a raylet on this machine, all in the
head's session directory, so they share one `runtime_resources/` folder, where a real
cluster has one per machine. That changes what a Ray job with `--working-dir` sees: the
runtime-env agent of a node that meets a working dir for the first time re-extracts it with
`overwrite=True`, deleting the folder first. With a shared folder, every node the autoscaler
launches deletes the directory the job's driver on the head runs in (its cwd) and the code
of the trials on other nodes. A search then fails late on `FileNotFoundError`, which no real
cluster would do.

`OwnDiskFakeProvider` is the simulator's provider with one change: each node it launches
gets its own runtime-resources folder (`RayParams.runtime_env_dir_name`), as it would have
its own disk. Everything else (the autoscaler, the raylets, token authentication) is Ray's.
Used through the launcher config's `provider: {type: external, module: ...}`; the
autoscaler's monitor imports it, so the checkout must be on its PYTHONPATH.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import ray._private.parameter
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

_PATCH_LOCK = threading.Lock()  # RayParams is swapped module-wide for the duration of one launch


class OwnDiskFakeProvider(FakeMultiNodeProvider):
    """`fake_multinode` whose nodes keep their runtime environments apart."""

    def __init__(self, provider_config: dict[str, Any], cluster_name: str) -> None:
        super().__init__(provider_config, cluster_name)
        self._disk_numbers = itertools.count(1)

    def _create_node_with_resources_and_labels(self, node_config: Any, tags: Any, count: Any, resources: Any,
                                               labels: Any) -> None:
        folder = f"runtime_resources_node{next(self._disk_numbers)}"
        original = ray._private.parameter.RayParams

        def own_folder(*args: Any, **kwargs: Any) -> Any:
            return original(*args, runtime_env_dir_name=folder, **kwargs)

        with _PATCH_LOCK:
            ray._private.parameter.RayParams = own_folder
            try:
                super()._create_node_with_resources_and_labels(node_config, tags, count, resources, labels)
            finally:
                ray._private.parameter.RayParams = original
