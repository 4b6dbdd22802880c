"""A real `mlflow server` for tests, in its own process group, on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers.ports import free_port


@contextmanager
def mlflow_server(backend_store_uri: str, workdir: Path) -> Iterator[str]:
    """`mlflow server` on `backend_store_uri`, serving artifacts from `workdir/mlartifacts`, its
    log in `workdir/mlflow_server.log`; yields its base URL once /health answers. Stopped by its
    process group on exit (SIGTERM, then SIGKILL).

    MLflow's job runner (GenAI scorers and trace jobs, 8 more processes on a database store) is
    off: no search uses it, and on 2 cores it doubled the server's start (about 20 s against 10 s)."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow = Path(sys.executable).with_name("mlflow")
    log_path = workdir / "mlflow_server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(mlflow), "server", "--backend-store-uri", backend_store_uri,
             "--artifacts-destination", str(workdir / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, proc, log_path)
        yield base
    finally:
        stop(proc)


def wait_until_up(base: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if urllib.request.urlopen(f"{base}/health", timeout=2).status == 200:
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer within {timeout}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
