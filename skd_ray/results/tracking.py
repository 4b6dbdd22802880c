"""MLflow adapter: one parent run per search, one child run per trial, rank 0 logs.

Everything goes through `MlflowClient` with explicit run ids (no global "active run"), so
the driver, trial processes and rank-0 workers can log to the same runs concurrently.
The default store is a SQLite file in the working directory; any MLflow server URI works.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skd_ray.errors import SkdError, check_output_file
from skd_ray.results.mlflow_ui import FIRST_METRICS, objective_first
from skd_ray.results.names import Artifacts, Tags
from skd_ray.results.statuses import REOPENED, Status, mlflow_run_status
from skd_ray.training.metrics import SWEEP_COLUMNS, logged_name, mlflow_names, sweep_rows

if TYPE_CHECKING:
    from skd_ray.training.hardware import RunSetup


def default_tracking_uri() -> str:
    """`sqlite:///<cwd>/mlflow.db`, absolute so Ray workers in other directories find it."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


CONSTANT_PARAM = "config."  # prefix of a search's constants on its parent run


def client(uri: str) -> Any:
    from mlflow import MlflowClient

    # MLflow draws a progress bar for every artifact it downloads (one per epoch for the
    # early-exit table it appends to): noise in a trial's log. A user's own setting wins.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return MlflowClient(tracking_uri=uri)


def git_commit() -> str:
    """Commit of the code being run (the package's checkout), or 'unknown'."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def check_sqlite_path(uri: str) -> None:
    """The file of an SQLite store must be one the file system can hold, under folders, not
    files: SQLite reports either only as `unable to open database file`, and a name too long
    for the file system makes the checks below raise an OSError instead of answering."""
    path = uri.removeprefix("sqlite:///").partition("?")[0] if uri.startswith("sqlite:///") else ""
    if path and ":memory:" not in path:
        check_output_file(path, "MLflow store", "--mlflow-uri")


def check_reachable(uri: str) -> None:
    """Fail fast with one clear line when the tracking store cannot be used."""
    check_sqlite_path(uri)
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        parent = path.parent if str(path) else Path.cwd()
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise SkdError(f"MLflow store {uri} is not writable", "pass --mlflow-uri with a writable location")
        return
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
        except (urllib.error.URLError, OSError) as err:
            raise SkdError(f"MLflow server {uri} cannot be reached ({getattr(err, 'reason', err)})",
                           "start it (see docs/cluster.md: the MLflow server) or pass another --mlflow-uri") from None


# Tracking-store schemes MLflow can open (a bare path is a file store).
STORE_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")
SQLITE_HEADER = b"SQLite format 3\x00"


def check_store_usable(uri: str, experiment: str | None = None, *, multi_process: bool = True) -> None:
    """Open the tracking store, read it and write to it before any work starts, so a store
    that passes `check_reachable` but cannot work (a file that is not a database, a folder,
    an unknown scheme, an in-memory SQLite that every trial process would see empty) is one
    clear error instead of a traceback in every trial. The write is creating `experiment`
    when it does not exist yet (the search would create it anyway); with no experiment the
    store is only read."""
    check_reachable(uri)
    scheme, sep, rest = uri.partition(":")
    if sep and len(scheme) > 1 and scheme not in STORE_SCHEMES:
        raise SkdError(f"MLflow tracking URI {uri} has the unknown scheme {scheme!r}",
                       "use sqlite:///<path>.db, http(s)://host:port or another scheme MLflow supports")
    if scheme == "sqlite":
        check_sqlite_store(uri, rest, multi_process)
    try:
        _retry(lambda: probe_store(uri, experiment), transient=("locked", "already exists"))
    except Exception as err:  # MlflowException, SQLAlchemy and driver errors alike
        first = " ".join(str(err).split())[:300]
        raise SkdError(f"MLflow store {uri} cannot be used ({type(err).__name__}: {first})",
                       "pass --mlflow-uri with a working store, e.g. sqlite:///$PWD/mlflow.db") from None


def probe_store(uri: str, experiment: str | None) -> None:
    """Read the store, and create `experiment` in it when given (see check_store_usable)."""
    client(uri).search_experiments(max_results=1)
    if experiment is not None:
        get_or_create_experiment(uri, experiment)


def check_sqlite_store(uri: str, rest: str, multi_process: bool) -> None:
    """An SQLite store must be a file (or not exist yet) holding an SQLite database, and on
    disk when several processes log to it."""
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


def check_search_run(uri: str, experiment_id: str, run_id: str) -> Any:
    """The parent run of a saved search, read before a resume changes anything; returns it."""
    try:
        run = client(uri).get_run(run_id)
    except Exception as err:  # MlflowException: RESOURCE_DOES_NOT_EXIST, or the store fails
        raise SkdError(f"the search's MLflow run {run_id} is not in {uri} ({' '.join(str(err).split())[:200]})",
                       "pass the --mlflow-uri the search was started with") from None
    if run.info.experiment_id != experiment_id:
        raise SkdError(f"MLflow run {run_id} in {uri} belongs to another experiment than the saved search's",
                       "pass the --mlflow-uri the search was started with")
    return run


def get_or_create_experiment(uri: str, name: str) -> str:
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name)
    except Exception:  # another process created it concurrently
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def param_text(value: Any) -> str:
    """How a config value is stored as an MLflow param: strings as they are, anything else as
    JSON (true, null, [1, 2]) so that it reads back with json.loads."""
    return value if isinstance(value, str) else json.dumps(value)


def constants_of(parent_params: dict[str, str]) -> dict[str, str]:
    """The constants a search's parent run holds (`config.<key>`), by config key."""
    return {k.removeprefix(CONSTANT_PARAM): v for k, v in parent_params.items() if k.startswith(CONSTANT_PARAM)}


