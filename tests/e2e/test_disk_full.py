"""Fault tests on a real tiny search: a full disk interrupts it with one line naming the disk
and every run closed, and it resumes to completion once space is back; a damaged saved file
makes --resume refuse, naming the file, and change nothing."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

SEARCH = ("--num-samples", "3", "--max-epochs", "1", "--max-concurrent", "1", "--set", "model.width=8",
          "--set", "train.threads=1", "--experiment", "full")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2.3 MB tmpfs: room for about two trials' checkpoints, not three."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2300k", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def statuses(uri: str, experiment: str) -> dict[str, str]:
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=100)
    return {r.info.run_name: r.data.tags.get("skd.status", "") for r in runs}


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_full_disk_interrupts_then_resume_completes(cli, small_disk: Path) -> None:
    first = cli(*SEARCH, "--storage", str(small_disk), "--mlflow-uri", cli.mlflow_uri, timeout=400)
    lines = error_lines(first.stdout)
    assert first.returncode == 2, first.stdout[-4000:]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "--resume" in lines[0], lines
    assert "running" not in statuses(cli.mlflow_uri, "full").values()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = cli("--resume", "--experiment", "full", "--storage", str(small_disk), "--mlflow-uri", cli.mlflow_uri,
                  timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    ended = statuses(cli.mlflow_uri, "full")
    parent = [s for name, s in ended.items() if name.startswith("full_")]
    assert parent == ["completed"], (ended, first.stdout[-3000:], resumed.stdout[-3000:])
    assert not {"running", "interrupted"} & set(ended.values()), ended
    print(lines[0], ended, sep="\n")  # shown with -s
    # A damaged Optuna study: the resume is refused, names the file, and changes nothing.
    folder = next(small_disk.glob("full_*"))
    (folder / "optuna.db").write_bytes(b"garbage " * 1000)
    before = ended, {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}
    refused = cli("--resume", "--experiment", "full", "--storage", str(small_disk), "--mlflow-uri", cli.mlflow_uri,
                  timeout=200)
    assert refused.returncode == 2, refused.stdout[-3000:]
    (line,) = error_lines(refused.stdout)
    assert "optuna.db is damaged" in line and "Traceback" not in refused.stdout
    print(line)
    assert "Started a local Ray instance" not in refused.stdout
    after = statuses(cli.mlflow_uri, "full"), {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                               for p in folder.iterdir() if p.is_file()}
    assert after == before
