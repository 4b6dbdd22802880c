"""Opening a database that other processes may be creating at the same moment.

MLflow and Optuna create their tables (and run their schema migrations) in whichever process
first opens an empty database. Two processes doing that at once (two searches started
together, a search and `skd-ray results`, a search and `mlflow ui`) run the same migration
twice: MLflow then fails with `Online migration expected to match one row ... 0 found`,
`table _alembic_tmp_... already exists` or `duplicate column name`, and SQLite, which runs
DDL outside transactions, keeps the half-migrated schema, so retrying cannot repair it. So:

- creators are serialised: a lock file beside an SQLite file (`.<name>.lock`, `flock`, which
  NFSv4 clients such as EFS share), a PostgreSQL advisory lock (one key per purpose, held on
  a connection of its own) for a database server;
- a new MLflow SQLite file is built beside its place under another name and hard-linked into
  place whole (`prepare_mlflow_store`), so a process that takes no lock (`mlflow ui`) finds
  no file or a complete one; a file that someone else is still building is waited for;
- a database that is already complete is opened without any lock (checked read-only), so
  trial processes never queue for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_WAIT_S = 300.0  # the longest a creator waits for another (an MLflow migration takes seconds)
BUILDER_QUIET_S = 5.0  # a file unchanged this long is no longer being built by anyone
BUILDER_WAIT_S = 120.0  # the longest a file someone else builds is waited for
CONNECT_TIMEOUT_S = 5


def sqlite_path(url: str) -> Path | None:
    """The file of an `sqlite:///<path>` URL; None for any other URL or an in-memory database."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").partition("?")[0]
    return Path(path) if path and ":memory:" not in path else None


def is_postgresql(url: str) -> bool:
    return url.partition(":")[0].split("+")[0] in ("postgresql", "postgres")


def connect_args(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> dict[str, Any]:
    """SQLAlchemy `connect_args` that make a database server that does not answer fail in
    seconds (drivers otherwise wait for the operating system's TCP timeout)."""
    return {"connect_timeout": max(1, int(timeout_s))} if is_postgresql(url) else {}


def engine_for(url: str) -> Any:
    """A pool-less SQLAlchemy engine for one short look at `url` (dispose it after use)."""
    import sqlalchemy

    return sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args(url))


def advisory_key(purpose: str) -> int:
    """The PostgreSQL advisory-lock key (a signed 64-bit number) of `purpose`."""
    return int.from_bytes(hashlib.sha256(f"skd-ray:{purpose}".encode()).digest()[:8], "big", signed=True)


class LockTimeout(TimeoutError):
    """Another process held a creation lock longer than `LOCK_WAIT_S`."""


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float = LOCK_WAIT_S, note: str = "") -> Iterator[None]:
    """An exclusive `flock` on the file `path` while the block runs; the file is made for it
    and removed after, so a lock leaves nothing behind (one a killed process left is simply
    locked again). `note` (who holds it) is written through the locked descriptor: on NFS a
    lock is a POSIX lock, which closing any other descriptor of the file would drop."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() > deadline:
                raise LockTimeout(f"{path} stayed locked by another process for {timeout_s:.0f} s") from None
            time.sleep(0.1)
            continue
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed the file as we locked it: lock the one there now
    try:
        if note:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{note}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def advisory_lock(url: str, purpose: str, timeout_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """PostgreSQL's session advisory lock of `purpose` in the database of `url` while the block
    runs, on a connection of its own (advisory locks are per database)."""
    import sqlalchemy

    key = advisory_key(purpose)
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            deadline = time.monotonic() + timeout_s
            while not conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                if time.monotonic() > deadline:
                    raise LockTimeout(f"the {purpose} lock of {url.rpartition('@')[2]} stayed taken for "
                                      f"{timeout_s:.0f} s")
                time.sleep(0.2)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()


@contextlib.contextmanager
def creation_lock(url: str, purpose: str, timeout_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Serialise the processes that create the tables of `url`: a lock file beside an SQLite
    file, an advisory lock in a PostgreSQL database, nothing for anything else."""
    path = sqlite_path(url)
    if path is not None:
        with file_lock(path.with_name(f".{path.name}.lock"), timeout_s):
            yield
    elif is_postgresql(url):
        with advisory_lock(url, purpose, timeout_s):
            yield
    else:
        yield


