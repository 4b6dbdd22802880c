"""Build and run a search: Ray Tune + OptunaSearch (define-by-run) + ASHA, tracked in MLflow.

Only this driver talks to Optuna; trials receive a resolved config. Concurrency is derived
from what the cluster has and what one trial needs, and a trial that can never fit is an
error before anything starts, never a silent hang.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ray import tune

from skd_ray.errors import SkdError
from skd_ray.results.artifacts import log_search_plots
from skd_ray.results.tracking import (
    LAST_ERROR_TAG,
    STATUS_TAG,
    client,
    find_trial_run,
    finish_trial_run,
    open_trial_runs,
    reopen_run,
    start_search_run,
)
from skd_ray.search_state import STATE_FILE, read_state, saved_request_fields, write_state
from skd_ray.space import SearchSpace
from skd_ray.trial import CHECKPOINTS_KEPT, TrialSettings, run_trial

# Memory reserved for the trial process itself (see trial_resources).
TRIAL_DRIVER_MEMORY = 100 * 1024**2


@dataclass
class SearchRequest:
    """Everything a search needs, as given on the command line."""

    space: SearchSpace
    storage: str
    tracking_uri: str
    experiment: str
    search_name: str
    num_samples: int = 8
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_concurrent: int | None = None
    address: str | None = None
    seed: int = 0
    grace_period: int = 2
    reduction_factor: int = 3
    max_failures: int = 2
    always_ray_train: bool = False
    # Multi-worker trials train in persistent DDP pools (one Ray Train run per concurrent
    # trial for the whole search); off: a new Ray Train run per trial.
    ddp_pool: bool = True
    sampler: str = "tpe"  # tpe | random (a baseline; multi-objective searches use NSGA-II)
    early_stopping: bool = True  # ASHA; off: every trial runs its full epoch budget
    start_from_defaults: bool = True  # the first trial is the space's defaults (published settings)
    resume: bool = False
    extra_tags: dict[str, str] = field(default_factory=dict)
    # Two or more (metric, mode) pairs make a Pareto search (see build_search_algorithm).
    objectives: list[tuple[str, str]] = field(default_factory=list)
    # Trial configs to run once each instead of sampling (final evaluation of chosen configs).
    points: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[Any] = field(default_factory=list)  # extra Tune callbacks (benchmarks, tools)


@dataclass
class SearchOutcome:
    experiment_id: str
    parent_run_id: str
    experiment_dir: str
    num_trials: int
    num_errors: int
    interrupted: bool = False  # stopped before every trial ended (Ctrl-C); --resume continues it


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def latest_search_name(storage: str, experiment: str) -> str:
    """Name of the newest search of `experiment` under `storage` (what --resume continues)."""
    prefix = safe_name(experiment) + "_"
    found = sorted(p.parent.name for p in Path(storage).glob(f"{prefix}*/{STATE_FILE}"))
    if not found:
        raise SkdError(f"no search of experiment {experiment!r} under {storage}",
                       "use the same --storage and --experiment as the interrupted search")
    return found[-1]


def saved_request(storage: str, search_name: str) -> SearchRequest:
    """The request a search was started with, to `--resume` it without repeating its flags."""
    request = SearchRequest(**saved_request_fields(read_state(Path(storage) / safe_name(search_name))))
    request.storage, request.search_name, request.resume = storage, search_name, True
    return request


def plan_concurrency(cluster: dict[str, float], req: SearchRequest) -> int:
    """How many trials run at once: what fits on the cluster, capped by --max-concurrent."""
    need_cpu = req.workers * req.cpus_per_worker
    need_gpu = req.workers * req.gpus_per_worker
    have_cpu, have_gpu = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    fits = [math.floor(have_cpu / need_cpu + 1e-9)] if need_cpu > 0 else []
    if need_gpu > 0:
        fits.append(math.floor(have_gpu / need_gpu + 1e-9))
    limit = min(fits) if fits else req.num_samples
    if limit < 1 or (req.gpus_per_worker > 0 and req.gpus_per_worker > 1 and have_gpu < req.gpus_per_worker):
        raise SkdError(
            f"one trial needs {req.workers} worker(s) x ({req.cpus_per_worker:g} CPU, {req.gpus_per_worker:g} GPU)"
            f" = {need_cpu:g} CPU, {need_gpu:g} GPU but the cluster has {have_cpu:g} CPU, {have_gpu:g} GPU",
            "lower --workers-per-trial, --cpus-per-worker or --gpus-per-worker, or add nodes",
        )
    if req.max_concurrent:
        limit = min(limit, req.max_concurrent)
    return max(1, min(limit, req.num_samples))


# Report cadence of the Train controller (default 2 s per report): 0.2 s keeps per-epoch
# reports of small models from idling the workers.
TRAIN_REPORT_INTERVAL_S = "0.2"
# How often Tune saves the search's state (its default: every 10 s or more). A trial started
# after the last save is unknown to `--resume`, which samples a replacement instead of
# continuing it; trials now start in well under a second, so the window is kept short.
TUNE_STATE_SAVE_INTERVAL_S = "1"


def check_address(address: str) -> None:
    """Fail in seconds, not Ray's ~14 minutes of retries, when host:port does not answer."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and similar: Ray resolves and fails fast itself
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as err:
        raise SkdError(f"the Ray cluster at {address} cannot be reached ({err.strerror or err})",
                       "check the address (`ray status` on the head node) or omit --address to run locally") from None


