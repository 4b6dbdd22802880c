"""User-facing errors.

Every problem a user can cause (bad flag, bad search-space file, missing data, unreachable
cluster) is raised as `SkdError` with the problem and the fix, so the CLI prints exactly one
line and exits non-zero instead of dumping a traceback from deep inside Ray.
"""

from __future__ import annotations


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