# ---- MLflow's tables ---------------------------------------------------------------------

@functools.cache
def mlflow_head_revision() -> str | None:
    """The schema revision this MLflow writes (what its store verifies on opening); None when
    this MLflow does not say (its internals moved), and then nothing here takes part."""
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        return str(_get_latest_schema_revision())
    except Exception:  # noqa: BLE001 - an MLflow without this helper opens its stores on its own
        return None


def schema_revision(url: str) -> str | None:
    """The revision in `alembic_version` of the database at `url`, read without creating or
    locking anything; None when there is none yet (no file, an empty database, not one)."""
    path = sqlite_path(url)
    try:
        if path is not None:
            if not path.is_file() or path.stat().st_size == 0:
                return None
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
                row = db.execute("SELECT version_num FROM alembic_version").fetchone()
        else:
            import sqlalchemy

            engine = engine_for(url)
            try:
                with engine.connect() as conn:
                    row = conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).fetchone()
            finally:
                engine.dispose()
    except Exception:  # noqa: BLE001 - no table, no database, a busy file: not known to be complete
        return None
    return str(row[0]) if row else None


def mlflow_schema_ready(url: str) -> bool:
    """MLflow's tables at `url` exist and are migrated in full."""
    head = mlflow_head_revision()
    return head is not None and schema_revision(url) == head


def prepare_mlflow_store(url: str) -> None:
    """Make sure the MLflow database at `url` is created in full before this process opens it:
    a no-op for a complete database (and for MLflow servers and file stores); otherwise, under
    the creation lock, a new SQLite file is built beside its place and linked in whole, and a
    database server gets its tables from MLflow's own store (so only one process migrates).
    Errors are left to the store's opening, which reports them."""
    path = sqlite_path(url)
    if (path is None and not is_postgresql(url)) or mlflow_head_revision() is None or mlflow_schema_ready(url):
        return
    try:
        with creation_lock(url, "mlflow-schema"):
            if mlflow_schema_ready(url):
                return
            if path is not None:
                build_sqlite_store(path, url)
            else:
                from mlflow import MlflowClient

                # MLflow's store creates and migrates the tables as it opens. A process outside
                # skd-ray (an `mlflow server`) may be at it too: PostgreSQL runs each migration in
                # a transaction, so the loser's error rolls back and the store's opening retries.
                MlflowClient(tracking_uri=url).search_experiments(max_results=1)
    except Exception:  # noqa: BLE001 - the store's own opening says what is wrong, in its words
        return


def build_sqlite_store(path: Path, url: str) -> None:
    """(Under the creation lock.) An MLflow SQLite store at `path`: built in a side file and
    hard-linked into place when there is none; when someone outside the lock is building one
    there, waited for while it changes."""
    if path.exists():
        wait_for_builder(path, url)
        return
    side = path.with_name(f".{path.name}.{os.getpid()}.new")
    side.unlink(missing_ok=True)
    try:
        create_mlflow_tables(f"sqlite:///{side}")
        try:
            os.link(side, path)
        except FileExistsError:  # someone outside the lock got there first: theirs is kept
            wait_for_builder(path, url)
    finally:
        side.unlink(missing_ok=True)


def create_mlflow_tables(url: str) -> None:
    """MLflow's own creation of an empty database's tables, as its store runs it on opening."""
    from mlflow.store.db.utils import _initialize_tables

    engine = engine_for(url)
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def wait_for_builder(path: Path, url: str) -> None:
    """Wait while the incomplete SQLite file at `path` keeps changing (another process is
    creating its tables), at most `BUILDER_WAIT_S`; a file that stays still is left as it is."""
    deadline = time.monotonic() + BUILDER_WAIT_S
    while not mlflow_schema_ready(url) and time.monotonic() < deadline:
        try:
            if time.time() - path.stat().st_mtime > BUILDER_QUIET_S:
                return
        except OSError:
            return
        time.sleep(0.2)