def connect_ray(address: str | None, temp_dir: str | None = None) -> None:
    """Join the cluster at `address`, or start a local one; unreachable addresses fail fast.

    The dashboard stays on (bound to 127.0.0.1 by Ray): without it Train's placement-group
    cleaner cannot see that a stopped trial's controller died, the trial's workers' resources
    leak, and the next trial waits for them forever.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", TRAIN_REPORT_INTERVAL_S)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", TUNE_STATE_SAVE_INTERVAL_S)
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": {
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]}}}
    if address:
        check_address(address)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise SkdError(f"cannot connect to the Ray cluster at {address} ({str(err).splitlines()[0]})",
                           "check the address (`ray status` on the head node) or omit --address") from None
    else:
        if temp_dir:
            kwargs["_temp_dir"] = temp_dir
        start_local_ray(kwargs)


def start_local_ray(kwargs: dict[str, Any]) -> None:
    """Start a local cluster whose address every process of the job knows.

    Ray's own helpers (Train's placement-group cleaner among them) look the cluster up by
    scanning the machine when RAY_ADDRESS is unset; with a second Ray instance on the same
    machine that lookup fails, the cleaner dies, a stopped trial's workers are never freed
    and the next trial waits forever. So the GCS port is chosen here and published as
    RAY_ADDRESS to every actor of the job.
    """
    import socket

    import ray
    from ray._private.services import get_node_ip_address

    with socket.socket() as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    address = f"{get_node_ip_address()}:{port}"
    kwargs["runtime_env"]["env_vars"]["RAY_ADDRESS"] = address
    previous = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        ray.init(**kwargs)
    finally:
        if previous is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = previous
    if ray.get_runtime_context().gcs_address != address:
        raise SkdError(f"the local Ray cluster started at {ray.get_runtime_context().gcs_address}, not {address}",
                       "retry; if it persists, start Ray with `ray start --head` and pass --address")


class ChildRunStatus(tune.Callback):
    """Driver-side callback: closes the child run of a trial whose function never returned
    (stopped by ASHA: early_stopped; crashed: failed with the reason)."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, max_epochs: int) -> None:
        self.uri = uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.max_epochs = max_epochs

    def _close(self, trial: Any, status: str, reason: str | None) -> None:
        run_id = find_trial_run(self.uri, self.experiment_id, self.parent_run_id, trial.trial_id)
        if run_id is None:
            return
        tags = client(self.uri).get_run(run_id).data.tags
        if tags.get(STATUS_TAG) == "running":
            if status == "failed":
                reason = tags.get(LAST_ERROR_TAG) or reason
            finish_trial_run(self.uri, run_id, status, reason)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epoch = (trial.last_result or {}).get("epoch", 0)
        self._close(trial, "completed" if epoch >= self.max_epochs else "early_stopped", None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, "failed", str(getattr(trial, "error_msg", "") or "trial raised"))


def trial_resources(settings: TrialSettings) -> dict[str, float]:
    """What Tune reserves for a trial's own process. Training in place, that is the worker's
    CPU/GPU; otherwise only memory: the process just waits on its DDP pool or TorchTrainer
    and must not hold a CPU their workers need (a 2-worker trial on a 2-CPU node would deadlock)."""
    if not settings.trains_in_trial_process:
        return {"memory": TRIAL_DRIVER_MEMORY}
    resources = {"cpu": settings.cpus_per_worker, "memory": TRIAL_DRIVER_MEMORY}
    if settings.gpus_per_worker > 0:
        resources["gpu"] = settings.gpus_per_worker
    return resources


