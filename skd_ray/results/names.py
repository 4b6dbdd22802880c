"""Every name skd-ray gives things in MLflow: run tags and artifact paths, in one namespace.

Writers (the search driver, trials, rank-0 workers, the final evaluation) and readers (the
leaderboard, reports, export) use these constants, so a tag is spelled once.
"""

from __future__ import annotations


class Tags:
    """The `skd.*` run tags."""

    KIND = "skd.kind"  # search | trial (child runs of a search or of a final evaluation) | final | compare
    MODE = "skd.mode"  # debug for the in-process debugging mode
    GIT_COMMIT = "skd.git_commit"
    SPACE = "skd.space"
    METHODS = "skd.methods"
    METHOD = "skd.method"
    SEED = "skd.seed"
    SEARCH_NAME = "skd.search_name"
    OBJECTIVES = "skd.objectives"  # metric:direction pairs of a multi-objective search
    PARETO = "skd.pareto"  # true on trials on the Pareto front
    TRIAL_ID = "skd.ray_trial_id"
    TRIAL_NAME = "skd.trial_name"
    STATUS = "skd.status"  # running | completed | early_stopped | failed | interrupted
    FAILURE_REASON = "skd.failure_reason"
    LAST_ERROR = "skd.last_error"  # written by the trial process; promoted to FAILURE_REASON on failure
    DETERMINISTIC_ERROR = "skd.deterministic_error"  # a retry of the trial would fail the same way
    EXECUTOR = "skd.executor"  # trial_process | ray_train | ddp_pool
    # How a trial trained on its device, every `auto` settled by the worker (skd_ray.training.hardware.RunSetup).
    DEVICE = "skd.device"  # cpu | cuda (<GPU name>)
    AMP = "skd.amp"  # off | bf16 | fp16: the autocast dtype of forward passes
    CHANNELS_LAST = "skd.channels_last"  # true | false
    CUDNN_BENCHMARK = "skd.cudnn_benchmark"  # true | false
    GPU_SHARE = "skd.gpu_share"  # the fraction of the GPU's memory the trial was capped at (only when capped)
    WORLD_SIZE = "skd.world_size"
    WORKER_NODES = "skd.worker_nodes"  # Ray node id of every rank, in rank order
    WORKER_PIDS = "skd.worker_pids"
    SEARCH_RUN_ID = "skd.search_run_id"  # a final evaluation's search
    SOURCE_TRIAL = "skd.source_trial"
    SOURCE_RUN_ID = "skd.source_run_id"
    CONFIG_RANK = "skd.config_rank"
    BEST_RUN_ID = "skd.best_run_id"  # on a search's run: its best trial's run
    BEST_TRIAL = "skd.best_trial"  # on a search's run: its best trial's number (t03)
    BEST_VALUE_PREFIX = "skd.best."  # skd.best.<searched key>: the best trial's value
    LOG_PARAMS = "skd.log_params"  # the space's log-scaled keys, comma-separated (plots use log axes)
    NOTE = "mlflow.note.content"  # MLflow's run description (Markdown)
    RESTARTS = "skd.restarts"  # starts of a trial from a checkpoint (Tune retry or --resume)
    COMPARE_RUN_ID = "skd.compare_run_id"  # on a comparison's searches and final evaluations
    COMPARE_METHOD = "skd.compare_method"  # which method of the comparison that run is for
    COMPARE_SEARCH = "skd.compare.search."  # + method: on a comparison's run, that method's search run id
    COMPARE_FINAL = "skd.compare.final."  # + method: on a comparison's run, its final evaluation's run id
    PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's nesting: the UI shows the run under its parent
    RUN_NAME = "mlflow.runName"  # MLflow's run name as a tag: logging it renames the run


class Artifacts:
    """Artifact paths of skd-ray's runs."""

    BEST_CHECKPOINT = "best_checkpoint.pt"  # a trial's best epoch: deployable weights + method state
    CONFIG = "config.json"  # a trial's resolved flat config
    EARLY_EXIT_SWEEP = "early_exit_sweep.json"  # a trial's early-exit policy at every threshold, per epoch
    PLOTS_DIR = "plots"  # a search's plots, on its parent run
    COMPARE_JSON = "comparison.json"  # a comparison's numbers, on its run (what reports read back)
    COMPARE_MD = "comparison.md"
    COMPARE_CSV = "comparison.csv"
    COMPARE_PLOT = "comparison.png"  # test accuracy (95% CI) against training time per epoch
