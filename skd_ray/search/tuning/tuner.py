"""Build and run a search: Ray Tune + OptunaSearch (define-by-run) + ASHA, tracked in MLflow.

Only this driver talks to Optuna; trials receive a resolved config. Concurrency is derived
from what the cluster has and what one trial needs (`skd_ray.search.cluster.connect`).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from ray import tune

from skd_ray.errors import DiskFull, SkdError, is_disk_full
from skd_ray.results.artifacts import log_search_plots
from skd_ray.results.names import Tags
from skd_ray.results.statuses import Status
from skd_ray.results.tracking import SearchRuns
from skd_ray.search.cluster.autoscaler import plan_search
from skd_ray.search.cluster.connect import connect_ray, stop_on_sigterm
from skd_ray.search.cluster.waiting import ResultsAreProgress, raise_if_gave_up, watch_search
from skd_ray.search.console.progress import SearchProgress
from skd_ray.search.console.ray_logs import QUIET, VERBOSE, tune_verbosity
from skd_ray.search.execution.executors import CHECKPOINTS_KEPT
from skd_ray.search.execution.job import TrialSettings
from skd_ray.search.execution.pool.pools import DDPPools
from skd_ray.search.execution.trial import run_trial
from skd_ray.search.request import SearchOutcome, SearchRequest
from skd_ray.search.state.backup import BackUpTuneState
from skd_ray.search.state.live import hold_search
from skd_ray.search.state.saved import STATE_FILE, read_state, safe_name, write_state
from skd_ray.search.state.study import RelocatableRDBStorage, StudyStorage, relocate
from skd_ray.search.state.tune_files import back_up_tune_state
from skd_ray.search.tuning.answer import write_summary
from skd_ray.search.tuning.callbacks import ChildRunStatus, NoTensorBoardEvents
from skd_ray.search.tuning.closing import blame_full_storage, close_search, fail_running_optuna_trials, storage_full
from skd_ray.search.tuning.numbering import reset as reset_trial_numbers
from skd_ray.search.tuning.numbering import trial_dirname, trial_name
from skd_ray.search.tuning.optuna_study import PicklableNSGAII, SkdOptunaSearch, objective_metric
from skd_ray.search.tuning.points import PointsSearcher
from skd_ray.search.tuning.store_watch import raise_if_store_gave_up, store_gave_up, watch_store
from skd_ray.training.metrics import EPOCH

# Memory reserved for the trial process itself (see trial_resources).
TRIAL_DRIVER_MEMORY = 100 * 1024**2


def trial_resources(settings: TrialSettings) -> dict[str, float]:
    """What Tune reserves for a trial's own process. Training in place, that is the worker's
    CPU/GPU and nothing else: an autoscaler launches a node only for a request that one of
    its node types declares in full, and node types rarely declare `memory` (Ray's cluster
    simulator cannot), so a CPU + memory request would never get a node. Otherwise only
    memory, which every running node has (the head too): the process just waits on its DDP
    pool or TorchTrainer and must not hold a CPU their workers need (a 2-worker trial on a
    2-CPU node would deadlock); Tune refuses an empty request."""
    if not settings.trains_in_trial_process:
        return {"memory": TRIAL_DRIVER_MEMORY}
    resources = {"cpu": settings.cpus_per_worker}
    if settings.gpus_per_worker > 0:
        resources["gpu"] = settings.gpus_per_worker
    return resources


def run_search(req: SearchRequest) -> SearchOutcome:
    """Run (or resume) the search described by `req`; returns where its results are. Its driver
    holds the search's folder and Optuna study until it ends: one live driver per search
    (`skd_ray.search.state.live`, `StudyStorage.hold`)."""
    name = safe_name(req.search_name)
    exp_dir = Path(req.storage) / name
    with hold_search(exp_dir), StudyStorage(req.optuna_storage, exp_dir).hold(name):
        return drive_search(req)


def drive_search(req: SearchRequest) -> SearchOutcome:
    """`run_search`, once its driver holds the search."""
    name = safe_name(req.search_name)
    exp_dir = Path(req.storage) / name
    state_file = exp_dir / STATE_FILE
    connect_ray(req.address, log_to_driver=req.verbosity >= VERBOSE)
    stop_on_sigterm()
    concurrency, autoscaling = plan_search(req)
    max_epochs = int(req.space.fixed.get("train.epochs", 15))
    if req.resume:
        if not state_file.exists() or not tune.Tuner.can_restore(str(exp_dir)):
            raise SkdError(f"no search to resume under {exp_dir}", "use the same --storage and --experiment, "
                           "or drop --resume to start a new search")
        state = read_state(exp_dir)
        # Ray Tune unpickles the searcher with the study's storage, which connects where it was:
        # pointed to where the study is now (a moved database, or a moved --storage folder).
        relocate(state["request"], StudyStorage(req.optuna_storage, exp_dir), name)
        runs = SearchRuns(req.store, state["experiment_id"], state["parent_run_id"])
        runs.reopen()
        runs.load_constants()
    else:
        if state_file.exists():
            raise SkdError(f"a search named {name} already exists under {req.storage}",
                           "pass --resume to continue it, or a new --experiment name")
        runs = SearchRuns.start(
            req.store, req.experiment, name,
            {Tags.SPACE: req.space.path, Tags.METHODS: ",".join(req.space.methods()),
             Tags.LOG_PARAMS: ",".join(p.key for p in req.space.params if p.log), **req.extra_tags},
            {"search.num_samples": req.num_samples, "search.workers_per_trial": req.workers,
             "search.cpus_per_worker": req.cpus_per_worker, "search.gpus_per_worker": req.gpus_per_worker,
             "search.concurrency": concurrency, "search.space": req.space.path, "search.seed": req.seed,
             **({} if req.points else {"search.optuna_storage": str(StudyStorage(req.optuna_storage, exp_dir))})},
            # Final evaluations retrain whole configurations: each run keeps all its params.
            constants=req.space.constants() if not req.points else None,
        )
    try:
        if not req.resume:
            exp_dir.mkdir(parents=True, exist_ok=True)
            write_state(exp_dir, runs.experiment_id, runs.parent_run_id,
                        {f.name: getattr(req, f.name) for f in fields(req)}, req.space)
        study = StudyStorage(req.optuna_storage, exp_dir)
        RelocatableRDBStorage.outage_limit_s, RelocatableRDBStorage.gave_up = req.tracking_outage_s, False
        with watch_search(name, autoscaling, req.resource_wait_s), watch_store(runs.store, name, study.url):
            outcome = tune_and_close(req, exp_dir, name, runs, concurrency, max_epochs)
    except BaseException as err:
        # Whatever ends the search here (a bug, Ctrl-C, a full disk), its runs get a final status.
        blamed = blame_full_storage(err, req.storage, name)
        # A search stopped because its store stayed away is interrupted, not failed: its Optuna
        # trials stay open for resume (the store's own failing calls are what raised here).
        ending = KeyboardInterrupt() if store_gave_up(name) else blamed
        close_search(runs, StudyStorage(req.optuna_storage, exp_dir), name, ending)
        raise_if_store_gave_up(name, err)  # the store stayed away: its one error line, not the failed call's
        if blamed is err:
            raise
        raise blamed from err
    raise_if_gave_up(name)  # closed as interrupted above; now the one error line
    raise_if_store_gave_up(name)
    return outcome


def tune_and_close(req: SearchRequest, exp_dir: Path, name: str, runs: SearchRuns, concurrency: int,
                   max_epochs: int) -> SearchOutcome:
    """Run Tune to its end, then close the search's runs as what Tune recorded says it is."""
    pools = None
    if req.workers > 1 and req.ddp_pool:
        # The pools' own Ray Train runs (no checkpoints: those go to Tune) sit inside the search's directory.
        pools = DDPPools(name, concurrency, req.resources(), str(exp_dir))
    try:
        results = run_tuner(req, exp_dir, name, runs, concurrency, max_epochs, pools)
    finally:
        if pools is not None:
            pools.shutdown()
    if any(is_disk_full(err) for err in results.errors):
        raise DiskFull(f"trials of search {name} failed for lack of space under {req.storage} "
                       "(No space left on device); the search is interrupted")
    # Decided from what Tune recorded, not from a trial count: a trial lost to a full disk is
    # never recorded, and waiting for it would keep the search interrupted forever.
    try:
        interrupted = unfinished_trials(exp_dir) > 0
    except Exception as err:
        if storage_full(req.storage):  # Tune's last save was cut short by the full disk
            raise DiskFull(f"Ray Tune could not save search {name} under {req.storage} "
                           "(No space left on device); the search is interrupted") from err
        raise
    back_up_tune_state(exp_dir)
    if interrupted:
        for run_id in runs.open_trials():
            runs.close(run_id, Status.INTERRUPTED)
        runs.close(None, Status.INTERRUPTED)
    else:
        close_abandoned(runs, StudyStorage(req.optuna_storage, exp_dir), name)
        runs.close(None, Status.COMPLETED if not results.num_errors else Status.COMPLETED_WITH_ERRORS)
    write_summary(req, exp_dir, name, runs, max_epochs)  # never raises
    log_search_plots(runs.store, req.experiment, runs.parent_run_id)  # never raises: prints a warning instead
    return SearchOutcome(runs.experiment_id, runs.parent_run_id, str(exp_dir), len(results), results.num_errors,
                         interrupted)


