"""Shared fixtures: run the CLI in a subprocess with Ray's and MLflow's files in tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers.cli_run import CliRun
from tests.helpers.postgres import PostgresServer


def use_test_token() -> None:
    """Ray's defaults, token authentication included, without touching ~/.ray/auth_token: a
    local `ray.init()` finding no token writes one there, so the tests bring their own token
    in a file of their own (RAY_AUTH_TOKEN_PATH), which every Ray instance they start uses."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    import atexit
    import secrets
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="skd_ray_token_")
    atexit.register(shutil.rmtree, folder, True)
    token = Path(folder) / "auth_token"
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


@pytest.fixture(autouse=True)
def keep_ray_auth_mode():
    """Commands run in this process set RAY_AUTH_MODE=token before they connect to a cluster
    that has a token (skd_ray.search.cluster.connect); left set, a later in-process ray.init() starts its
    GCS with token authentication while the driver, whose Ray config was read earlier, sends
    none. Each test leaves the variable as it found it."""
    before = os.environ.get("RAY_AUTH_MODE")
    yield
    if before is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = before


@pytest.fixture
def cli(tmp_path: Path):
    runner = CliRun(tmp_path)
    yield runner
    runner.cleanup()


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL 15 server for the whole session, started on first use (a test that
    needs it is skipped, with the reason, where PostgreSQL is not installed)."""
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.cleanup()


@pytest.fixture
def postgres_db(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server, named after the test."""
    import re

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return postgres_server.create_database(f"t_{name}")
