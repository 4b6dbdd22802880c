"""Searches on an autoscaling cluster (Ray's autoscaler simulator, token authentication on):
the cluster starts with no CPU at all, grows for the trials, and lets its nodes go afterwards.
One simulated cluster serves the module; every test stops only what it started."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.fake_cluster import HEAD_NODE_ID as HEAD_NODE
from tests.helpers.fake_cluster import RAY, FakeCluster
from tests.helpers.plugin import install_plugin, with_plugin
from tests.helpers.searches import child_runs, write_space

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEARCH_ENDS: list[float] = []  # when each search of this module ended (time.monotonic)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin(tmp_path_factory.mktemp("plugin"))


@pytest.fixture(scope="module")
def cluster(plugin_site: Path):
    # Every simulated node has the example plugin installed, as a cluster.yaml setup command would.
    fake = FakeCluster(Path(f"/tmp/skda{os.getpid()}"), with_plugin(dict(os.environ), plugin_site), worker_cpus=1,
                       max_workers=2, idle_minutes=0.25)
    try:
        yield fake.start()
    finally:
        fake.stop()


def use(cli, cluster: FakeCluster, **extra: str) -> None:
    """Connect the CLI as a user would: the token where Ray looks for it, no RAY_AUTH_MODE."""
    cli.env = {**{k: v for k, v in cli.env.items() if k != "RAY_AUTH_MODE"}, **cluster.client_env(), **extra}


def search(cli, cluster: FakeCluster, tmp_path: Path, name: str, *args: str, timeout: float = 300):
    space = write_space(tmp_path / "space.yaml", **{"train.epochs": 2})
    started = time.time()
    res = cli("--address", cluster.address, "--config", str(space), "--storage", str(tmp_path / "results"),
              "--experiment", name, "--seed", "0", *args, timeout=timeout)
    assert res.returncode == 0, res.stdout[-6000:] + cluster.tail()
    SEARCH_ENDS.append(time.monotonic())
    return res, started


def first_step(run, client) -> float:
    """Epoch seconds of a trial's first optimiser step (its run start + its start-up time)."""
    startup = client.get_metric_history(run.info.run_id, "time/startup_s")
    return run.info.start_time / 1000 + startup[0].value


