"""Joining or starting the Ray cluster and sizing a search to it. A trial that can never fit is
an error before anything starts, and an unreachable address fails in seconds."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from skd_ray.errors import SkdError
from skd_ray.search.request import SearchRequest


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
    return cap_concurrency(limit, req)


def cap_concurrency(limit: int, req: SearchRequest) -> int:
    """`limit` trials at once, capped by --max-concurrent and the number of trials, at least one."""
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
# Ray's setting for the niceness of its worker processes (read by each worker at start-up,
# so a job's runtime environment can set it for its own workers; see start_local_ray).
WORKER_NICENESS = "RAY_worker_niceness"


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


def connect_ray(address: str | None, temp_dir: str | None = None, log_to_driver: bool = True) -> None:
    """Join the cluster at `address`, or start a local one; unreachable addresses fail fast.
    `log_to_driver=False` leaves the trial processes' output in Ray's session logs instead of
    the console (see skd_ray.search.console.ray_logs).

    The dashboard stays on (bound to 127.0.0.1 by Ray): without it Train's placement-group
    cleaner cannot see that a stopped trial's controller died, the trial's workers' resources
    leak, and the next trial waits for them forever.
    """
    import ray
    from ray.exceptions import AuthenticationError

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", TRAIN_REPORT_INTERVAL_S)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", TUNE_STATE_SAVE_INTERVAL_S)
    # Tune warns when its state is saved more often than every 5 s, which is this setting.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    kwargs: dict[str, Any] = {"log_to_driver": log_to_driver, "runtime_env": {"env_vars": {
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]}}}
    if address:
        check_address(address)
        use_token_if_available()
        check_authentication(address)
        try:
            ray.init(address=address, **kwargs)
        except AuthenticationError as err:
            raise auth_failed(address, str(err)) from None
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise SkdError(f"cannot connect to the Ray cluster at {address} ({str(err).splitlines()[0]})",
                           "check the address (`ray status` on the head node) or omit --address") from None
    else:
        if temp_dir:
            kwargs["_temp_dir"] = temp_dir
        start_local_ray(kwargs)


def token_source() -> str | None:
    """Where Ray would read an authentication token from here, in Ray's order, or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and Path(path).expanduser().is_file():
        return f"RAY_AUTH_TOKEN_PATH ({path})"
    default = Path("~/.ray/auth_token").expanduser()
    return str(default) if not path and default.is_file() else None


def use_token_if_available() -> None:
    """Send the token when there is one, as `ray start` and `ray.init("auto")` do: Ray 2.60 turns
    token authentication on for a head that finds a token, but `ray.init(address=HOST:PORT)`
    never sends one unless RAY_AUTH_MODE=token is set (a cluster without authentication
    accepts it all the same). Must run before anything talks to the cluster: Ray's C++ core
    reads the mode once."""
    if "RAY_AUTH_MODE" not in os.environ and token_source():
        os.environ["RAY_AUTH_MODE"] = "token"


def check_authentication(address: str) -> None:
    """Fail in a second with what to do, not after Ray's 20 s of retries ending in "cannot
    connect", when the cluster refuses this machine's token (or its lack of one)."""
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    try:
        GcsClient(address=address.removeprefix("ray://")).internal_kv_get(b"__skd_auth_probe", None, timeout=10)
    except AuthenticationError as err:
        raise auth_failed(address, str(err)) from None
    except Exception:  # anything else: ray.init reports it
        pass


def auth_failed(address: str, detail: str) -> SkdError:
    source = token_source()
    fix = ("copy the token of the cluster (`~/.ray/auth_token` on its head node) to ~/.ray/auth_token here, "
           "or set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to it")
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return SkdError(f"authentication failed: the Ray cluster at {address} uses token authentication and "
                        "RAY_AUTH_MODE=disabled is set here", "unset RAY_AUTH_MODE")
    if source is None:
        return SkdError(f"authentication failed: the Ray cluster at {address} uses token authentication and no "
                        "token was found here", fix)
    return SkdError(f"authentication failed: the Ray cluster at {address} rejected the token from {source} "
                    f"({detail.splitlines()[0][:120]})", fix)


def stop_on_sigterm() -> None:
    """SIGTERM (what `ray job stop` sends the search's process) stops the search like Ctrl-C:
    Tune handles only SIGINT, saving its state, ending the trials and returning, so the runs
    are closed as `interrupted` and `--resume` continues. Main thread only (signal handlers)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))


def start_local_ray(kwargs: dict[str, Any]) -> None:
    """Start a local cluster whose address every process of the job knows.

    Ray's own helpers (Train's placement-group cleaner among them) look the cluster up by
    scanning the machine when RAY_ADDRESS is unset; with a second Ray instance on the same
    machine that lookup fails, the cleaner dies, a stopped trial's workers are never freed
    and the next trial waits forever. So the GCS port is chosen here and published as
    RAY_ADDRESS to every actor of the job.

    The job's workers run at niceness 0, like the command that started them. Ray's default
    (15) is meant for machines that run only Ray; on a machine shared with other work (the
    usual case for a local search) it starves the trials: under 3 busy processes on 2 cores a
    worker ran a fixed loop in 6.0 s at niceness 15 and 0.29 s at 0. Everything in the job
    slows that way, releasing a finished trial's CPUs included, so the next Train run's
    workers can wait past Train's 60 s start-up timeout again and again.
    """
    import socket

    import ray
    from ray._private.services import get_node_ip_address

    with socket.socket() as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    address = f"{get_node_ip_address()}:{port}"
    kwargs["runtime_env"]["env_vars"]["RAY_ADDRESS"] = address
    kwargs["runtime_env"]["env_vars"][WORKER_NICENESS] = "0"
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
