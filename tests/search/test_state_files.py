"""The last good copy of Ray Tune's state, and what a search blames when its storage is full.

Ray Tune's state files reach a search's folder through a background copy, so a file can be
rewritten while the backup copies it; the backup must only ever hold a set that reads back
whole. A full disk makes Ray fail on files it cut short (EOFError on a pickled trial error):
the search must still end as interrupted, not failed.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from skd_ray.errors import DiskFull, SkdError
from skd_ray.search.state import tune_files as state_files
from skd_ray.search.state.tune_files import (
    BACKUP_DIR,
    TUNER_FILE,
    back_up_tune_state,
    check_tune_state,
    restore_tune_state,
    usable_backup,
)
from skd_ray.search.tuning import closing

STAMP = "2026-01-01_00-00-00"


def write_state(folder: Path, statuses: list[str]) -> None:
    """A minimal Tune state set that `check_tune_state` accepts."""
    trials = [[json.dumps({"trial_id": f"t{i}", "status": s}), json.dumps({})] for i, s in enumerate(statuses)]
    (folder / f"experiment_state-{STAMP}.json").write_text(json.dumps({"trial_data": trials, "runner_data": {}}))
    (folder / TUNER_FILE).write_bytes(pickle.dumps({"tuner": 1}))
    (folder / f"searcher-state-{STAMP}.pkl").write_bytes(pickle.dumps({"searcher": 1}))
    (folder / f"search_gen_state-{STAMP}.json").write_bytes(pickle.dumps({"gen": 1}))  # a pickle, despite the name


def test_backup_holds_the_last_intact_set_and_restores_it(tmp_path: Path) -> None:
    write_state(tmp_path, ["TERMINATED", "RUNNING"])
    assert back_up_tune_state(tmp_path)
    assert check_tune_state(tmp_path / BACKUP_DIR) == ["TERMINATED", "RUNNING"]
    # A later save cut short by a full disk: no new backup, the old one stays usable.
    state = tmp_path / f"experiment_state-{STAMP}.json"
    truncated = state.read_text()[:40]
    state.write_text(truncated)
    assert not back_up_tune_state(tmp_path)
    backup = usable_backup(tmp_path)
    assert backup is not None and check_tune_state(backup) == ["TERMINATED", "RUNNING"]
    restored = restore_tune_state(tmp_path, backup)
    assert f"experiment_state-{STAMP}.json" in restored
    assert check_tune_state(tmp_path) == ["TERMINATED", "RUNNING"]
    assert (tmp_path / f"experiment_state-{STAMP}.json.damaged").read_text() == truncated  # kept beside
    assert not (tmp_path / (BACKUP_DIR + ".new")).exists()


def test_a_file_rewritten_while_it_is_copied_never_replaces_the_backup(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    write_state(tmp_path, ["TERMINATED"])
    assert back_up_tune_state(tmp_path)
    write_state(tmp_path, ["TERMINATED", "TERMINATED"])
    real_copy = shutil.copy2

    def copy_mid_rewrite(src: str | Path, dst: str | Path) -> None:
        """The source was whole a moment ago; Tune's background copy is rewriting it now."""
        real_copy(src, dst)
        if Path(src).name.startswith("experiment_state-"):
            Path(dst).write_text(Path(src).read_text()[:25])

    monkeypatch.setattr(state_files.shutil, "copy2", copy_mid_rewrite)
    assert not back_up_tune_state(tmp_path)
    monkeypatch.setattr(state_files.shutil, "copy2", real_copy)
    backup = usable_backup(tmp_path)
    assert backup is not None and check_tune_state(backup) == ["TERMINATED"]
    assert not (tmp_path / (BACKUP_DIR + ".new")).exists()
    assert back_up_tune_state(tmp_path)  # the next whole copy replaces it
    assert check_tune_state(tmp_path / BACKUP_DIR) == ["TERMINATED", "TERMINATED"]


Usage = namedtuple("Usage", "total used free")


@pytest.mark.parametrize("free, expected", [(512 * 1024, DiskFull), (64 * 1024**2, EOFError)])
def test_a_read_back_failure_on_a_full_storage_is_blamed_on_the_disk(free: int, expected: type,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(closing.shutil, "disk_usage", lambda path: Usage(2 * 1024**2, 2 * 1024**2 - free, free))
    err = EOFError("Ran out of input")
    blamed = closing.blame_full_storage(err, "/results", "s1")
    assert type(blamed) is expected
    assert closing.ending_status(blamed) == ("interrupted" if expected is DiskFull else "failed")
    if expected is DiskFull:
        assert isinstance(blamed, SkdError) and "EOFError: Ran out of input" in str(blamed)
        assert "No space left on device" in str(blamed) and "--resume" in blamed.fix


def test_ctrl_c_and_disk_errors_are_kept_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(closing.shutil, "disk_usage", lambda path: Usage(1, 1, 0))
    for err in (KeyboardInterrupt(), OSError(28, "No space left on device")):
        assert closing.blame_full_storage(err, "/results", "s1") is err
