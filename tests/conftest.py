"""Shared fixtures: run the CLI in a subprocess with Ray's and MLflow's files in tmp dirs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # shared test helpers, also for tests/methods


def use_test_token() -> None:
    """Ray's defaults, token authentication included, without touching ~/.ray/auth_token: a
    local `ray.init()` finding no token writes one there, so the tests bring their own token
    in a file of their own (RAY_AUTH_TOKEN_PATH), which every Ray instance they start uses."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    import secrets
    import tempfile

    token = Path(tempfile.mkdtemp(prefix="skd_ray_token_")) / "auth_token"
    token.write_text(secrets.token_hex(16))
    token.chmod(0o600)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)


use_test_token()


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run fastest on one thread; several threads thrash on a shared 2-core CPU.
    Session-wide so that runs compared bit for bit use the same thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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
        cmd = [sys.executable, str(REPO / "run_search.py"), *args]
        proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"run_search.py {' '.join(args)} did not finish in {timeout}s:\n{out[-4000:]}")
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


@pytest.fixture
def cli(tmp_path: Path):
    runner = CliRun(tmp_path)
    yield runner
    runner.cleanup()
