"""Watching a search from outside, as a person would: its trial runs and their metric history in
MLflow, waiting for progress, and the processes a driver started."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

FINISHED = ("completed", "early_stopped")


def children(uri: str, experiment: str) -> list[Any]:
    """The child (trial) runs of the experiment's search so far; [] before they exist."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], "tags.`skd.kind` = 'trial'")


def steps(uri: str, run_id: str, metric: str = "val/acc") -> list[tuple[int, int]]:
    """(step, timestamp in ms) of every logged value of `metric`, in logging order."""
    from mlflow import MlflowClient

    history = MlflowClient(uri).get_metric_history(run_id, metric)
    return sorted(((m.step, m.timestamp) for m in history), key=lambda s: s[1])


def wait_for(predicate: Any, proc: Any, log: Path, timeout: float, what: str) -> Any:
    """Poll `predicate()` until it returns something truthy; fail if the driver exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # the MLflow store is created by the driver concurrently
            value = None
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the search exited ({proc.returncode}) before {what}:\n{log.read_text()[-5000:]}")
        time.sleep(0.5)
    pytest.fail(f"no {what} after {timeout}s:\n{log.read_text()[-5000:]}")


def wait_for_epochs(uri: str, experiment: str, epochs: int, proc: Any, log: Path) -> Any:
    """The first trial's MLflow run, once it has logged `epochs` epochs."""

    def logged() -> Any:
        runs = children(uri, experiment)
        return runs and len(steps(uri, runs[0].info.run_id)) >= epochs and runs[0]

    return wait_for(logged, proc, log, 240, f"{epochs} logged epochs")


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (the Ray processes a local search started)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_until_gone(marker: str, timeout: float) -> list[str]:
    """Wait until no process's command line mentions `marker`; SIGKILL and return any left."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if marker in cmdline(pid)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return [cmdline(pid)[:200] for pid in left]


def train_workers(driver_pid: int) -> set[int]:
    """PIDs of the Ray Train worker actors (`ray::RayTrainWorker...`) under this search's driver."""
    return {p for p in descendants(driver_pid) if cmdline(p).startswith("ray::RayTrainWorker")}


def check_resumed_history(history: list[tuple[int, int]], cut_ms: int, last_epoch: int) -> int:
    """The history of a trial interrupted at `cut_ms` and resumed from a checkpoint: every
    epoch 1..last_epoch is there; epochs up to the checkpoint it resumed from were logged
    once (not re-run); only epochs after it may appear twice. Returns the checkpoint epoch."""
    before = [s for s, t in history if t <= cut_ms]
    after = [s for s, t in history if t > cut_ms]
    assert before and after, history
    resumed_from = min(after) - 1
    # A resume from scratch would log epoch 1 again; epoch k is logged before its checkpoint
    # is reported, so the checkpoint is the last logged epoch or the one before it.
    assert max(before) - 1 <= resumed_from <= max(before), history
    assert resumed_from >= 1, history
    counts = {s: [x for x, _ in history].count(s) for s in {x for x, _ in history}}
    assert sorted(counts) == list(range(1, last_epoch + 1)), history
    assert all(counts[s] == 1 for s in counts if s <= resumed_from), history
    assert all(c <= 2 for c in counts.values()), history
    return resumed_from


def interrupt(proc: Any, log: Path, what: str) -> str:
    """Ctrl-C as a terminal sends it (SIGINT to the process group); returns the output once
    `what` (the search, the comparison) has stopped, and fails when it does not stop."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except Exception:
        pytest.fail(f"{what} did not stop on SIGINT:\n{log.read_text()[-5000:]}")
    return log.read_text()
