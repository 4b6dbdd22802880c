"""A search on a real 2-node Ray cluster (two `ray start` nodes on this machine, 127.0.0.1):
a 2-worker trial is spread over both nodes, and results, checkpoints and MLflow runs land
in the storage the nodes share."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.ports import free_port
from tests.helpers.searches import child_runs, write_space

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")


class LocalCluster:
    """A head and worker nodes started with `ray start --block`, each in its own process
    group so that teardown stops exactly these processes (no `ray stop`)."""

    def __init__(self, temp_dir: Path, env: dict[str, str]) -> None:
        self.temp_dir = temp_dir
        self.env = {**env, "RAY_TMPDIR": str(temp_dir)}
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def _start(self, role: str, args: list[str]) -> None:
        log = self.temp_dir.parent / f"{self.temp_dir.name}_{role}.log"
        self.logs.append(log)
        # A joining node sends the cluster's token only with RAY_AUTH_MODE=token (Ray 2.60's
        # `ray start --address` does not turn it on by itself, unlike `ray start --head`).
        env = self.env if role == "head" else {**self.env, "RAY_AUTH_MODE": "token"}
        with open(log, "w") as out:
            self.procs.append(subprocess.Popen(
                [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                 "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port()),
                 "--ray-client-server-port", str(free_port()), *args],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))

    def start(self, nodes: int, timeout: float = 180) -> list[str]:
        """Start the head and `nodes - 1` workers; returns the alive node ids."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self._start("head", ["--head", "--port", str(self.port), "--temp-dir", str(self.temp_dir),
                             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(self.dashboard_port)])
        self.wait_for_port(self.port, timeout)
        for i in range(1, nodes):
            self._start(f"worker{i}", ["--address", self.address])  # with RAY_AUTH_MODE=token: see _start
        return self.wait_for_nodes(nodes, timeout)

    def wait_for_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"Ray head did not listen on {port} in {timeout}s\n{self.tail()}")

    def alive_nodes(self) -> list[str]:
        """Asked in a process of its own, as a user would: the cluster has token authentication
        on (a token exists), and the dashboard wants it, which Ray sends with RAY_AUTH_MODE=token
        (read once per process, so not settable here)."""
        code = ("from ray.util.state import list_nodes; print(' '.join(n.node_id for n in list_nodes("
                f"address='http://127.0.0.1:{self.dashboard_port}', timeout=10, raise_on_missing_output=False) "
                "if n.state == 'ALIVE'))")
        out = subprocess.run([sys.executable, "-c", code], env={**self.env, "RAY_AUTH_MODE": "token"},
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return sorted(out.split())

    def wait_for_nodes(self, count: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        alive: list[str] = []
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                alive = self.alive_nodes()
            except Exception:  # dashboard not up yet
                alive = []
            if len(alive) >= count:
                return alive
            time.sleep(1)
        pytest.fail(f"{len(alive)} of {count} Ray nodes alive after {timeout}s\n{self.tail()}")

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                pytest.fail(f"`ray start` exited with {proc.returncode}\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs if log.exists())

    def stop(self) -> None:
        """SIGTERM each node's process group (`ray start --block` stops its node), then SIGKILL
        what is left after a few seconds (every process of a node is in its group)."""
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 8
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        for log in self.logs:
            log.unlink(missing_ok=True)


@pytest.fixture
def two_node_cluster(cli):
    cluster = LocalCluster(Path(f"/tmp/skdm{os.getpid()}"), cli.env)
    try:
        cluster.nodes = cluster.start(nodes=2)
        yield cluster
    finally:
        cluster.stop()


def test_two_worker_trial_spans_two_nodes(cli, two_node_cluster: LocalCluster, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    cluster = two_node_cluster
    assert len(cluster.nodes) == 2
    space = write_space(tmp_path / "space.yaml", **{"train.epochs": 2})
    storage = tmp_path / "shared_storage"
    res = cli("--address", cluster.address, "--config", str(space), "--num-samples", "1", "--workers-per-trial", "2",
              "--storage", str(storage), "--experiment", "multinode", "--seed", "0", timeout=300)
    assert res.returncode == 0, res.stdout[-5000:] + cluster.tail()

    parent, children = child_runs(cli.mlflow_uri, "multinode")
    assert parent.info.status == "FINISHED"
    assert len(children) == 1
    run = children[0]
    tags = run.data.tags
    assert tags["skd.status"] == "completed"
    assert tags["skd.world_size"] == "2"
    # Rank 0 gathered the Ray node id of each rank: one rank ran on each node.
    worker_nodes = tags["skd.worker_nodes"].split(",")
    assert len(worker_nodes) == 2 and len(set(worker_nodes)) == 2, worker_nodes
    assert sorted(worker_nodes) == cluster.nodes
    client = MlflowClient(cli.mlflow_uri)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [1, 2]
    assert {"config.json", "best_checkpoint.pt"} <= {a.path for a in client.list_artifacts(run.info.run_id)}

    # Tune's results and Train's checkpoints are in the shared storage.
    trial_id = tags["skd.ray_trial_id"]
    (search_dir,) = storage.glob("multinode_*/")
    assert (search_dir / "optuna.db").is_file() and (search_dir / "tuner.pkl").is_file()
    assert list(search_dir.glob("experiment_state-*.json")) and list(search_dir.glob(f"run_trial_{trial_id}_*"))
    # The trial trained in the search's DDP pool and handed its checkpoints to Tune.
    assert tags["skd.executor"] == "ddp_pool" and (search_dir / "ddp_pool0").is_dir()
    checkpoints = sorted(search_dir.glob(f"run_trial_{trial_id}_*/checkpoint_*/state.pt"))
    assert checkpoints, sorted(p.name for p in storage.iterdir())
    from skd_ray.training.checkpoint import load_state

    assert max(load_state(p)["epoch"] for p in checkpoints) == 2