def run_tuner(req: SearchRequest, exp_dir: Path, name: str, runs: SearchRuns, concurrency: int, max_epochs: int,
              pools: Any) -> Any:
    """Build (or restore) the Tuner and run it to the end; returns Tune's ResultGrid."""
    settings = TrialSettings(req.space, runs, str(Path(req.storage)),
                             req.always_ray_train, pools.name if pools is not None else None,
                             **vars(req.resources()))
    trainable = tune.with_resources(tune.with_parameters(run_trial, settings=settings), trial_resources(settings))
    reset_trial_numbers()
    callbacks = [ChildRunStatus(runs, max_epochs), ResultsAreProgress(name), BackUpTuneState(str(exp_dir)),
                 NoTensorBoardEvents(), *req.callbacks]
    if req.verbosity > QUIET:
        callbacks.append(SearchProgress(req.space, req.num_samples, max_epochs, req.space.metric, req.space.mode))
    if pools is not None:
        callbacks.append(pools.callback())
    if req.resume:
        tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_errored=True)
    else:
        searcher, scheduler = build_search_algorithm(req, name, exp_dir, max_epochs, runs)
        # Ray Train restarts its own workers in a per-trial Train run; a trial training in
        # place or in a pool is restarted by Tune from its last checkpoint.
        tune_restarts = settings.trains_in_trial_process or pools is not None
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=req.num_samples,
                                        # The next trial starts in this trial's warm process (imports
                                        # and the in-process dataset cache already loaded).
                                        max_concurrent_trials=concurrency, reuse_actors=True,
                                        # `t03`: the trial names its MLflow run so (see numbering).
                                        trial_name_creator=trial_name, trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=name, storage_path=str(Path(req.storage)), callbacks=callbacks,
                verbose=tune_verbosity(req.verbosity),
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


