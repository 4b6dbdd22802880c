"""Searches on an autoscaling cluster simulated on this machine (Ray's `fake_multinode` autoscaler).

For each maximum node count (default 1 and 2 one-CPU nodes, head with no CPU, token auth on)
it starts a fresh simulated cluster, runs the same search through `run_search.py --address`
and prints: seconds from starting the command to the first trial's first optimiser step on a
node the autoscaler launched, wall time, trials per hour, and seconds from the end of the
search until the autoscaler removed the idle nodes.

    .venv/bin/python benchmarks/autoscaling.py            # 6 trials of 3 epochs, 1 vs 2 nodes
    .venv/bin/python benchmarks/autoscaling.py --quick    # smoke run: 2 trials of 1 epoch, 2 nodes
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the simulated cluster is the tests' helper

from trial_overhead import write_space  # noqa: E402  (same short vanilla search; benchmarks/ is on sys.path)

from skd_ray.results.tracking import metric_history  # noqa: E402
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
        first = min(r.info.start_time / 1000 + metric_history(uri, r.info.run_id, TIME_STARTUP_S)[0].value
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--idle-minutes", type=float, default=0.25)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.nodes = 2, 1, [2]
    with tempfile.TemporaryDirectory(prefix="skdb", dir="/tmp") as tmp:
        results = {n: measure(n, args.trials, args.epochs, Path(tmp), args.idle_minutes) for n in args.nodes}
    if 1 in results and 2 in results:
        ratio = results[2]["trials_per_hour"] / results[1]["trials_per_hour"]
        print(f"trials per hour, 2 nodes / 1 node: {ratio:.2f}x")


if __name__ == "__main__":
    main()
