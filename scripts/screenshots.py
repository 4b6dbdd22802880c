"""Screenshots of a search in MLflow's UI: the runs table, a trial's charts, the parent's plots.

Starts `mlflow ui` on 127.0.0.1 (a free port) on the given store, opens each page in headless
Chromium (`apt-get install chromium`) and saves PNGs into --out. MLflow's pages are drawn by
JavaScript after they load, so Chromium is given a virtual-time budget before it captures.

    .venv/bin/python scripts/screenshots.py --mlflow-uri sqlite:///$PWD/mlflow.db --experiment skd-byot
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow import MlflowClient


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_up(base: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mlflow ui exited with {proc.returncode}")
        try:
            if urllib.request.urlopen(f"{base}/health", timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"mlflow ui did not answer within {timeout:.0f}s")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no Chromium found: apt-get install chromium")


def capture(browser: str, url: str, out: Path, size: str, budget_ms: int) -> None:
    with tempfile.TemporaryDirectory(prefix="skd_chromium_") as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={size}",
                        f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=180)
    print(f"{out}: {url}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mlflow-uri", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--out", default="docs/img")
    p.add_argument("--budget-ms", type=int, default=20000, help="time the pages get to draw")
    args = p.parse_args()
    client = MlflowClient(args.mlflow_uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        raise SystemExit(f"no experiment {args.experiment!r} in {args.mlflow_uri}")
    parent = client.search_runs([exp.experiment_id], "tags.`skd.kind` = 'search'",
                                order_by=["attributes.start_time DESC"], max_results=1)[0]
    best_run = parent.data.tags.get("skd.best_run_id")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.mlflow_uri,
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_up(base, proc)
        browser = chromium()
        runs = f"{base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
        capture(browser, runs, out / "mlflow_runs_table.png", "1600,900", args.budget_ms)
        pid = parent.info.run_id
        capture(browser, f"{base}/#/experiments/{exp.experiment_id}/runs/{pid}", out / "mlflow_parent_run.png",
                "1600,1100", args.budget_ms)
        capture(browser, f"{base}/#/experiments/{exp.experiment_id}/runs/{pid}/artifacts/plots/"
                "parallel_coordinates.png", out / "mlflow_parent_plots.png", "1600,1000", args.budget_ms)
        if best_run:
            capture(browser, f"{base}/#/experiments/{exp.experiment_id}/runs/{best_run}/model-metrics",
                    out / "mlflow_trial_charts.png", "1600,1100", args.budget_ms)
    finally:
        import os

        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
