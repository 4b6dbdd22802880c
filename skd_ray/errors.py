"""User-facing errors.

Every problem a user can cause (bad flag, bad search-space file, missing data, unreachable
cluster) is raised as `SkdError` with the problem and the fix, so the CLI prints exactly one
line and exits non-zero instead of dumping a traceback from deep inside Ray.
"""

from __future__ import annotations

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


class TrainingDiverged(SkdError):
    """The loss became NaN or infinite; the trial cannot continue."""


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
