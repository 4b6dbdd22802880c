"""User-facing errors.

Every problem a user can cause (bad flag, bad search-space file, missing data, unreachable
cluster) is raised as `SkdError` with the problem and the fix, so the CLI prints exactly one
line and exits non-zero instead of dumping a traceback from deep inside Ray.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class SkdError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} -- {fix}" if fix else problem)


class ConfigError(SkdError):
    """Invalid configuration value or search-space entry."""


class DataError(SkdError):
    """Dataset missing or unreadable."""


class DiskFull(SkdError):
    """The disk (or quota) holding a search's files is full: the search is interrupted, not
    failed, and continues with `--resume` once space is back."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem, fix or "free space (or raise the quota), then continue with --resume and the "
                                         "same --storage and --experiment")


class TrainingDiverged(SkdError):
    """The loss became NaN or infinite; the trial cannot continue."""


class GpuShareExceeded(SkdError):
    """A trial given a fraction of a GPU (`--gpus-per-worker` below 1) needed more memory than
    its share. Its allocator is capped at that share, so it fails alone instead of starving the
    trials packed beside it; a retry would need the same memory, so it is not retried."""


def ensure_writable_directory(directory: str | Path, what: str, option: str) -> Path:
    """Create `directory` if needed and check it can be written, before any work is spent on
    what will go there; `what` names it in the error, `option` is the flag that sets it."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SkdError(f"{what} {directory} cannot be created ({err.strerror})",
                       f"pass {option} with a writable directory") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SkdError(f"{what} {directory} is not writable", f"pass {option} with a writable directory")
    return path


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# How a full disk reads once SQLite, SQLAlchemy or Ray have turned the OSError into text.
DISK_FULL_TEXT = ("No space left on device", "database or disk is full", "Disk quota exceeded")


def exception_chain(err: BaseException) -> list[BaseException]:
    """`err` and every exception it was raised from or while handling (no repeats)."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_disk_full(err: BaseException) -> bool:
    """True when `err`, or what caused it, is a full disk or an exhausted quota. A search that
    ends so is interrupted, not failed: it continues with `--resume` once space is back."""
    for e in exception_chain(err):
        if isinstance(e, DiskFull):
            return True
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        if any(text in str(e) for text in DISK_FULL_TEXT):
            return True
    return False