def trial_params(params: dict[str, str], constants: dict[str, str]) -> dict[str, str]:
    """A trial's whole flat config as params: the search's constants, then what the trial
    logged (its searched values; every value, for trials logged before the constants moved
    to the parent)."""
    return {**constants, **params}


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    """Log params once, in batches of 100 (MLflow's per-request limit)."""
    from mlflow.entities import Param

    items = [Param(k, param_text(v)) for k, v in params.items()]
    c = client(uri)
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i:i + 100])


class SearchRuns:
    """One search's MLflow runs: the tracking store, the experiment and the parent run, with one
    client made once per process (as Lightning's MLFlowLogger holds its client). The driver,
    its Tune callbacks and every trial get this object instead of a URI and two ids to pass on.
    Picklable: a trial process that receives it makes its own client on first use.
    """

    def __init__(self, uri: str, experiment_id: str = "", parent_run_id: str = "") -> None:
        self.uri = uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        # Config values every trial shares, as logged on the parent (`config.<key>`): a trial
        # logs only the params that differ from them (its searched values).
        self.constants: dict[str, str] = {}
        self._client: Any = None

    @classmethod
    def start(cls, uri: str, experiment: str, run_name: str, tags: dict[str, str],
              params: dict[str, Any], constants: dict[str, Any] | None = None) -> SearchRuns:
        """Create the parent run of a new search (in `experiment`, made if new); `constants`
        (flat config values all its trials share) are logged on it once, not on every trial."""
        runs = cls(uri, get_or_create_experiment(uri, experiment))
        run = runs.client.create_run(runs.experiment_id, run_name=run_name,
                                     tags={Tags.KIND: "search", Tags.GIT_COMMIT: git_commit(), **tags})
        runs.parent_run_id = run.info.run_id
        runs.constants = {k: param_text(v) for k, v in (constants or {}).items()}
        log_params(uri, runs.parent_run_id, {**params, **{CONSTANT_PARAM + k: v for k, v in runs.constants.items()}})
        return runs

    def load_constants(self) -> None:
        """Read the constants back from the parent run (a resumed search)."""
        self.constants = constants_of(self.client.get_run(self.parent_run_id).data.params)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = client(self.uri)
        return self._client

    def trial_run(self, trial_id: str) -> str | None:
        """The child run already created for Ray trial `trial_id` (a restarted trial reuses it)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{Tags.TRIAL_ID}` = '{trial_id}' and tags.`{Tags.PARENT_RUN_ID}` = "
                          f"'{self.parent_run_id}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def start_trial(self, trial_id: str, run_name: str, flat_config: dict[str, Any], tags: dict[str, str]) -> str:
        """Find or create the child run of a trial; params and the config artifact are logged once."""
        existing = self.trial_run(trial_id)
        if existing is not None:
            self.reopen(existing)
            return existing
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={
            Tags.PARENT_RUN_ID: self.parent_run_id, Tags.TRIAL_ID: trial_id, Tags.STATUS: Status.RUNNING,
            Tags.KIND: "trial", Tags.GIT_COMMIT: git_commit(), **tags})
        run_id = run.info.run_id
        log_params(self.uri, run_id, {k: v for k, v in flat_config.items() if self.constants.get(k) != param_text(v)})
        self.client.log_text(run_id, json.dumps(flat_config, indent=2, sort_keys=True), Artifacts.CONFIG)
        return run_id

    def children(self) -> list[Any]:
        """Every child run (the trials of a search, the retrainings of a final evaluation)."""
        return self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.`{Tags.PARENT_RUN_ID}` = '{self.parent_run_id}'",
                                       max_results=5000)

    def open_trials(self) -> list[str]:
        """Child runs that are not closed (running, or interrupted with their search)."""
        return [r.info.run_id for r in self.children() if r.data.tags.get(Tags.STATUS) in REOPENED]

    def tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def reopen(self, run_id: str | None = None) -> None:
        """Mark a run (default: the parent) of an interrupted search running again."""
        run_id = run_id or self.parent_run_id
        self.client.set_terminated(run_id, "RUNNING")
        self.client.set_tag(run_id, Tags.STATUS, Status.RUNNING)

    def close(self, run_id: str | None, status: str, reason: str | None = None) -> None:
        """Close a run (default: the parent): status is completed, early_stopped, failed (with
        the reason) or interrupted (its search stopped before it ended; `--resume` reopens it)."""
        run_id = run_id or self.parent_run_id
        self.client.set_tag(run_id, Tags.STATUS, status)
        if reason:
            self.client.set_tag(run_id, Tags.FAILURE_REASON, reason[:5000])
        self.client.set_terminated(run_id, mlflow_run_status(status))


def metric_history(uri: str, run_id: str, key: str) -> list[Any]:
    """MLflow's history of reported metric `key` in a run, under its grouped name or, for a
    run logged before the grouping, its old one."""
    c = client(uri)
    for name in mlflow_names(key):
        history = c.get_metric_history(run_id, name)
        if history:
            return list(history)
    return []


def early_exit_sweep(uri: str, run_id: str) -> list[dict[str, Any]]:
    """The rows of a run's early-exit sweep table (`TrialTracker`), in the order they were
    logged; [] for a run without one (single-exit methods, searches logged before the table)."""
    import tempfile

    c = client(uri)
    if not any(f.path == Artifacts.EARLY_EXIT_SWEEP for f in c.list_artifacts(run_id)):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        table = json.loads(Path(c.download_artifacts(run_id, Artifacts.EARLY_EXIT_SWEEP, tmp)).read_text())
    return [dict(zip(table["columns"], row)) for row in table["data"]]


class TrialTracker:
    """Per-epoch metric sink for one child run (used by rank 0 and the debugging mode).

    Metrics are logged under their grouped MLflow names (`skd_ray.training.metrics.logged_name`),
    the dynamic early-exit policy only at `chart_threshold`; every epoch's whole threshold sweep
    is appended to the run's table `early_exit_sweep.json`."""

    def __init__(self, uri: str, run_id: str, artifact_every_best: bool = True,
                 chart_threshold: float | None = None) -> None:
        self.uri = uri
        self.run_id = run_id
        self.artifact_every_best = artifact_every_best
        self.chart_threshold = chart_threshold

    def log_epoch(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        named = {name: v for k, v in metrics.items() if (name := logged_name(k, self.chart_threshold)) is not None}
        # The objective first: MLflow lists a run's metrics in the order they were first logged.
        items = [Metric(name, float(named[name]), now, step) for name in objective_first(named, FIRST_METRICS)]
        c = client(self.uri)
        for i in range(0, len(items), 500):
            _retry(lambda batch=items[i:i + 500]: c.log_batch(self.run_id, metrics=batch))
        rows = sweep_rows(metrics, step)
        if rows:
            columns = {key: [row.get(key, float("nan")) for row in rows] for key in SWEEP_COLUMNS}
            with warnings.catch_warnings():  # pandas 3 deprecation inside MLflow's table check
                warnings.simplefilter("ignore")
                _retry(lambda: c.log_table(self.run_id, columns, Artifacts.EARLY_EXIT_SWEEP))

    def log_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, v) for k, v in tags.items()]
        _retry(lambda: client(self.uri).log_batch(self.run_id, tags=batch))

    def log_setup(self, setup: RunSetup) -> None:
        """Tag the run with how it trained on its device (`setup_tags`)."""
        self.log_tags(setup_tags(setup))

    def log_best_state(self, state: dict[str, Any], directory: Path) -> None:
        """Store the best checkpoint (deployable + method state) as the run's artifact."""
        import torch

        directory.mkdir(parents=True, exist_ok=True)
        path = directory / Artifacts.BEST_CHECKPOINT
        torch.save(state, path)
        _retry(lambda: client(self.uri).log_artifact(self.run_id, str(path)))


def setup_tags(setup: RunSetup) -> dict[str, str]:
    """A run's device, autocast dtype, memory layout, cuDNN autotuning and GPU memory share as
    `skd.*` tags: what ran, whatever the config said (`auto` is settled by the worker)."""
    tags = {Tags.DEVICE: setup.device, Tags.AMP: setup.amp, Tags.CHANNELS_LAST: str(setup.channels_last).lower(),
            Tags.CUDNN_BENCHMARK: str(setup.cudnn_benchmark).lower()}
    if setup.gpu_share is not None:
        tags[Tags.GPU_SHARE] = f"{setup.gpu_share:g}"
    return tags


def _retry(fn: Any, attempts: int = 5, transient: tuple[str, ...] = ("locked",)) -> Any:
    """SQLite stores can report 'database is locked' under concurrent trials, and a new store
    whose tables another process is creating at the same moment (a second search, `mlflow ui`)
    reports 'table ... already exists': retry briefly."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as err:  # mlflow raises MlflowException wrapping OperationalError
            if not any(word in str(err) for word in transient) or i == attempts - 1:
                raise
            time.sleep(0.2 * (i + 1))
    return None
