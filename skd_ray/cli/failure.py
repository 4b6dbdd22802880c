"""What the user sees when a command ends on something that is not an `SkdError`.

A bare traceback from deep inside Ray, Optuna or SQLAlchemy tells the user neither what went
wrong nor what to do, and a dozen of them hide the one line that matters. So any other
exception ends the command with one `error:` line: a full disk is named as such (with the
fix: free space, then `--resume`), anything else is named by its type and message, and the
full traceback goes to a log file (in the search's folder when there is one) whose path the
line gives.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path

from skd_ray.errors import SkdError, is_disk_full

LOG_NAME = "skd_error.log"


class FailureLog:
    """Where the traceback of an unexpected failure is written: the folder of the search being
    run once it is known (`use`), else the system's temporary directory."""

    directory: Path | None = None

    @classmethod
    def use(cls, directory: str | Path | None) -> None:
        cls.directory = Path(directory) if directory else None

    @classmethod
    def write(cls, err: BaseException) -> Path | None:
        """Write `err`'s traceback; returns the file, or None when nothing could be written
        (a full disk may refuse even this)."""
        text = f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n" + "".join(
            traceback.format_exception(type(err), err, err.__traceback__))
        for directory in (cls.directory, Path(tempfile.gettempdir())):
            if directory is None:
                continue
            try:
                directory.mkdir(parents=True, exist_ok=True)
                path = directory / LOG_NAME
                with path.open("a") as fh:
                    fh.write(text + "\n")
                return path
            except OSError:
                continue
        return None


def as_user_error(err: BaseException) -> SkdError:
    """The one-line error shown for an unexpected exception, its traceback written to a log."""
    log = FailureLog.write(err)
    where = f"the full traceback is in {log}" if log else "no traceback could be written (the disk may be full)"
    if is_disk_full(err):
        return SkdError(f"no space left on the device (or quota) of the search's files: {one_line(err)}",
                        "free space (or raise the quota), then continue with --resume and the same "
                        f"--storage and --experiment; {where}")
    return SkdError(f"unexpected {type(err).__name__}: {one_line(err)}",
                    f"this is a bug or an unchecked input; {where}")


def one_line(err: BaseException) -> str:
    """The exception's message squeezed onto one line, at most 300 characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
