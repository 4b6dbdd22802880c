"""An autoscaling Ray cluster on this machine: Ray's own autoscaler simulator (`fake_multinode`).

`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=FILE` runs the real (v1) autoscaler,
whose node provider starts each "node" as a raylet on this machine. The head has no CPUs, so
every trial needs a node the autoscaler launches. Token authentication is on (Ray's default
once a token exists), with the token in a file of the cluster's own (`RAY_AUTH_TOKEN_PATH`):
`~/.ray/auth_token` is never read or written.

Stopping: the head runs `ray start --block` in a session of its own (setsid); the simulated
nodes' raylets are children of the autoscaler, and Ray's worker processes get process groups
of their own but stay in that session, so `stop` ends exactly the processes of this session
(no `ray stop`, no pkill).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.helpers.ports import free_port

RAY = str(Path(sys.executable).parent / "ray")
HEAD_NODE_ID = "f" * 51 + "00000"  # what RAY_FAKE_CLUSTER makes the head's node id


def launcher_config(gcs_address: str, worker_cpus: int, max_workers: int, idle_minutes: float,
                    provider_module: str | None = None) -> dict:
    """The whole launcher config of a simulated cluster (the wheel lacks the simulator's
    defaults file, so every key the v1 autoscaler reads is spelled out). `provider_module`:
    a subclass of the simulator's provider to load instead of `fake_multinode` itself."""
    kind = {"type": "external", "module": provider_module} if provider_module else {"type": "fake_multinode"}
    return {
        "cluster_name": "skd_fake", "max_workers": max_workers, "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_minutes,
        "provider": {**kind, "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     "launch_multiple": True},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": worker_cpus}, "node_config": {}, "min_workers": 0,
                           "max_workers": max_workers},
        },
        "head_node_type": "ray.head.default",
        "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
        "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "auth": {},
    }


class FakeCluster:
    """A simulated autoscaling cluster: head with 0 CPUs, `cpu_worker` nodes of `worker_cpus`.

    `own_disks` (default): every simulated node keeps its runtime environments in a folder of
    its own, as separate machines would (`tests.helpers.own_disk_provider` says why a Ray job
    with `--working-dir` needs that); off: Ray's `fake_multinode` exactly as the README's
    rehearsal runs it.
    """

    def __init__(self, root: Path, env: dict[str, str], worker_cpus: int = 1, max_workers: int = 2,
                 idle_minutes: float = 0.25, update_interval_s: int = 2, own_disks: bool = True) -> None:
        self.root = root
        self.own_disks = own_disks
        self.temp_dir = root / "ray"
        self.port = free_port()
        self.dashboard_port = free_port()
        self.ip = "127.0.0.1"
        self.address = f"{self.ip}:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.token_file = root / "auth_token"
        self.config = root / "cluster.yaml"
        self.log = root / "head.log"
        self.worker_cpus, self.max_workers, self.idle_minutes = worker_cpus, max_workers, idle_minutes
        self.env = {**env, "RAY_TMPDIR": str(self.temp_dir), "RAY_FAKE_CLUSTER": "1",
                    "AUTOSCALER_UPDATE_INTERVAL_S": str(update_interval_s), "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                    "RAY_USAGE_STATS_ENABLED": "0"}
        for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS"):
            self.env.pop(key, None)
        self.proc: subprocess.Popen | None = None

    def client_env(self) -> dict[str, str]:
        """The environment of a program that connects to this cluster as a user would: the
        token where Ray looks for it, nothing else set by hand."""
        return {k: v for k, v in self.env.items() if k not in ("RAY_FAKE_CLUSTER", "AUTOSCALER_UPDATE_INTERVAL_S")}

    def start(self, timeout: float = 120) -> FakeCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(secrets.token_hex(16))
        self.token_file.chmod(0o600)
        head_env = dict(self.env)
        module = None
        if self.own_disks:
            module, folder = self._install_provider()
            head_env["PYTHONPATH"] = os.pathsep.join(p for p in (folder, self.env.get("PYTHONPATH")) if p)
        self.config.write_text(yaml.safe_dump(launcher_config(self.address, self.worker_cpus, self.max_workers,
                                                              self.idle_minutes, module)))
        args = [RAY, "start", "--head", "--block", "--node-ip-address", self.ip, "--port", str(self.port),
                "--num-cpus", "0", "--autoscaling-config", str(self.config), "--temp-dir", str(self.temp_dir),
                "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(self.dashboard_port), "--ray-client-server-port", str(free_port()),
                "--dashboard-agent-listen-port", str(free_port()), "--disable-usage-stats"]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(args, env=head_env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`ray start --head` exited with {self.proc.returncode}:\n{self.tail()}")
            if self.monitor_log().is_file() and self._listening(self.dashboard_port):
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the simulated cluster did not come up in {timeout}s:\n{self.tail()}")

    def _install_provider(self) -> tuple[str, str]:
        """(module path, folder): the provider module alone in a folder for the head's PYTHONPATH
        (the autoscaler's monitor imports it); the checkout itself stays off Ray's workers' path."""
        from tests.helpers import own_disk_provider

        folder = self.root / "provider"
        folder.mkdir(exist_ok=True)
        shutil.copy(own_disk_provider.__file__, folder / "skd_own_disk_provider.py")
        return "skd_own_disk_provider.OwnDiskFakeProvider", str(folder)

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def session_dir(self) -> Path:
        return (self.temp_dir / "session_latest").resolve()

    def monitor_log(self) -> Path:
        return self.temp_dir / "session_latest" / "logs" / "monitor.log"

    def monitor_text(self) -> str:
        log = self.monitor_log()
        return log.read_text(errors="replace") if log.is_file() else ""

    def launched(self) -> int:
        """Nodes the autoscaler has launched so far (its `Launching N nodes` log lines)."""
        return sum(int(n) for n in re.findall(r"Launching (\d+) nodes, type cpu_worker", self.monitor_text()))

    def terminated_idle(self) -> int:
        """Nodes the autoscaler has removed as idle."""
        return len(re.findall(r"Terminating the node with id \S+ and ip \S+\. \(idle\)", self.monitor_text()))

    def raylets(self) -> dict[str, int]:
        """Node id -> raylet pid of every simulated worker node still running (not the head)."""
        found = {}
        for pid in self.session_pids():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"raylet/raylet"):
                for item in env:
                    node_id = item.partition(b"RAY_OVERRIDE_NODE_ID_FOR_TESTING=")[2].decode()
                    if node_id and node_id != HEAD_NODE_ID:
                        found[node_id] = pid
        return found

    def kill_node(self, node_id: str) -> list[int]:
        """A machine lost: SIGKILL the node's raylet and every process under it (its workers
        run in process groups of their own, so they are found by parent pid)."""
        raylet = self.raylets()[node_id]
        victims = [raylet, *descendants(raylet)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return victims

    def session_pids(self) -> list[int]:
        if self.proc is None:
            return []
        out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True).stdout
        return [int(p) for p, s, st in (line.split()[:3] for line in out.splitlines() if line.strip())
                if int(s) == self.proc.pid and not st.startswith("Z")]

    def tail(self) -> str:
        parts = [f"--- head.log\n{self.log.read_text(errors='replace')[-3000:]}" if self.log.is_file() else ""]
        parts.append(f"--- monitor.log\n{self.monitor_text()[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """TERM, then KILL, every process of the cluster's session; remove its files."""
        if self.proc is not None:
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
                for pid in self.session_pids():
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + wait
                while self.session_pids() and time.monotonic() < deadline:
                    time.sleep(0.5)
            self.proc.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (by parent pid, whatever their process group)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
