"""Searches on an autoscaling cluster simulated on this machine (Ray's `fake_multinode` autoscaler).

For each maximum node count (default 1 and 2 one-CPU nodes, head with no CPU, token auth on)
it starts a fresh simulated cluster, runs the same search through `run_search.py --address`
and prints: seconds from starting the command to the first trial's first optimiser step on a
node the autoscaler launched, wall time, trials per hour, and seconds from the end of the
search until the autoscaler removed the idle nodes.

    .venv/bin/python benchmarks/autoscaling.py            # 6 trials of 3 epochs, 1 vs 2 nodes
    .venv/bin/python benchmarks/autoscaling.py --quick    # smoke run: 2 trials of 1 epoch, 2 nodes
    .venv/bin/python benchmarks/autoscaling.py --pools    # 2-worker trials: DDP pools vs a Train run per trial

`--pools` runs the same search of 2-worker trials twice on a fresh cluster of up to 4 one-CPU
nodes (2 trials at once): with a Ray Train run per trial (the default on an autoscaling
cluster) and with `--keep-ddp-pools`. A thread counts the simulated nodes every second; the
trials' MLflow runs say how many workers trials needed at each moment. It prints the
node-seconds the cluster kept up beyond what running trials needed, and the fewest nodes up
while the last trial ran alone (trials must be longer than the idle timeout to show it:
`--pools --epochs 40`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the simulated cluster is the tests' helper

from trial_overhead import write_space  # noqa: E402  (same short vanilla search; benchmarks/ is on sys.path)

from skd_ray.results.store import MlflowStore  # noqa: E402
from skd_ray.training.metrics import TIME_STARTUP_S  # noqa: E402
from tests.helpers.fake_cluster import FakeCluster  # noqa: E402


def measure(nodes: int, trials: int, epochs: int, root: Path, idle_minutes: float) -> dict[str, float]:
    from mlflow import MlflowClient

    cluster = FakeCluster(root / f"c{nodes}", dict(os.environ), worker_cpus=1, max_workers=nodes,
                          idle_minutes=idle_minutes).start()
    try:
        work = root / f"s{nodes}"
        work.mkdir()
        uri = f"sqlite:///{work / 'mlflow.db'}"
        space = write_space(work / "space.yaml", epochs)
        env = {**cluster.client_env(), "PYTHONUNBUFFERED": "1", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
        start = time.time()
        res = subprocess.run([sys.executable, str(REPO / "run_search.py"), "--address", cluster.address,
                              "--config", str(space), "--num-samples", str(trials), "--no-early-stopping",
                              "--storage", str(work / "results"), "--mlflow-uri", uri, "--experiment", "bench"],
                             cwd=work, env=env, capture_output=True, text=True)
        wall = time.time() - start
        if res.returncode != 0:
            raise SystemExit(f"search failed:\n{res.stdout[-4000:]}\n{res.stderr[-2000:]}")
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("bench")
        runs = client.search_runs([exp.experiment_id], "tags.`skd.kind` = 'trial'")
        first = min(r.info.start_time / 1000 + MlflowStore(uri).metric_history(r.info.run_id, TIME_STARTUP_S)[0].value
                    for r in runs)
        ended = time.monotonic()
        while cluster.raylets() and time.monotonic() - ended < 300:
            time.sleep(1)
        release = time.monotonic() - ended
        out = {"first_trial_s": first - start, "wall_s": wall, "trials_per_hour": len(runs) / wall * 3600,
               "release_s": release, "launched": cluster.launched()}
        print(f"nodes={nodes}: trials={len(runs)} wall={wall:.1f}s trials_per_hour={out['trials_per_hour']:.0f} "
              f"first_trial_on_launched_node={out['first_trial_s']:.1f}s launched={out['launched']} "
              f"idle_nodes_released_after={release:.1f}s", flush=True)
        return out
    finally:
        cluster.stop()


class NodeCounter(threading.Thread):
    """(time.time(), simulated nodes up) once a second until stopped."""

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__(daemon=True)
        self.cluster, self.samples, self.done = cluster, [], threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            self.samples.append((time.time(), len(self.cluster.raylets())))


def measure_pools(keep: bool, trials: int, epochs: int, root: Path, idle_minutes: float) -> dict[str, float]:
    """One search of 2-worker trials, 2 at once, on up to 4 one-CPU nodes; nodes up vs needed."""
    from mlflow import MlflowClient

    label = "kept DDP pools" if keep else "Train run per trial"
    cluster = FakeCluster(root / f"pools{int(keep)}", dict(os.environ), worker_cpus=1, max_workers=4,
                          idle_minutes=idle_minutes).start()
    counter = NodeCounter(cluster)
    try:
        work = root / f"w{int(keep)}"
        work.mkdir()
        uri = f"sqlite:///{work / 'mlflow.db'}"
        env = {**cluster.client_env(), "PYTHONUNBUFFERED": "1", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
        counter.start()
        res = subprocess.run([sys.executable, str(REPO / "run_search.py"), "--address", cluster.address,
                              "--config", str(write_space(work / "space.yaml", epochs)), "--num-samples", str(trials),
                              "--workers-per-trial", "2", "--max-concurrent", "2", "--no-early-stopping",
                              "--storage", str(work / "results"), "--mlflow-uri", uri, "--experiment", "bench",
                              *(["--keep-ddp-pools"] if keep else [])],
                             cwd=work, env=env, capture_output=True, text=True)
        counter.done.set()
        if res.returncode != 0:
            raise SystemExit(f"search failed:\n{res.stdout[-4000:]}\n{res.stderr[-2000:]}")
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("bench")
        runs = client.search_runs([exp.experiment_id], "tags.`skd.kind` = 'trial'")
        spans = [(r.info.start_time / 1000, r.info.end_time / 1000) for r in runs]
        first_start = min(a for a, _ in spans)
        last_ends = sorted(b for _, b in spans)
        idle = alone = 0.0
        alone_nodes = []
        for t, up in counter.samples:
            running = sum(a <= t < b for a, b in spans)
            if t >= first_start:
                idle += max(0, up - 2 * running)  # one-second samples: node-seconds
            if running == 1 and last_ends[-2] <= t < last_ends[-1]:
                alone += 1
                alone_nodes.append(up)
        out = {"idle_node_s": idle, "alone_s": alone, "fewest_nodes_alone": min(alone_nodes, default=0),
               "trials": len(runs)}
        print(f"{label}: trials={len(runs)} node_seconds_beyond_running_trials={idle:.0f} "
              f"last_trial_alone={alone:.0f}s fewest_nodes_up_then={out['fewest_nodes_alone']} (it needs 2)",
              flush=True)
        return out
    finally:
        counter.done.set()
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--idle-minutes", type=float, default=0.25)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pools", action="store_true", help="2-worker trials: kept DDP pools vs a Train run "
                        "per trial (node-seconds beyond what trials need)")
    args = parser.parse_args()
    if args.pools:
        with tempfile.TemporaryDirectory(prefix="skdb", dir="/tmp") as tmp:
            per_trial = measure_pools(False, 3, args.epochs, Path(tmp), args.idle_minutes)
            pools = measure_pools(True, 3, args.epochs, Path(tmp), args.idle_minutes)
        print(f"node-seconds beyond running trials, pools / per-trial runs: "
              f"{pools['idle_node_s']:.0f} / {per_trial['idle_node_s']:.0f}")
        return
    if args.quick:
        args.trials, args.epochs, args.nodes = 2, 1, [2]
    with tempfile.TemporaryDirectory(prefix="skdb", dir="/tmp") as tmp:
        results = {n: measure(n, args.trials, args.epochs, Path(tmp), args.idle_minutes) for n in args.nodes}
    if 1 in results and 2 in results:
        ratio = results[2]["trials_per_hour"] / results[1]["trials_per_hour"]
        print(f"trials per hour, 2 nodes / 1 node: {ratio:.2f}x")


if __name__ == "__main__":
    main()
