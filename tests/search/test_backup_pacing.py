"""The copy of Ray Tune's state is paced by what it costs: a large search's state (it grows with
every trial) is copied less often, so the copies stay a small share of the driver's time."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from skd_ray.search.state import backup


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_copy_that_takes_long_waits_twenty_times_as_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    copies: list[float] = []

    def copy(directory: Path) -> bool:
        copies.append(clock.now)
        clock.now += 1.5  # the copy and its check take 1.5 s
        return True

    monkeypatch.setattr(backup.time, "monotonic", clock)
    monkeypatch.setattr(backup, "back_up_tune_state", copy)
    state = tmp_path / "experiment_state-2025-01-01_00-00-00.json"
    callback = backup.BackUpTuneState(str(tmp_path))

    def step(at: float, saved: float) -> None:
        clock.now = at
        state.write_text("{}")
        os.utime(state, (saved, saved))  # Tune saved again
        callback.on_step_end(0, [])

    step(1000.0, 1.0)
    assert copies == [1000.0]
    step(1010.0, 2.0)  # 10 s later: within 20 x 1.5 s of the last copy's start
    step(1029.0, 3.0)
    assert copies == [1000.0]
    step(1031.0, 4.0)
    assert copies == [1000.0, 1031.0]
    # A restored search starts again at the shortest interval.
    restored = pickle.loads(pickle.dumps(callback))
    assert restored._every_s == backup.BACKUP_EVERY_S


def test_a_quick_copy_keeps_the_shortest_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    copies: list[float] = []
    monkeypatch.setattr(backup.time, "monotonic", clock)
    monkeypatch.setattr(backup, "back_up_tune_state", lambda directory: copies.append(clock.now) or True)
    state = tmp_path / "experiment_state-2025-01-01_00-00-00.json"
    callback = backup.BackUpTuneState(str(tmp_path))
    for i, at in enumerate((1000.0, 1001.0, 1002.5, 1004.0)):
        clock.now = at
        state.write_text("{}")
        os.utime(state, (i + 1.0, i + 1.0))
        callback.on_step_end(0, [])
    assert copies == [1000.0, 1002.5]  # every BACKUP_EVERY_S (2 s) while Tune keeps saving
