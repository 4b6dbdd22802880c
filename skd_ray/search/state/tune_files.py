"""The files Ray Tune and Optuna save in a search's folder: checked before a resume reopens
anything, and kept as a last good copy that a full disk cannot truncate.

Ray Tune rewrites its state (`experiment_state-*.json`, `searcher-state-*.pkl`,
`search_gen_state-*.json`) every second; a write that hits a full disk leaves a truncated
file, and restoring from it either crashes deep inside Ray or silently forgets finished trials
(which are then trained again). So after every complete save the set is copied to
`.skd_state_backup/` (written beside, then renamed: a failed copy never replaces a good
one), and `--resume` checks every file first: SQLite's own integrity check for Optuna's
study, JSON structure for Tune's state, a full opcode walk for its pickles. A damaged Tune
state with an intact copy is restored from the copy (the damaged files kept as `*.damaged`);
anything else damaged stops the resume before anything is changed, naming the file.

Ray-free: no file here is unpickled or restored through Ray.
"""

from __future__ import annotations

import json
import os
import pickletools
import shutil
import sqlite3
from pathlib import Path

from skd_ray.errors import SkdError

BACKUP_DIR = ".skd_state_backup"
STUDY_FILE = "optuna.db"
TUNER_FILE = "tuner.pkl"
STATE_GLOBS = ("experiment_state-*.json", "searcher-state-*.pkl", "search_gen_state-*.json")


class DamagedFile(SkdError):
    """A saved file of a search cannot be read back as what it should be."""


def damaged(path: Path, why: str) -> DamagedFile:
    return DamagedFile(f"the search's saved file {path} is damaged ({why}); the search was left as it was",
                       "restore that file from a backup, or start a new search without --resume")


def newest(directory: Path, pattern: str) -> Path | None:
    """The newest file matching `pattern` (Tune names them by the time the run started)."""
    found = sorted(directory.glob(pattern))
    return found[-1] if found else None


def check_pickle(path: Path) -> None:
    """Walk every opcode of a pickle without running it (no class is imported): a truncated or
    overwritten file fails here."""
    try:
        data = path.read_bytes()
        if not data:
            raise ValueError("empty file")
        for _ in pickletools.genops(data):
            pass
    except (OSError, ValueError) as err:
        raise damaged(path, f"not a complete pickle: {str(err) or type(err).__name__}") from None


def check_experiment_state(path: Path) -> list[str]:
    """Tune's experiment state: JSON with `trial_data` (pairs of JSON texts, the trial and
    its run metadata) and `runner_data`; returns the recorded trials' statuses."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("trial_data"), list) \
                or not isinstance(data.get("runner_data"), dict):
            raise ValueError("trial_data / runner_data missing")
        statuses = []
        for entry in data["trial_data"]:
            if not isinstance(entry, list) or len(entry) != 2:
                raise ValueError("a trial entry is not a [trial, metadata] pair")
            trial = json.loads(entry[0])
            json.loads(entry[1])
            if not isinstance(trial, dict) or not isinstance(trial.get("status"), str) \
                    or not isinstance(trial.get("trial_id"), str):
                raise ValueError("a trial entry lacks its id or status")
            statuses.append(trial["status"])
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
        raise damaged(path, f"not Ray Tune's experiment state: {str(err)[:200]}") from None
    return statuses


def check_tune_state(directory: Path) -> list[str]:
    """Every Tune state file of a search folder; returns the recorded trials' statuses."""
    state = newest(directory, STATE_GLOBS[0])
    if state is None or not (directory / TUNER_FILE).is_file():
        raise DamagedFile(f"{directory} holds no Ray Tune state (experiment_state-*.json and tuner.pkl)",
                          "use the --storage of the search, or start a new search without --resume")
    statuses = check_experiment_state(state)
    check_pickle(directory / TUNER_FILE)
    for pattern in STATE_GLOBS[1:]:
        path = newest(directory, pattern)
        if path is None:
            raise damaged(directory / pattern, "missing")
        check_pickle(path)
    return statuses


def check_study(path: Path, study_name: str) -> None:
    """Optuna's SQLite study: a database that passes SQLite's integrity check and holds the
    study of this search. Opened read-only, so checking changes nothing."""
    if not path.is_file():
        raise damaged(path, "missing")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            (verdict,) = db.execute("PRAGMA quick_check").fetchone()
            if verdict != "ok":
                raise sqlite3.DatabaseError(verdict)
            names = [row[0] for row in db.execute("SELECT study_name FROM studies")]
    except sqlite3.Error as err:
        raise damaged(path, f"not an intact Optuna database: {err}") from None
    if study_name not in names:
        raise damaged(path, f"it holds no study named {study_name}")


def back_up_tune_state(directory: Path) -> bool:
    """Copy the current Tune state set to the backup folder when every file of it is intact;
    returns whether it did. A copy that fails (full disk) leaves the previous one in place.

    The copy is checked, not the originals: Ray Tune writes its state in a local staging
    folder and a background thread copies it into the search's folder, so a file that was
    whole when checked can be half rewritten by the time it is copied."""
    backup = directory / BACKUP_DIR
    staging = directory / (BACKUP_DIR + ".new")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for path in tune_state_files(directory):
            shutil.copy2(path, staging / path.name)
        check_tune_state(staging)
        old = directory / (BACKUP_DIR + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if backup.exists():
            os.replace(backup, old)
        os.replace(staging, backup)
        shutil.rmtree(old, ignore_errors=True)
    except (OSError, SkdError):
        shutil.rmtree(staging, ignore_errors=True)
        return False
    return True


def tune_state_files(directory: Path) -> list[Path]:
    """The newest file of each kind Tune needs to restore a search."""
    found = [directory / TUNER_FILE, *(newest(directory, p) for p in STATE_GLOBS)]
    return [p for p in found if p is not None and p.is_file()]


def usable_backup(directory: Path) -> Path | None:
    """The backup folder when it holds an intact Tune state set, else None."""
    backup = directory / BACKUP_DIR
    if not backup.is_dir():
        return None
    try:
        check_tune_state(backup)
    except SkdError:
        return None
    return backup


def restore_tune_state(directory: Path, backup: Path) -> list[str]:
    """Put the backup's files in place of the damaged ones (kept as `<name>.damaged`);
    returns the names restored."""
    restored = []
    for path in tune_state_files(directory):
        os.replace(path, path.with_name(path.name + ".damaged"))
    for copy in sorted(backup.iterdir()):
        shutil.copy2(copy, directory / copy.name)
        restored.append(copy.name)
    return restored