def test_one_worker_trials_grow_the_cluster_from_nothing(cli, cluster: FakeCluster, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    use(cli, cluster)
    launched_before = cluster.launched()
    res, started = search(cli, cluster, tmp_path, "grow", "--num-samples", "4")
    assert "autoscaling cluster: cpu_worker up to 2 x {CPU: 1}; 2 trial(s) at once" in res.stdout
    assert re.search(r"waiting for the autoscaler: \d+ trial request\(s\) pending", res.stdout), res.stdout[-4000:]
    parent, children = child_runs(cli.mlflow_uri, "grow")
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert all(c.data.tags["skd.status"] == "completed" for c in children)
    nodes = {c.data.tags["skd.worker_nodes"] for c in children}
    assert HEAD_NODE not in nodes and len(nodes) == 2, nodes  # the head has no CPU: launched nodes only
    assert cluster.launched() - launched_before >= 2, cluster.monitor_text()[-3000:]
    client = MlflowClient(cli.mlflow_uri)
    first = min(first_step(c, client) for c in children) - started
    print(f"submit to first trial training on a launched node: {first:.1f}s")


def test_idle_nodes_are_released_after_the_search(cluster: FakeCluster) -> None:
    """Runs after the one-worker search: a per-trial Ray Train run registers its workers with
    Train's autoscaling coordinator, and a run whose trial was stopped holds that request until
    it expires (180 s in Ray 2.60), keeping nodes alive that long; see docs/cluster.md."""
    assert cluster.launched() >= 1, "run with the searches above"
    deadline = time.monotonic() + 90
    while cluster.raylets() and time.monotonic() < deadline:
        time.sleep(1)
    assert not cluster.raylets(), cluster.monitor_text()[-3000:]
    assert cluster.terminated_idle() >= 1
    if SEARCH_ENDS:
        print(f"idle nodes gone {time.monotonic() - SEARCH_ENDS[-1]:.1f}s or less after the last search ended "
              "(idle timeout 15 s)")


def test_two_worker_trials_on_launched_nodes(cli, cluster: FakeCluster, tmp_path: Path) -> None:
    use(cli, cluster)
    res, _ = search(cli, cluster, tmp_path, "grow_ddp", "--num-samples", "2", "--workers-per-trial", "2")
    assert "multi-worker trials start their own Ray Train run" in res.stdout
    parent, children = child_runs(cli.mlflow_uri, "grow_ddp")
    assert parent.info.status == "FINISHED" and len(children) == 2
    for child in children:
        tags = child.data.tags
        assert tags["skd.status"] == "completed" and tags["skd.world_size"] == "2"
        ranks = tags["skd.worker_nodes"].split(",")
        assert len(set(ranks)) == 2 and HEAD_NODE not in ranks, ranks


def test_a_plugin_method_backbone_and_dataset_train_on_launched_nodes(cli, cluster: FakeCluster, tmp_path: Path,
                                                                       plugin_site: Path) -> None:
    use(cli, cluster, PYTHONPATH=with_plugin(cli.env, plugin_site)["PYTHONPATH"])
    res = cli("--address", cluster.address, "--method", "dsn", "--num-samples", "2", "--max-epochs", "2",
              "--storage", str(tmp_path / "results"), "--experiment", "plugin_on_cluster", "--seed", "0", timeout=300)
    assert res.returncode == 0, res.stdout[-6000:] + cluster.tail()
    SEARCH_ENDS.append(time.monotonic())
    parent, children = child_runs(cli.mlflow_uri, "plugin_on_cluster")
    assert (parent.data.params["config.model.backbone"], parent.data.params["config.data.name"]) == ("vgg_tiny",
                                                                                                     "toy_shapes")
    assert len(children) == 2
    for child in children:
        assert child.data.tags["skd.status"] == "completed" and child.data.tags["skd.method"] == "dsn"
        assert HEAD_NODE not in child.data.tags["skd.worker_nodes"]  # trained on a launched node


def test_a_trial_no_node_type_holds_is_refused_before_it_starts(cli, cluster: FakeCluster, tmp_path: Path) -> None:
    use(cli, cluster)
    space = write_space(tmp_path / "space.yaml")
    res = cli("--address", cluster.address, "--config", str(space), "--storage", str(tmp_path / "r"),
              "--cpus-per-worker", "2", timeout=120)
    assert res.returncode == 2, res.stdout[-3000:]
    (line,) = [line for line in res.stdout.splitlines() if line.startswith("error:")]
    assert "cpu_worker (up to 2 x {CPU: 1})" in line and "ray.head.default" in line, line


def test_a_wrong_token_fails_in_one_line(cli, cluster: FakeCluster, tmp_path: Path) -> None:
    use(cli, cluster, RAY_AUTH_TOKEN="0" * 32)
    space = write_space(tmp_path / "space.yaml")
    started = time.monotonic()
    res = cli("--address", cluster.address, "--config", str(space), "--storage", str(tmp_path / "r"), timeout=120)
    assert res.returncode == 2, res.stdout[-3000:]
    (line,) = [line for line in res.stdout.splitlines() if line.startswith("error:")]
    assert line.startswith("error: authentication failed") and "RAY_AUTH_TOKEN" in line, line
    assert time.monotonic() - started < 60


def ray_job(cluster: FakeCluster, *args: str, timeout: float = 120) -> str:
    """`ray job ...` against the cluster's dashboard, as its users run it (token auth on)."""
    env = {**cluster.client_env(), "RAY_AUTH_MODE": "token"}
    res = subprocess.run([RAY, "job", *args[:1], "--address", cluster.dashboard, *args[1:]], env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"ray job {' '.join(args)}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def test_a_search_submitted_as_a_ray_job_stops_cleanly_and_resumes(cluster: FakeCluster, tmp_path: Path) -> None:
    """`ray job submit --working-dir` (the checkout uploaded, `.rayignore` applied), `ray job logs`
    shows the search, `ray job stop` interrupts it (search and trials `interrupted`), `--resume`
    finishes it as a new job. The simulated nodes keep their runtime environments apart, as
    machines do (tests/helpers/own_disk_provider.py)."""
    from tests.helpers.runs import children, steps

    space = write_space(tmp_path / "space.yaml", **{"train.epochs": 8, "train.batch_size": 16})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    where = f"--storage {tmp_path / 'results'} --mlflow-uri {uri} --experiment jobs"
    env_vars = '{"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "60", "PYTHONUNBUFFERED": "1"}}'
    upload = ("--working-dir", str(REPO))  # the entry point's relative run_search.py is the uploaded one
    ray_job(cluster, "submit", "--no-wait", "--submission-id", "skd_search", *upload,
            "--runtime-env-json", env_vars, "--", sys.executable, "run_search.py", "--address", "auto",
            "--config", str(space), *where.split(), "--num-samples", "2", "--no-early-stopping")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            runs = children(uri, "jobs") if (tmp_path / "mlflow.db").exists() else []
            started = bool(runs) and any(len(steps(uri, r.info.run_id)) >= 1 for r in runs)
        except Exception:  # the job's search is creating the MLflow store at this moment
            started = False
        if started:
            break
        time.sleep(2)
    else:
        pytest.fail(ray_job(cluster, "logs", "skd_search")[-5000:])
    logs = ray_job(cluster, "logs", "skd_search")
    assert "autoscaling cluster: cpu_worker" in logs, logs[-3000:]
    ray_job(cluster, "stop", "skd_search", timeout=150)
    status = ray_job(cluster, "status", "skd_search")
    assert "was stopped" in status or "STOPPED" in status, status
    parent, runs = child_runs(uri, "jobs")
    assert parent.data.tags["skd.status"] == "interrupted", ray_job(cluster, "logs", "skd_search")[-4000:]
    assert runs and all(r.data.tags["skd.status"] in ("interrupted", "completed") for r in runs)

    out = subprocess.run([RAY, "job", "submit", "--address", cluster.dashboard, "--submission-id", "skd_resume",
                          *upload, "--", sys.executable, "run_search.py", "--address", "auto", "--resume",
                          *where.split()],
                         env={**cluster.client_env(), "RAY_AUTH_MODE": "token"}, capture_output=True, text=True,
                         timeout=400)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    parent, runs = child_runs(uri, "jobs")
    assert parent.data.tags["skd.status"] == "completed" and len(runs) == 2
    assert all(r.data.tags["skd.status"] == "completed" for r in runs)


def test_a_node_lost_mid_trial_continues_elsewhere_from_its_checkpoint(cli, cluster: FakeCluster,
                                                                       tmp_path: Path) -> None:
    """Last in the module: the simulator keeps a killed node on its books (it counts towards
    max_workers), so after this test the cluster can launch one node fewer."""
    import optuna
    from mlflow import MlflowClient

    from tests.helpers.runs import check_resumed_history, children, steps, wait_for

    use(cli, cluster)
    epochs = 6
    space = write_space(tmp_path / "space.yaml", **{"train.epochs": epochs, "train.batch_size": 16})
    log = tmp_path / "search.log"
    proc = cli.start("--address", cluster.address, "--config", str(space), "--num-samples", "2",
                     "--storage", str(tmp_path / "results"), "--experiment", "lose", "--seed", "0",
                     "--no-early-stopping", log=log)
    uri = cli.mlflow_uri

    def training_on_a_worker() -> object:
        for run in children(uri, "lose"):
            node = run.data.tags.get("skd.worker_nodes")
            if node in cluster.raylets() and len(steps(uri, run.info.run_id)) >= 2:
                return run
        return None

    run = wait_for(training_on_a_worker, proc, log, 240, "a trial with 2 epochs on a launched node")
    lost = run.data.tags["skd.worker_nodes"]
    cut_ms = int(time.time() * 1000)
    cluster.kill_node(lost)
    try:
        proc.wait(timeout=300)
    except Exception:
        pytest.fail(f"the search did not finish after its node was lost:\n{log.read_text()[-5000:]}")
    assert proc.returncode == 0, log.read_text()[-5000:] + cluster.tail()

    runs = children(uri, "lose")
    assert len(runs) == 2, "a restarted trial opened a second MLflow run"
    final = MlflowClient(uri).get_run(run.info.run_id)
    tags = final.data.tags
    assert tags["skd.status"] == "completed" and final.data.metrics["epoch"] == epochs
    assert tags["skd.restarts"] == "1" and tags["skd.worker_nodes"] != lost
    check_resumed_history(steps(uri, run.info.run_id), cut_ms, epochs)
    (search_dir,) = (tmp_path / "results").glob("lose_*/")
    study = optuna.load_study(study_name=search_dir.name, storage=f"sqlite:///{search_dir / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
