"""Where a search keeps its Optuna study: an SQLite file in the search's folder (the default),
or the database that `--optuna-storage URL` names (PostgreSQL, MySQL or another SQLite file),
opened through Optuna's `RDBStorage`.

Why an SQLite file by default, and not Optuna's JournalStorage: the search's driver is the only
process that ever writes its study (trials get a resolved config and report to Tune, never to
Optuna), and each search has a study and a file of its own. Optuna's FAQ advises against SQLite
for *parallel* optimisation (several processes writing one study: its file lock serialises
them and "database is locked" errors follow) and on NFS (its locks are unreliable between
machines). With a single writer neither applies: nothing contends for the lock, and the
file on a shared disk (EFS on a cluster) is opened by the one node that runs the driver.
JournalStorage (an append-only log, `JournalFileBackend`) is Optuna's answer for several
writers without a database server; a single writer gains nothing from it, and SQLite gives
what this project relies on: every write is a transaction, so a driver killed or a disk
filled mid-write leaves the last committed study (a log would be cut mid-record);
`PRAGMA quick_check` tells an intact file from a damaged one before a resume
(`tune_files.check_study`); any SQLite tool and optuna-dashboard read it as it is; and the
searches saved before keep opening. A database server is for what a file cannot give: one
study store for many searches and machines, browsed live from elsewhere.

One live driver per study. Ray Tune's OptunaSearch keeps the Optuna trials it asked for in
memory and tells their results itself, so a second driver on the same study would sample
from a history it only half knows and finish trials it never started. So a new search creates
its study (it never joins one that exists), and a driver holds its study while it runs: the
search's folder lock (`skd_ray.search.state.live`) and, in a PostgreSQL storage, an advisory
lock named after the study. A second driver is refused with one error line.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna

from skd_ray.errors import SkdError, check_output_file
from skd_ray.results.databases import (
    LockTimeout,
    advisory_lock,
    connect_args,
    creation_lock,
    engine_for,
    is_postgresql,
    sqlite_path,
)
from skd_ray.results.store import (
    DEFAULT_OUTAGE_LIMIT_S,
    SQLITE_HEADER,
    TRANSIENT_ON_CREATION,
    masked,
    retry,
    wait_out,
)
from skd_ray.search.state.tune_files import STUDY_FILE, check_study

# Where studies are now, by the URL their storage was pickled with; a resumed search's driver
# fills it before Ray Tune unpickles its searcher (see `relocate`).
RELOCATED: dict[str, str] = {}
# SQLAlchemy dialects Optuna's RDBStorage is tested with.
STUDY_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
FLAG = "--optuna-storage"


class StudyStorage:
    """The Optuna storage of one search: `url` as given (None: `optuna.db` in `folder`)."""

    def __init__(self, url: str | None, folder: str | Path) -> None:
        self.given = url or None
        self.folder = Path(folder)

    @property
    def url(self) -> str:
        return self.given or f"sqlite:///{self.folder / STUDY_FILE}"

    @property
    def is_default(self) -> bool:
        """The search's own file, which only its driver opens."""
        return self.given is None

    def __str__(self) -> str:
        """The URL as messages and MLflow show it: a password in it is shown as ***."""
        return masked(self.url)

    def describe(self, study_name: str) -> str:
        """Where the study is, as the search's MLflow run says it (the password masked)."""
        return f"{study_name} in {self}"

    # ---- checks before Ray starts ------------------------------------------------------
    def check_usable(self, mlflow_uri: str | None = None) -> None:
        """Fail fast, with one line, on a storage a search cannot keep its study in: an
        unknown scheme, an in-memory or unwritable SQLite file, a database that does not
        answer, or refuses Optuna's tables, or is the MLflow store's own database. Opening it
        creates Optuna's tables in an empty database (as the search would)."""
        if self.is_default:
            return
        url = self.given or ""
        scheme = url.partition(":")[0].split("+")[0] if ":" in url else ""
        if scheme not in STUDY_SCHEMES:
            raise SkdError(f"{FLAG} {self} is not a database URL Optuna can keep a study in",
                           f"pass {FLAG} postgresql://USER@HOST:5432/DB, mysql://... or sqlite:///<path>.db")
        if scheme == "sqlite":
            self._check_sqlite_file(url)
        if mlflow_uri and same_database(url, mlflow_uri):
            raise SkdError(f"{FLAG} {self} is the MLflow store's database: MLflow and Optuna each keep their "
                           "schema version in a table named alembic_version, and would read each other's",
                           "create a database of its own for Optuna (e.g. CREATE DATABASE optuna) and pass that")
        self._check_database()
        try:
            self.open()
        except SkdError:
            raise
        except Exception as err:  # noqa: BLE001 - SQLAlchemy, driver and Optuna errors alike
            raise SkdError(f"Optuna storage {self} cannot be used ({first_line(err)})",
                           f"pass {FLAG} with a database this user can create tables in") from None

    def _check_sqlite_file(self, url: str) -> None:
        path = sqlite_path(url)
        if path is None:
            raise SkdError(f"{FLAG} {self} is an in-memory SQLite database, which a resume would find empty",
                           f"pass {FLAG} sqlite:///<path>.db (a file) or a database server's URL")
        check_output_file(str(path), "Optuna storage", FLAG)
        if path.is_file() and path.stat().st_size > 0:
            with path.open("rb") as fh:
                if fh.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                    raise SkdError(f"Optuna storage {self} is a file that is not an SQLite database",
                                   f"pass {FLAG} with a new file name or an Optuna database")
        if not path.parent.is_dir():
            raise SkdError(f"the folder of Optuna storage {self} does not exist", f"create it or pass another {FLAG}")

    def _check_database(self) -> None:
        """One connection (with a short timeout for a server), then what the database holds."""
        import sqlalchemy

        engine = engine_for(self.url)
        try:
            with engine.connect() as conn:
                tables = set(sqlalchemy.inspect(conn).get_table_names())
        except Exception as err:  # noqa: BLE001 - driver errors differ by database
            raise SkdError(f"Optuna storage {self} cannot be reached ({first_line(err)})",
                           f"start the database (see docs/cluster.md) or pass another {FLAG}") from None
        finally:
            engine.dispose()
        if "alembic_version" in tables and "version_info" not in tables:
            raise SkdError(f"Optuna storage {self} holds another application's tables (MLflow's?), not Optuna's",
                           "create a database of its own for Optuna (e.g. CREATE DATABASE optuna) and pass that")

    # ---- opening -----------------------------------------------------------------------
    def open(self) -> Any:
        """Optuna's `RDBStorage` of this URL. Creating its tables in a shared database is
        serialised between processes (`creation_lock`), and retried when a process outside
        skd-ray is creating them at the same moment."""
        kwargs: dict[str, Any] = {}
        if not self.url.startswith("sqlite"):
            # A connection a server dropped (a restart, an idle timeout) is replaced, not failed.
            kwargs = {"pool_pre_ping": True, "connect_args": connect_args(self.url)}
        if self.is_default:
            return RelocatableRDBStorage(self.url, engine_kwargs=kwargs)
        with creation_lock(self.url, "optuna-schema"):
            return retry(lambda: RelocatableRDBStorage(self.url, engine_kwargs=kwargs),
                         attempts=10, transient=TRANSIENT_ON_CREATION)

    def has_study(self, study_name: str) -> bool:
        """A study named `study_name` is in this storage (False for a default file not made yet)."""
        if self.is_default and not (self.folder / STUDY_FILE).is_file():
            return False
        try:
            self.open().get_study_id_from_name(study_name)
        except KeyError:
            return False
        return True

    def create_study(self, study_name: str, directions: list[str], storage: Any = None) -> None:
        """Create the new search's study; one that exists already belongs to another search,
        which this one must not join."""
        try:
            optuna.create_study(study_name=study_name, storage=storage or self.open(), directions=directions)
        except optuna.exceptions.DuplicatedStudyError:
            raise SkdError(f"Optuna storage {self} already holds a study named {study_name}, which belongs to "
                           "another search", "start the search again (it takes the next second's name) or pass "
                           f"another {FLAG}") from None

    def check_study(self, study_name: str) -> None:
        """Before a resume: the study of the search is there (and, in a file, intact)."""
        path = sqlite_path(self.url)
        if path is not None:  # the search's own file, or another: read-only, SQLite's integrity check first
            check_study(path, study_name)
            return
        self._check_database()
        try:
            found = self.has_study(study_name)
        except Exception as err:  # noqa: BLE001 - SQLAlchemy, driver and Optuna errors alike
            raise SkdError(f"the search's Optuna storage {self} cannot be read ({first_line(err)})",
                           f"pass the {FLAG} the search was started with") from None
        if not found:
            raise SkdError(f"the search's Optuna study {study_name} is not in {self}",
                           f"pass the {FLAG} the search was started with")

    @contextlib.contextmanager
    def hold(self, study_name: str) -> Iterator[None]:
        """While the block runs, this process is the study's one driver: in a PostgreSQL
        storage, an advisory lock named after the study, on a connection held that long (a
        file study is held by its search's folder lock)."""
        with contextlib.ExitStack() as held:
            if is_postgresql(self.url):
                try:
                    held.enter_context(advisory_lock(self.url, f"study:{study_name}", timeout_s=0))
                except LockTimeout:
                    raise SkdError(f"Optuna study {study_name} in {self} is in use by another live search driver",
                                   "wait for that search to end (or stop it) before resuming this one") from None
            yield


class RelocatableRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage, which connects to its database as it is unpickled (Ray Tune pickles
    a search's searcher with its study), connecting instead to where the study is now when the
    driver says it moved (`RELOCATED`); and whose every call waits out a database that went away
    for a while (a restart, a fail-over) instead of failing the search (see `patient`)."""

    outage_limit_s = DEFAULT_OUTAGE_LIMIT_S
    gave_up = False  # the driver's watch stopped the search: fail at once (class-wide, per process)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__({**state, "url": RELOCATED.get(state["url"], state["url"])})


def patient(name: str, method: Any) -> Any:
    """`method` of the storage, waiting while its database is unreachable (`wait_out`)."""
    @functools.wraps(method)
    def call(self: RelocatableRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return wait_out(lambda: method(self, *args, **kwargs), f"Optuna storage {masked(self.url)}",
                        self.outage_limit_s, lambda: RelocatableRDBStorage.gave_up, name)
    return call


for _name, _member in list(vars(optuna.storages.RDBStorage).items()):
    if callable(_member) and not _name.startswith("_"):
        setattr(RelocatableRDBStorage, _name, patient(_name, _member))


def give_up_on_studies() -> None:
    """The search is stopping without its study's database: its calls fail at once from now on."""
    RelocatableRDBStorage.gave_up = True


def relocate(saved_request: dict[str, Any], now: StudyStorage, study_name: str) -> None:
    """Before a search is resumed: the study it was started with (`saved_request`: its saved
    settings) is now at `now` when that is elsewhere (a database copied to another, a
    `--storage` folder moved with its `optuna.db`)."""
    then = StudyStorage(saved_request.get("optuna_storage"), Path(str(saved_request["storage"])) / study_name)
    if then.url != now.url:
        RELOCATED[then.url] = now.url


def same_database(a: str, b: str) -> bool:
    """`a` and `b` name the same database (driver names and passwords aside)."""
    path_a, path_b = sqlite_path(a), sqlite_path(b)
    if path_a is not None or path_b is not None:
        return path_a is not None and path_b is not None and path_a.resolve() == path_b.resolve()
    try:
        from sqlalchemy.engine import make_url

        ua, ub = make_url(a), make_url(b)
    except Exception:  # noqa: BLE001 - not database URLs (an MLflow server's http://)
        return False
    return (ua.get_backend_name(), ua.host or "localhost", ua.port, ua.database) == \
        (ub.get_backend_name(), ub.host or "localhost", ub.port, ub.database)


def first_line(err: BaseException) -> str:
    text = " ".join(str(getattr(err, "orig", None) or err).split())
    return f"{type(err).__name__}: {text}"[:300]
