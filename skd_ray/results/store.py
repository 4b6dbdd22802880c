"""One MLflow tracking store: its URI and the one client every reader and writer uses.

The command line and the Python API build an `MlflowStore` from `--mlflow-uri` (or the
default SQLite file) once, check it, and pass the object down: the search's runs, every
trial's tracker, the leaderboard, the summary, plots, reports, export, the final evaluation
and the comparison all read and write through it, as Lightning's `MLFlowLogger` or Optuna's
storages hold one connection. A process makes its client once, on first use; the object
pickles as its URI, so a Ray trial process that receives it makes its own client there.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from skd_ray.errors import SkdError, check_output_file
from skd_ray.results.databases import prepare_mlflow_store
from skd_ray.results.mlflow_ui import ML_WORKFLOW, runs_table_path
from skd_ray.results.names import Artifacts
from skd_ray.training.metrics import mlflow_names

T = TypeVar("T")

# Tracking-store schemes MLflow can open (a bare path is a file store).
STORE_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")
SQLITE_HEADER = b"SQLite format 3\x00"
BROWSE_PORT = 5000
DEFAULT_OUTAGE_LIMIT_S = 900.0
OUTAGE_POLL_S = 2.0
LOG = logging.getLogger("skd_ray.store")
DATABASE_CONNECT_TIMEOUT_S = 5
SEARCH_PAGE = 5000  # runs per search query (MLflow allows up to 50,000)
HISTORY_BATCH = 500  # runs per metric-history query of a database store
HISTORY_LIMIT = 10_000_000  # points per such query: no limit in practice
# An MLflow server's bulk history request: at most 100 runs and 25,000 points per request.
SERVER_HISTORY_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
SERVER_HISTORY_BATCH = 100
SERVER_HISTORY_LIMIT = 25_000


def default_tracking_uri() -> str:
    """`sqlite:///<cwd>/mlflow.db`, absolute so Ray workers in other directories find it."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class MlflowStore:
    """An MLflow tracking store (SQLite file, database server or MLflow server) and its client."""

    def __init__(self, uri: str, outage_limit_s: float = DEFAULT_OUTAGE_LIMIT_S) -> None:
        self.uri = uri
        # How long every call waits for a store that went away (server restart, network) before
        # it fails: the search's own bound (--tracking-outage-limit).
        self.outage_limit_s = outage_limit_s
        self._client: Any = None
        self.gave_up = False  # this process stopped waiting (the search is stopping)

    @classmethod
    def of(cls, store: MlflowStore | str | None) -> MlflowStore:
        """The store named by `store`: an object as it is, a URI, or None for the default file."""
        if isinstance(store, MlflowStore):
            return store
        return cls(str(store) if store else default_tracking_uri())

    # ---- identity and pickling -------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "outage_limit_s": self.outage_limit_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.uri, self._client, self.gave_up = state["uri"], None, False
        self.outage_limit_s = float(state.get("outage_limit_s", DEFAULT_OUTAGE_LIMIT_S))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MlflowStore) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __repr__(self) -> str:
        return f"MlflowStore({masked(self.uri)!r})"

    def __str__(self) -> str:
        """The URI as messages print it: a password in it is shown as ***."""
        return masked(self.uri)

    @property
    def client(self) -> Any:
        """This process's `MlflowClient` for the store, made on first use, whose calls wait out an
        outage of the store (see `PatientClient`)."""
        if self._client is None:
            from mlflow import MlflowClient

            # MLflow draws a progress bar for every artifact it downloads (one per epoch for
            # the early-exit table it appends to): noise in a trial's log. A user's own setting wins.
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            # Nor a "View run ... / View experiment ..." line per closed run on a server's console.
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
            # MLflow's own retries of a server that does not answer take about two minutes per
            # call; a few seconds here, and the outage is waited out by PatientClient instead.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            prepare_mlflow_store(self.uri)  # a new database is created in full by one process at a time
            self._client = PatientClient(MlflowClient(tracking_uri=self.uri), self)
        return self._client

    def patiently(self, call: Callable[[], T], what: str = "call") -> T:
        """`call()`, waiting while the store is unreachable (see `wait_out`) for at most
        `outage_limit_s`; any other error, or one after the bound, is raised as it is."""
        return wait_out(call, f"MLflow store {self}", self.outage_limit_s, lambda: self.gave_up, what)

    def ping(self, timeout_s: float = 3.0) -> str | None:
        """None when the store answers now, else why not (one short attempt, no retries):
        what a watcher polls. Files and SQLite always answer."""
        if self.is_server:
            try:
                import urllib.request

                urllib.request.urlopen(self.uri.rstrip("/") + "/health", timeout=timeout_s).read()
            except Exception as err:  # noqa: BLE001 - any failure to answer is the answer
                return " ".join(str(getattr(err, "reason", None) or err).split())[:160]
            return None
        return ping_database(self.uri, timeout_s) if self.is_database else None

    @property
    def scheme(self) -> str:
        scheme, sep, _ = self.uri.partition(":")
        return scheme if sep and len(scheme) > 1 else "file"

    @property
    def is_database(self) -> bool:
        """A database server MLflow opens through SQLAlchemy (PostgreSQL, MySQL, SQL Server)."""
        return self.scheme.split("+")[0] in ("postgresql", "mysql", "mssql")

    @property
    def is_server(self) -> bool:
        """An MLflow tracking server (http/https), as opposed to a database or a file."""
        return self.scheme in ("http", "https")

    # ---- checks before any work starts ----------------------------------------------
    def check_reachable(self) -> None:
        """Fail fast with one clear line when the tracking store cannot be used."""
        self.check_sqlite_path()
        if self.scheme == "sqlite" and self.uri.startswith("sqlite:///"):
            path = Path(self.uri.removeprefix("sqlite:///"))
            parent = path.parent if str(path) else Path.cwd()
            if not parent.is_dir() or not os.access(parent, os.W_OK):
                raise SkdError(f"MLflow store {self} is not writable",
                               "pass --mlflow-uri with a writable location")
            return
        problem = self.ping(DATABASE_CONNECT_TIMEOUT_S)  # one short attempt: MLflow would retry ~2 minutes
        if problem is not None and self.is_server:
            raise SkdError(f"MLflow server {self} cannot be reached ({problem})",
                           "start it (see docs/cluster.md: the MLflow server) or pass another --mlflow-uri")
        if problem is not None:
            raise SkdError(f"MLflow database {self} cannot be reached ({problem})",
                           "start the database (see docs/cluster.md) or pass another --mlflow-uri")

    def check_sqlite_path(self) -> None:
        """The file of an SQLite store must be one the file system can hold, under folders, not
        files: SQLite reports either only as `unable to open database file`, and a name too long
        for the file system makes the checks below raise an OSError instead of answering."""
        uri = self.uri
        path = uri.removeprefix("sqlite:///").partition("?")[0] if uri.startswith("sqlite:///") else ""
        if path and ":memory:" not in path:
            check_output_file(path, "MLflow store", "--mlflow-uri")

    def check_usable(self, experiment: str | None = None, *, multi_process: bool = True) -> None:
        """Open the tracking store, read it and write to it before any work starts, so a store
        that passes `check_reachable` but cannot work (a file that is not a database, a folder,
        an unknown scheme, an in-memory SQLite that every trial process would see empty) is one
        clear error instead of a traceback in every trial. The write is creating `experiment`
        when it does not exist yet (the search would create it anyway); with no experiment the
        store is only read."""
        self.check_reachable()
        scheme, sep, rest = self.uri.partition(":")
        if sep and len(scheme) > 1 and scheme not in STORE_SCHEMES:
            raise SkdError(f"MLflow tracking URI {self} has the unknown scheme {scheme!r}",
                           "use sqlite:///<path>.db, postgresql://..., http(s)://host:port or another scheme "
                           "MLflow supports")
        if scheme == "sqlite":
            self._check_sqlite_store(rest, multi_process)
        try:
            retry(lambda: self._probe(experiment), transient=TRANSIENT_ON_CREATION)
        except Exception as err:  # MlflowException, SQLAlchemy and driver errors alike
            first = " ".join(str(err).split())[:300]
            raise SkdError(f"MLflow store {self} cannot be used ({type(err).__name__}: {first})",
                           "pass --mlflow-uri with a working store, e.g. sqlite:///$PWD/mlflow.db") from None

    def _probe(self, experiment: str | None) -> None:
        self._client = None  # a client whose store creation failed half-way starts again
        self.client.search_experiments(max_results=1)
        if experiment is not None:
            self.experiment_id(experiment, create=True)

    def _check_sqlite_store(self, rest: str, multi_process: bool) -> None:
        """An SQLite store must be a file (or not exist yet) holding an SQLite database, and on
        disk when several processes log to it."""
        uri = self.uri
        if rest in ("", "//", "///:memory:") or ":memory:" in rest or "mode=memory" in rest:
            if multi_process:
                raise SkdError(f"MLflow store {uri} is an in-memory SQLite database, which each trial process "
                               "would see empty", "pass --mlflow-uri sqlite:///<path>.db (a file)")
            return
        path = Path(uri.removeprefix("sqlite:///").partition("?")[0])
        if path.is_dir():
            raise SkdError(f"MLflow store {uri} is a folder, not an SQLite file",
                           "pass --mlflow-uri sqlite:///<folder>/mlflow.db")
        if path.is_file() and path.stat().st_size > 0:
            with path.open("rb") as fh:
                if fh.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                    raise SkdError(f"MLflow store {uri} is a file that is not an SQLite database",
                                   "pass --mlflow-uri with a new file name or an MLflow database")

    def check_search_run(self, experiment_id: str, run_id: str) -> Any:
        """The parent run of a saved search, read before a resume changes anything; returns it."""
        try:
            run = self.client.get_run(run_id)
        except Exception as err:  # MlflowException: RESOURCE_DOES_NOT_EXIST, or the store fails
            raise SkdError(f"the search's MLflow run {run_id} is not in {self} "
                           f"({' '.join(str(err).split())[:200]})",
                           "pass the --mlflow-uri the search was started with") from None
        if run.info.experiment_id != experiment_id:
            raise SkdError(f"MLflow run {run_id} in {self} belongs to another experiment than the saved search's",
                           "pass the --mlflow-uri the search was started with")
        return run

    # ---- reading and writing ---------------------------------------------------------
    def experiment_id(self, name: str, *, create: bool = False) -> str | None:
        """The id of experiment `name`; created when missing and `create` (another process
        creating it at the same moment is fine), else None."""
        c = self.client
        exp = c.get_experiment_by_name(name)
        if exp is not None or not create:
            return exp.experiment_id if exp is not None else None
        try:
            return c.create_experiment(name)
        except Exception:  # another process created it concurrently
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Log params once, in batches of 100 (MLflow's per-request limit)."""
        from mlflow.entities import Param

        items = [Param(k, param_text(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        """MLflow's history of reported metric `key` in a run, under its grouped name or, for a
        run logged before the grouping, its old one."""
        for name in mlflow_names(key):
            history = self.client.get_metric_history(run_id, name)
            if history:
                return list(history)
        return []

    def search_all(self, experiment_ids: list[str], filter_string: str = "",
                   order_by: list[str] | None = None) -> list[Any]:
        """Every run that `filter_string` matches, read page by page (`SEARCH_PAGE` runs a query):
        a search of any size in a few queries, and none of it cut off at a page's end."""
        runs: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs(experiment_ids, filter_string=filter_string, order_by=order_by,
                                           max_results=SEARCH_PAGE, page_token=token)
            runs.extend(page)
            token = getattr(page, "token", None)
            if not token or not page:
                return runs

    def metric_histories(self, run_ids: list[str], key: str) -> dict[str, list[Any]]:
        """`metric_history` of many runs at once: {run id: its history of reported metric `key`},
        runs without it left out. A database store answers `HISTORY_BATCH` runs a query, an
        MLflow server 100 runs a request; other stores (files), one run at a time."""
        found: dict[str, list[Any]] = {}
        missing = list(dict.fromkeys(run_ids))
        for name in mlflow_names(key):  # the grouped name, then the one of runs logged before it
            if not missing:
                break
            found.update(self._histories(missing, name))
            missing = [r for r in missing if r not in found]
        return found

    def _histories(self, run_ids: list[str], name: str) -> dict[str, list[Any]]:
        backend = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        out: dict[str, list[Any]] = {}
        if hasattr(backend, "get_metric_history_bulk"):  # a database (SQLAlchemy) store
            for i in range(0, len(run_ids), HISTORY_BATCH):
                for m in backend.get_metric_history_bulk(run_ids[i:i + HISTORY_BATCH], name, HISTORY_LIMIT):
                    out.setdefault(m.run_id, []).append(m)
            return out
        for i in range(0, len(run_ids), SERVER_HISTORY_BATCH):
            chunk = run_ids[i:i + SERVER_HISTORY_BATCH]
            got = self._server_histories(backend, chunk, name) if self.is_server else None
            if got is None:  # not a server, or one that does not answer the bulk request
                got = {r: list(h) for r in chunk if (h := self.client.get_metric_history(r, name))}
            out.update(got)
        return out

    @staticmethod
    def _server_histories(backend: Any, run_ids: list[str], name: str) -> dict[str, list[Any]] | None:
        """The histories of up to 100 runs in one request to an MLflow server (the bulk endpoint
        its own UI charts runs with); None when the server does not answer it, or cut it short."""
        from mlflow.entities import Metric
        from mlflow.utils.rest_utils import http_request

        try:
            response = http_request(backend.get_host_creds(), SERVER_HISTORY_ENDPOINT, "GET",
                                    params={"run_id": run_ids, "metric_key": name, "max_results": SERVER_HISTORY_LIMIT})
            if response.status_code != 200:
                return None
            points = response.json().get("metrics", [])
        except Exception:  # noqa: BLE001 - any problem: the caller asks run by run
            return None
        if len(points) >= SERVER_HISTORY_LIMIT:
            return None
        out: dict[str, list[Any]] = {}
        for p in points:
            out.setdefault(p["run_id"], []).append(Metric(p["key"], p["value"], p["timestamp"], p["step"]))
        return out

    def early_exit_sweep(self, run_id: str) -> list[dict[str, Any]]:
        """The rows of a run's early-exit sweep table (`TrialTracker`), in the order they were
        logged; [] for a run without one (single-exit methods, searches logged before the table)."""
        import tempfile

        c = self.client
        if not any(f.path == Artifacts.EARLY_EXIT_SWEEP for f in c.list_artifacts(run_id)):
            return []
        with tempfile.TemporaryDirectory() as tmp:
            table = json.loads(Path(c.download_artifacts(run_id, Artifacts.EARLY_EXIT_SWEEP, tmp)).read_text())
        return [dict(zip(table["columns"], row)) for row in table["data"]]

    # ---- where a person browses it ---------------------------------------------------
    def browse_url(self, experiment_id: str | None = None, view: str | None = None, port: int = BROWSE_PORT) -> str:
        """Where the experiment's runs table opens in MLflow's training view (in saved view
        `view`, see skd_ray.results.mlflow_ui): at the server's own address for an MLflow
        server, else at the local `mlflow ui` that the browse command starts."""
        base = self.uri.rstrip("/") if self.is_server else f"http://127.0.0.1:{port}"
        if experiment_id is None:
            return f"{base}/#/experiments?{ML_WORKFLOW}"
        return f"{base}/{runs_table_path(experiment_id, view)}"


class StoreOfRequest:
    """For a request that names its store by `tracking_uri` (a string: requests are saved as
    JSON and rebuilt on resume): `store`, the one `MlflowStore` of that URI for the request's
    work, made again only when the URI is changed (a resume pointed at another --mlflow-uri)."""

    @property
    def store(self) -> MlflowStore:
        uri = self.tracking_uri
        limit = float(getattr(self, "tracking_outage_s", DEFAULT_OUTAGE_LIMIT_S))
        cached = self.__dict__.get("_store")
        if cached is None or cached.uri != uri:
            cached = self.__dict__["_store"] = MlflowStore(uri, limit)
        cached.outage_limit_s = limit
        return cached


class StoreUnavailable(SkdError):
    """The tracking store stayed unreachable past the search's bound."""


# What the client libraries say when the store is not there (MLflow over HTTP after its own few
# retries, SQLAlchemy drivers for PostgreSQL, MySQL): worth waiting for, unlike any other error.
UNREACHABLE = (
    "Connection refused", "Failed to establish a new connection", "Connection reset", "Connection aborted",
    "RemoteDisconnected", "could not connect to server", "server closed the connection",
    "terminating connection due to administrator command", "the database system is shutting down",
    "the database system is starting up", "Can't connect to MySQL server", "Lost connection to MySQL server",
    "connection timeout expired",
)


def ping_database(url: str, timeout_s: float = 3.0) -> str | None:
    """None when the database at `url` takes a connection now, else why not (one attempt)."""
    try:
        import sqlalchemy

        args = {"connect_timeout": max(1, int(timeout_s))} if url.startswith("postgres") else {}
        engine = sqlalchemy.create_engine(url, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect():
            pass
    except Exception as err:  # noqa: BLE001 - any failure to answer is the answer
        return " ".join(str(getattr(err, "orig", None) or err).split())[:160]
    return None


def wait_out(call: Callable[[], T], label: str, limit_s: float, gave_up: Callable[[], bool] = lambda: False,
             what: str = "call") -> T:
    """`call()`, polling every few seconds while what it talks to (`label`) is unreachable
    (`is_unreachable`) for at most `limit_s`; any other error, one after the bound
    (`StoreUnavailable`), or any once `gave_up()`, is raised."""
    down_since: float | None = None
    while True:
        try:
            result = call()
        except Exception as err:
            if gave_up() or not is_unreachable(err):
                raise
            now = time.monotonic()
            if down_since is None:
                down_since = now
                LOG.warning("%s unreachable during %s; waiting up to %.0f s", label, what, limit_s)
            if now - down_since >= limit_s:
                raise StoreUnavailable(f"{label} unreachable for {now - down_since:.0f} s",
                                       "start it again; a search continues with skd-ray resume") from err
            time.sleep(OUTAGE_POLL_S)
            continue
        if down_since is not None:
            LOG.warning("%s back after %.0f s", label, time.monotonic() - down_since)
        return result


def is_unreachable(err: BaseException) -> bool:
    """The error, or one it was raised from (Optuna wraps the driver's error in its own), says
    the store is not there."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if any(word in f"{type(cause).__name__}: {cause}" for word in UNREACHABLE):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class PatientClient:
    """An `MlflowClient` whose every call waits out an outage of its store (`MlflowStore.patiently`):
    a tracking server that restarts, or a database that goes away for a while, pauses the
    runs that log to it instead of failing them; what they log reaches the store once it is
    back. Attributes that are not methods are the client's own."""

    def __init__(self, client: Any, store: MlflowStore) -> None:
        self._client, self._store = client, store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._store.patiently(lambda: attr(*args, **kwargs), name)

        return call


# What a store being created by another process at the same moment (a second search, an
# `mlflow ui`, `--results`) or a busy SQLite file reports for a moment.
TRANSIENT_ON_CREATION = ("locked", "already exists", "Online migration", "duplicate key", "UniqueViolation",
                         "alembic_version")


def retry(fn: Callable[[], T], attempts: int = 5, transient: tuple[str, ...] = ("locked",)) -> T:
    """SQLite stores can report 'database is locked' under concurrent trials, and a new store
    whose tables another process is creating at the same moment reports 'table ... already
    exists' or a half-done migration: retry briefly."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as err:  # mlflow raises MlflowException wrapping OperationalError
            if not any(word in str(err) for word in transient) or i == attempts - 1:
                raise
            time.sleep(0.2 * (i + 1))
    raise AssertionError("unreachable")


def masked(uri: str) -> str:
    """`uri` with the password of its user part shown as *** (for messages and logs)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return uri


def param_text(value: Any) -> str:
    """How a config value is stored as an MLflow param: strings as they are, anything else as
    JSON (true, null, [1, 2]) so that it reads back with json.loads."""
    return value if isinstance(value, str) else json.dumps(value)
