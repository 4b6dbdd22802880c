"""End-to-end searches through the CLI with real Ray, Optuna and MLflow (no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers.searches import child_runs, write_space

pytestmark = pytest.mark.slow


def test_two_worker_trials_are_tracked_and_stopped_early(cli, tmp_path: Path) -> None:
    """Five 2-worker trials, ASHA with a grace period of 1: every trial has its MLflow run,
    the pool moves on from stopped trials, and one pool trains them all."""
    space = write_space(tmp_path / "space.yaml", **{"train.epochs": 4})
    res = cli("--config", str(space), "--num-samples", "5", "--workers-per-trial", "2", "--grace-period", "1",
              "--storage", str(tmp_path / "results"), "--experiment", "e2e", "--seed", "3", timeout=480)
    assert res.returncode == 0, res.stdout[-5000:]
    assert "leaderboard of" in res.stdout and "mlflow ui --backend-store-uri" in res.stdout
    parent, children = child_runs(cli.mlflow_uri, "e2e")
    assert parent.info.status == "FINISHED"
    assert len(children) == 5
    statuses = [r.data.tags["skd.status"] for r in children]
    assert "early_stopped" in statuses and "running" not in statuses, statuses
    # ASHA (grace 1, reduction 3, 4 epochs) decides at epochs 1 and 3; a stopped trial has
    # trained no epoch past the report it was stopped on (the pool waits for the decision).
    stopped = [r.data.metrics["epoch"] for r in children if r.data.tags["skd.status"] == "early_stopped"]
    assert set(stopped) <= {1, 3}, stopped
    from mlflow import MlflowClient

    client = MlflowClient(cli.mlflow_uri)
    for run in children:
        tags = run.data.tags
        assert tags["skd.method"] == "byot" and tags["skd.seed"] == "3"
        assert tags["skd.ray_trial_id"] and tags["skd.git_commit"]
        # Constants once on the parent, only what the space searches on a trial.
        assert "method" not in run.data.params and parent.data.params["config.method"] == "byot"
        assert "method.alpha" in run.data.params and "train.batch_size" not in run.data.params
        history = client.get_metric_history(run.info.run_id, "val/acc")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        assert tags["skd.status"] in ("completed", "early_stopped")
        if tags["skd.status"] == "completed":
            assert len(history) == 4
            assert client.get_metric_history(run.info.run_id, "train/ce_final")
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.json", "best_checkpoint.pt"} <= artifacts
        config = json.loads(Path(client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))).read_text())
        assert config["method"] == "byot" and config["train.seed"] == 3
    # One MLflow run per trial even with 2 workers: rank 0 logs, the other rank does not.
    assert len({r.data.tags["skd.ray_trial_id"] for r in children}) == 5
    # Every trial ran in the search's one DDP pool (2 CPUs fit one 2-worker trial at a time):
    # the same two worker processes trained them all, and they were Ray Train workers (DDP).
    assert {r.data.tags["skd.executor"] for r in children} == {"ddp_pool"}
    assert {r.data.tags["skd.world_size"] for r in children} == {"2"}
    pids = {r.data.tags["skd.worker_pids"] for r in children}
    assert len(pids) == 1 and len(set(pids.pop().split(","))) == 2, pids
    # The Optuna study persists beside the results and is readable with Optuna's own API.
    import optuna

    dbs = list((tmp_path / "results").glob("e2e_*/optuna.db"))
    assert len(dbs) == 1
    study = optuna.load_study(study_name=dbs[0].parent.name, storage=f"sqlite:///{dbs[0]}")
    assert len(study.trials) == 5
    assert study.trials[0].params["method.alpha"] == pytest.approx(0.3)  # defaults go first


def test_asha_stopped_trial_does_not_block_the_next(cli, tmp_path: Path) -> None:
    """One worker (trials train in the Tune trial process); 2 workers: the test above."""
    space = write_space(tmp_path / "space.yaml", **{"train.epochs": 4})
    res = cli("--config", str(space), "--num-samples", "5", "--max-concurrent", "1", "--grace-period", "1",
              "--storage", str(tmp_path / "results"), "--experiment", "asha", "--seed", "0", timeout=540)
    assert res.returncode == 0, res.stdout[-5000:]
    _, children = child_runs(cli.mlflow_uri, "asha")
    statuses = [r.data.tags["skd.status"] for r in children]
    assert len(children) == 5, statuses
    assert "early_stopped" in statuses, statuses
    assert "running" not in statuses
    stopped = [r for r in children if r.data.tags["skd.status"] == "early_stopped"]
    assert all(r.data.metrics["epoch"] in (1, 3) for r in stopped), [r.data.metrics["epoch"] for r in stopped]
    assert all(r.info.status == "FINISHED" for r in children)


# One worker: trials train in the Tune trial process; two: in the search's DDP pool.
@pytest.mark.parametrize("workers", ["1", "2"])
def test_diverging_trial_fails_with_its_reason_and_the_search_goes_on(cli, tmp_path: Path, workers: str) -> None:
    space = write_space(tmp_path / "space.yaml", **{"train.epochs": 2})
    text = yaml.safe_load(space.read_text())
    # The first trial (the defaults) diverges at once; later ones may or may not.
    text["params"]["optim.lr"] = {"type": "categorical", "choices": [1.0e12, 0.05], "default": 1.0e12}
    space.write_text(yaml.safe_dump(text))
    res = cli("--config", str(space), "--num-samples", "3", "--max-concurrent", "1", "--workers-per-trial", workers,
              "--storage", str(tmp_path / "results"), "--experiment", "nan", "--seed", "1", timeout=400)
    _, children = child_runs(cli.mlflow_uri, "nan")
    assert len(children) == 3, res.stdout[-4000:]
    failed = [r for r in children if r.data.tags["skd.status"] == "failed"]
    assert failed, res.stdout[-4000:]
    for run in failed:
        assert run.info.status == "FAILED"
        assert "loss became nan" in run.data.tags["skd.failure_reason"] or \
            "loss became inf" in run.data.tags["skd.failure_reason"]
    assert "running" not in [r.data.tags["skd.status"] for r in children]
    assert res.returncode == (1 if len(failed) == 3 else 0), res.stdout[-6000:]


def write_image_folder(root: Path, corrupt: bool) -> Path:
    """A tiny 2-class ImageNet-layout folder; `corrupt` adds a file that is not an image."""
    from PIL import Image

    for part, count in (("train", 6), ("val", 2)):
        for label in ("a", "b"):
            folder = root / part / label
            folder.mkdir(parents=True)
            for i in range(count):
                shade = 40 if label == "a" else 200
                Image.new("RGB", (8, 8), (shade, shade + i, shade)).save(folder / f"{i}.png")
    if corrupt:
        for label in ("a", "b"):
            (root / "train" / label / "broken.png").write_bytes(b"this is not a png")
    return root


def test_trial_that_raises_fails_with_its_reason_and_the_search_goes_on(cli, tmp_path: Path) -> None:
    broken = write_image_folder(tmp_path / "broken", corrupt=True)
    good = write_image_folder(tmp_path / "good", corrupt=False)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "fixed": {"method": "vanilla", "data.name": "imagefolder", "data.image_size": 8, "data.loader_workers": 0,
                  "data.val_fraction": 0.25, "model.backbone": "resnet_small", "model.width": 8,
                  "train.epochs": 1, "train.batch_size": 4},
        # The first trial (the defaults) reads a file that is not an image: PIL raises, not skd_ray.
        "params": {"data.dir": {"type": "categorical", "choices": [str(broken), str(good)], "default": str(broken)}},
    }))
    res = cli("--config", str(space), "--num-samples", "2", "--max-concurrent", "1",
              "--storage", str(tmp_path / "results"), "--experiment", "raises", "--seed", "0", timeout=400)
    _, children = child_runs(cli.mlflow_uri, "raises")
    assert len(children) == 2, res.stdout[-4000:]
    by_dir = {r.data.params["data.dir"]: r for r in children}
    failed = by_dir[str(broken)]
    assert failed.info.status == "FAILED" and failed.data.tags["skd.status"] == "failed"
    assert "cannot identify image file" in failed.data.tags["skd.failure_reason"], failed.data.tags
    # One MLflow run, however often Tune restarted the crashed trial.
    assert len([r for r in children if r.data.params["data.dir"] == str(broken)]) == 1
    if str(good) in by_dir:
        assert by_dir[str(good)].data.tags["skd.status"] == "completed"
    assert res.returncode == (1 if len(by_dir) == 1 else 0)


def test_two_pools_train_trials_side_by_side(cli, tmp_path: Path) -> None:
    """Half a CPU per worker: two 2-worker trials fit the 2-CPU machine at once, so the search
    starts two DDP pools and both take trials (each trial outlasts the pools' start-up skew)."""
    space = write_space(tmp_path / "space.yaml", **{"train.epochs": 3, "train.batch_size": 16})
    res = cli("--config", str(space), "--num-samples", "4", "--workers-per-trial", "2", "--cpus-per-worker", "0.5",
              "--no-early-stopping", "--storage", str(tmp_path / "results"), "--experiment", "pools", "--seed", "0",
              timeout=480)
    assert res.returncode == 0, res.stdout[-5000:]
    parent, children = child_runs(cli.mlflow_uri, "pools")
    assert parent.data.params["search.concurrency"] == "2"
    assert len(children) == 4 and {r.data.tags["skd.status"] for r in children} == {"completed"}
    pools = {r.data.tags["skd.worker_pids"] for r in children}
    assert len(pools) == 2, pools  # two pools, each with its own two worker processes
    first, second = (set(p.split(",")) for p in pools)
    assert len(first) == len(second) == 2 and not first & second
