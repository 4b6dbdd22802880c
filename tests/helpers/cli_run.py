"""Running `run_search.py` as a user would: in its own process group, in a scratch directory,
with Ray's and MLflow's files in temporary places."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class CliRun:
    """Runs `run_search.py` in its own process group inside a scratch directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ray_tmp = Path(f"/tmp/skdt{os.getpid()}_{abs(hash(str(workdir))) % 10**6}")
        self.env = {**os.environ, "RAY_TMPDIR": str(self.ray_tmp), "PYTHONUNBUFFERED": "1",
                    "RAY_USAGE_STATS_ENABLED": "0",
                    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
        self.env.pop("RAY_ADDRESS", None)
        self.background: list[subprocess.Popen] = []

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.workdir / 'mlflow.db'}"

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return self.run([sys.executable, str(REPO / "run_search.py"), *args], timeout)

    def run(self, cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
        """`cmd` in its own process group in the scratch directory, output captured; the whole
        group is killed (and the test failed) when it outlives `timeout`."""
        proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"{' '.join(cmd[1:])} did not finish in {timeout}s:\n{out[-4000:]}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, "")

    def start(self, *args: str, log: Path) -> subprocess.Popen:
        """Start `run_search.py` in the background (own process group, output to `log`);
        the fixture kills its process group at teardown if it is still running."""
        cmd = [sys.executable, str(REPO / "run_search.py"), *args]
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)
        self.background.append(proc)
        return proc

    def cleanup(self) -> None:
        import shutil

        for proc in self.background:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