def run_search(req: SearchRequest) -> SearchOutcome:
    """Run (or resume) the search described by `req`; returns where its results are."""
    import ray

    name = safe_name(req.search_name)
    exp_dir = Path(req.storage) / name
    state_file = exp_dir / STATE_FILE
    connect_ray(req.address)
    concurrency = plan_concurrency(ray.cluster_resources(), req)
    max_epochs = int(req.space.fixed.get("train.epochs", 15))
    num_samples = req.num_samples
    if req.resume:
        if not state_file.exists() or not tune.Tuner.can_restore(str(exp_dir)):
            raise SkdError(f"no search to resume under {exp_dir}", "use the same --storage and --experiment, "
                           "or drop --resume to start a new search")
        state = read_state(exp_dir)
        experiment_id, parent_run_id = state["experiment_id"], state["parent_run_id"]
        num_samples = int(state["request"]["num_samples"])  # Tune restores its own; --num-samples is ignored
        reopen_run(req.tracking_uri, parent_run_id)
    else:
        if state_file.exists():
            raise SkdError(f"a search named {name} already exists under {req.storage}",
                           "pass --resume to continue it, or a new --experiment name")
        experiment_id, parent_run_id = start_search_run(
            req.tracking_uri, req.experiment, name,
            {"skd.space": req.space.path, "skd.methods": ",".join(req.space.methods()), **req.extra_tags},
            {"search.num_samples": req.num_samples, "search.workers_per_trial": req.workers,
             "search.cpus_per_worker": req.cpus_per_worker, "search.gpus_per_worker": req.gpus_per_worker,
             "search.concurrency": concurrency, "search.space": req.space.path, "search.seed": req.seed,
             **{f"fixed.{k}": v for k, v in req.space.fixed.items()}},
        )
        exp_dir.mkdir(parents=True, exist_ok=True)
        write_state(exp_dir, experiment_id, parent_run_id, {f.name: getattr(req, f.name) for f in fields(req)},
                    req.space)
    pools = None
    if req.workers > 1 and req.ddp_pool:
        from skd_ray.ddp_pool import DDPPools

        # The pools' own Ray Train runs (no checkpoints: those go to Tune) sit inside the search's directory.
        pools = DDPPools(name, concurrency, req.workers, req.cpus_per_worker, req.gpus_per_worker, str(exp_dir))
    try:
        results = run_tuner(req, exp_dir, name, experiment_id, parent_run_id, concurrency, max_epochs, pools)
    finally:
        if pools is not None:
            pools.shutdown()
    interrupted = len(results) < num_samples or unfinished_trials(exp_dir) > 0
    if interrupted:
        for run_id in open_trial_runs(req.tracking_uri, experiment_id, parent_run_id):
            finish_trial_run(req.tracking_uri, run_id, "interrupted")
        finish_trial_run(req.tracking_uri, parent_run_id, "interrupted")
    else:
        close_abandoned(req.tracking_uri, experiment_id, parent_run_id, exp_dir / "optuna.db", name)
        status = "completed" if not results.num_errors else "completed_with_errors"
        finish_trial_run(req.tracking_uri, parent_run_id, status)
    log_search_plots(req.tracking_uri, req.experiment, parent_run_id)  # never raises: prints a warning instead
    return SearchOutcome(experiment_id, parent_run_id, str(exp_dir), len(results), results.num_errors, interrupted)


def run_tuner(req: SearchRequest, exp_dir: Path, name: str, experiment_id: str, parent_run_id: str,
              concurrency: int, max_epochs: int, pools: Any) -> Any:
    """Build (or restore) the Tuner and run it to the end; returns Tune's ResultGrid."""
    settings = TrialSettings(req.space, req.tracking_uri, experiment_id, parent_run_id, str(Path(req.storage)),
                             req.workers, req.cpus_per_worker, req.gpus_per_worker, req.max_failures,
                             req.always_ray_train, pools.name if pools is not None else None)
    trainable = tune.with_resources(tune.with_parameters(run_trial, settings=settings), trial_resources(settings))
    callbacks = [ChildRunStatus(req.tracking_uri, experiment_id, parent_run_id, max_epochs), *req.callbacks]
    if pools is not None:
        callbacks.append(pools.callback())
    if req.resume:
        tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_errored=True)
    else:
        searcher, scheduler = build_search_algorithm(req, name, exp_dir, max_epochs)
        # Ray Train restarts its own workers in a per-trial Train run; a trial training in
        # place or in a pool is restarted by Tune from its last checkpoint.
        tune_restarts = settings.trains_in_trial_process or pools is not None
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=req.num_samples,
                                        # The next trial starts in this trial's warm process (imports
                                        # and the in-process dataset cache already loaded).
                                        max_concurrent_trials=concurrency, reuse_actors=True),
            run_config=tune.RunConfig(
                name=name, storage_path=str(Path(req.storage)), callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=req.max_failures if tune_restarts else 0),
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=CHECKPOINTS_KEPT, checkpoint_score_attribute=req.space.metric,
                    checkpoint_score_order=req.space.mode)),
        )
    return tuner.fit()