def close_abandoned(runs: SearchRuns, study: StudyStorage, study_name: str) -> None:
    """Once every trial of a search has ended, close what a killed driver left open that no
    trial continues: a trial it started after Tune last saved its state is unknown to the
    resumed search (which samples a replacement), so its child run and Optuna trial would stay
    running forever. They become failed / FAIL. A no-op for searches never killed."""
    for run_id in runs.open_trials():
        runs.close(run_id, Status.FAILED, "abandoned: the search was killed before Ray Tune recorded this "
                         "trial, and the resumed search sampled another one")
    fail_running_optuna_trials(study, study_name)


def tpe_startup_trials(num_samples: int) -> int:
    """Random trials before TPE models the space: Optuna's fixed 10 would leave a 12-trial
    search almost entirely random, so small budgets get a quarter of their trials (at least
    3, the fewest TPE can split into good and bad), large ones Optuna's 10."""
    return min(10, max(3, num_samples // 4))


def build_search_algorithm(req: SearchRequest, name: str, exp_dir: Path, max_epochs: int,
                           runs: SearchRuns | None = None) -> tuple[Any, Any]:
    """(search algorithm, trial scheduler) of a new search; a scheduler of None is Tune's FIFO.

    - default: Optuna TPE on the space's metric, ASHA stopping weak trials early
      (`req.sampler="random"`: Optuna's random sampler; `req.early_stopping=False`: no ASHA);
    - `req.objectives` (several metrics): Optuna NSGA-II towards their Pareto front, and no
      early stopping: ASHA ranks trials by one metric and would cut off one end of the front;
    - `req.points`: each given config once (final evaluation), no early stopping.
    Optuna's study, named `name`, is created new in `req.optuna_storage` (default
    `<exp_dir>/optuna.db`; see `skd_ray.search.state.study`); the first trial is the space's
    defaults unless `req.start_from_defaults` is off.
    """
    import optuna
    from ray.tune.schedulers import ASHAScheduler

    if req.points:
        return PointsSearcher(req.points), None
    if req.objectives:
        metric: Any = [m for m, _ in req.objectives]
        mode: Any = [d for _, d in req.objectives]
        sampler: Any = PicklableNSGAII(seed=req.seed)
    elif req.sampler == "random":
        metric, mode = objective_metric(req.space.metric, req.space.mode), req.space.mode
        sampler = optuna.samplers.RandomSampler(seed=req.seed)
    else:
        metric, mode = objective_metric(req.space.metric, req.space.mode), req.space.mode
        sampler = optuna.samplers.TPESampler(n_startup_trials=tpe_startup_trials(req.num_samples), seed=req.seed)
    study = StudyStorage(req.optuna_storage, exp_dir)
    storage = study.open()
    # A new study of its own: Ray's OptunaSearch would join one of that name that exists.
    study.create_study(name, ["minimize" if m == "min" else "maximize" for m in (mode if isinstance(mode, list)
                                                                                 else [mode])], storage)
    searcher = SkdOptunaSearch(
        runs=runs, max_epochs=max_epochs, space=req.space.define_by_run, metric=metric, mode=mode,
        points_to_evaluate=[req.space.default_point()] if req.start_from_defaults else None, sampler=sampler,
        storage=storage, study_name=name,
    )
    if req.objectives or not req.early_stopping:
        return searcher, None
    return searcher, ASHAScheduler(time_attr=EPOCH, metric=req.space.metric, mode=req.space.mode,
                                   max_t=max_epochs, grace_period=min(req.grace_period, max_epochs),
                                   reduction_factor=req.reduction_factor)
