"""A real PostgreSQL 15 server for tests, started from Debian's binaries in a temporary folder.

The data directory, the server's log and its unix socket all live in one fresh folder; the
server listens on 127.0.0.1 on a free port with trust authentication for loopback only. As
root, the server runs as the `postgres` OS user (PostgreSQL refuses to run as root); as anyone
else, as that user. It is stopped by the PID it was started with, never by name. Each test
gets a database of its own from `create_database`.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers.ports import free_port

BINDIR = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
SUPERUSER = "postgres"
# Durability settings off: a test server's data is thrown away with its folder.
SETTINGS = {"listen_addresses": HOST, "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "max_connections": "200", "shared_buffers": "32MB", "logging_collector": "off"}


def missing_reason(bindir: Path = BINDIR) -> str | None:
    """Why no server can be started here, or None when one can."""
    absent = [name for name in ("initdb", "postgres") if not (bindir / name).is_file()]
    if absent:
        return (f"PostgreSQL 15 binaries not found ({', '.join(absent)} in {bindir}); "
                "bash scripts/system_packages.sh installs them")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return f"running as root and there is no {SUPERUSER!r} OS user to run PostgreSQL as"
    try:
        import psycopg  # noqa: F401  (the driver of postgresql:// URIs in SQLAlchemy 2.1)
    except ImportError:
        return "psycopg (3) is not installed (bash scripts/install.sh installs it)"
    return None


class PostgresServer:
    """One PostgreSQL server in a temporary folder: `start()`, `stop()`, `restart()`,
    `create_database(name)` and `url(name)`. Also a context manager."""

    def __init__(self, bindir: Path = BINDIR, start_timeout: float = 60) -> None:
        self.bindir = bindir
        self.start_timeout = start_timeout
        self.folder: Path | None = None
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None  # initdb + start, the first time
        self.databases: list[str] = []
        self._owner: dict[str, int] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def data(self) -> Path:
        assert self.folder is not None, "the server has not been started"
        return self.folder / "data"

    @property
    def log(self) -> Path:
        assert self.folder is not None, "the server has not been started"
        return self.folder / "postgres.log"

    def start(self) -> PostgresServer:
        """Create the cluster (first call only) and start the server; skip the test when
        PostgreSQL cannot run here."""
        reason = missing_reason(self.bindir)
        if reason:
            pytest.skip(reason)
        if self.proc is not None and self.proc.poll() is None:
            return self
        began = time.monotonic()
        if self.folder is None:
            self._init_cluster()
        for _ in range(5):  # a free port can be taken by someone else before the server binds it
            self.port = self.port or free_port()
            if self._launch():
                break
            self.port = None
        else:
            pytest.fail(f"PostgreSQL did not start:\n{self.log.read_text()[-3000:]}")
        if self.start_seconds is None:
            self.start_seconds = time.monotonic() - began
        return self

    def _init_cluster(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="skd_pg_"))
        # A process that ends without cleanup() (a script's uncaught error) leaves no server behind.
        atexit.register(self.cleanup)
        if os.geteuid() == 0:
            user = pwd.getpwnam(SUPERUSER)
            self._owner = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        self.folder.chmod(0o700)
        out = subprocess.run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                              "--auth-local=trust", "--auth-host=trust", "-E", "UTF8", "--locale=C.UTF-8",
                              "--no-sync", "--no-instructions"],
                             capture_output=True, text=True, cwd=self.folder, env=self._env(), **self._owner)
        if out.returncode != 0:
            self.cleanup()
            pytest.fail(f"initdb failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        # Trust only loopback: initdb's pg_hba.conf also trusts local sockets, which live in
        # this folder (mode 700) and nowhere else.
        (self.data / "pg_hba.conf").write_text(
            f"local all all trust\nhost all all {HOST}/32 trust\nhost all all ::1/128 trust\n")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return {**env, "LC_ALL": "C.UTF-8", "HOME": str(self.folder)}

    def _launch(self) -> bool:
        """Start `postgres` on self.port; True once it accepts connections, False when the
        port was taken."""
        settings = {**SETTINGS, "port": str(self.port), "unix_socket_directories": str(self.folder)}
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                                         env=self._env(), start_new_session=True, **self._owner)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "could not bind" in self.log.read_text() or "already in use" in self.log.read_text():
                    return False
                pytest.fail(f"PostgreSQL exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self._accepts_connections():
                return True
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"PostgreSQL did not accept connections within {self.start_timeout}s:\n"
                    f"{self.log.read_text()[-3000:]}")

    def _accepts_connections(self) -> bool:
        import psycopg

        try:
            psycopg.connect(host=HOST, port=self.port, user=SUPERUSER, dbname="postgres", connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT to the postmaster it started: clients are disconnected), then
        SIGQUIT, then SIGKILL to its process group when it does not go."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig in (signal.SIGINT, signal.SIGQUIT):
            os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self) -> PostgresServer:
        """Stop and start again on the same data and port: open connections break, the data stays."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- databases ------------------------------------------------------------------------------

    def url(self, dbname: str = "postgres", driver: str | None = None) -> str:
        """`postgresql://postgres@127.0.0.1:<port>/<dbname>`, as MLflow's --backend-store-uri and
        SQLAlchemy take it (SQLAlchemy 2.1 opens postgresql:// with psycopg 3); `driver` names
        another SQLAlchemy driver (`postgresql+<driver>://`)."""
        assert self.port is not None, "the server has not been started"
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{SUPERUSER}@{HOST}:{self.port}/{dbname}"

    def execute(self, statement: str, dbname: str = "postgres") -> list[tuple]:
        """Run one SQL statement outside a transaction; its rows (if it returns any)."""
        import psycopg

        with psycopg.connect(host=HOST, port=self.port, user=SUPERUSER, dbname=dbname, connect_timeout=10,
                             autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> str:
        """A new empty database `name` (dropped first if a previous test left one); its URL."""
        quoted = '"' + name.replace('"', '""') + '"'
        self.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        self.execute(f"CREATE DATABASE {quoted}")
        self.databases.append(name)
        return self.url(name)