def unfinished_trials(exp_dir: Path) -> int:
    """Trials that Tune's saved state records as not ended. Tune returns normally when it is
    interrupted (SIGINT): it saves its state, then stops the running trials, whose in-memory
    status then reads TERMINATED; only the saved state tells them apart from finished ones."""
    from ray.tune import ExperimentAnalysis

    return sum(t.status not in ("TERMINATED", "ERROR") for t in ExperimentAnalysis(str(exp_dir)).trials)


def close_abandoned(uri: str, experiment_id: str, parent_run_id: str, study_db: Path, study_name: str) -> None:
    """Once every trial of a search has ended, close what a killed driver left open that no
    trial continues: a trial it started after Tune last saved its state is unknown to the
    resumed search (which samples a replacement), so its child run and Optuna trial would stay
    running forever. They become failed / FAIL. A no-op for searches never killed."""
    import optuna

    for run_id in open_trial_runs(uri, experiment_id, parent_run_id):
        finish_trial_run(uri, run_id, "failed", "abandoned: the search was killed before Ray Tune recorded this "
                         "trial, and the resumed search sampled another one")
    if study_db.exists():
        study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{study_db}")
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def tpe_startup_trials(num_samples: int) -> int:
    """Random trials before TPE models the space: Optuna's fixed 10 would leave a 12-trial
    search almost entirely random, so small budgets get a quarter of their trials (at least
    3, the fewest TPE can split into good and bad), large ones Optuna's 10."""
    return min(10, max(3, num_samples // 4))


def build_search_algorithm(req: SearchRequest, name: str, exp_dir: Path, max_epochs: int) -> tuple[Any, Any]:
    """(search algorithm, trial scheduler) of a new search; a scheduler of None is Tune's FIFO.

    - default: Optuna TPE on the space's metric, ASHA stopping weak trials early
      (`req.sampler="random"`: Optuna's random sampler; `req.early_stopping=False`: no ASHA);
    - `req.objectives` (several metrics): Optuna NSGA-II towards their Pareto front, and no
      early stopping: ASHA ranks trials by one metric and would cut off one end of the front;
    - `req.points`: each given config once (final evaluation), no early stopping.
    Optuna's study lives in `<exp_dir>/optuna.db`; the first trial is the space's defaults
    unless `req.start_from_defaults` is off.
    """
    import optuna
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    if req.points:
        from skd_ray.points_searcher import PointsSearcher

        return PointsSearcher(req.points), None
    if req.objectives:
        metric: Any = [m for m, _ in req.objectives]
        mode: Any = [d for _, d in req.objectives]
        sampler: Any = optuna.samplers.NSGAIISampler(seed=req.seed)
    elif req.sampler == "random":
        metric, mode, sampler = req.space.metric, req.space.mode, optuna.samplers.RandomSampler(seed=req.seed)
    else:
        metric, mode = req.space.metric, req.space.mode
        sampler = optuna.samplers.TPESampler(n_startup_trials=tpe_startup_trials(req.num_samples), seed=req.seed)
    searcher = OptunaSearch(
        space=req.space.define_by_run, metric=metric, mode=mode,
        points_to_evaluate=[req.space.default_point()] if req.start_from_defaults else None, sampler=sampler,
        storage=optuna.storages.RDBStorage(f"sqlite:///{exp_dir / 'optuna.db'}"), study_name=name,
    )
    if req.objectives or not req.early_stopping:
        return searcher, None
    return searcher, ASHAScheduler(time_attr="epoch", metric=req.space.metric, mode=req.space.mode,
                                   max_t=max_epochs, grace_period=min(req.grace_period, max_epochs),
                                   reduction_factor=req.reduction_factor)
