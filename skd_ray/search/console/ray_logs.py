"""How much of a search the console shows, and where Ray's own log lines go instead.

A search's console is for a person: skd-ray prints one line per trial event and a progress
line (`skd_ray.search.console.progress`), then the leaderboard. Ray's driver-side log records (Tune's
warnings, Train's controller messages, `ray.init`'s banner) go to `ray.log` in the search's
directory; the trial processes' own output stays in Ray's session log directory
(`/tmp/ray/session_latest/logs` on a local cluster) unless `-v` forwards it.

Levels: QUIET (`-q`) prints only the final summary; NORMAL (default) the event lines too;
VERBOSE (`-v`) also Ray Tune's status tables and Ray's logs on the console, as Ray prints them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

QUIET = 0
NORMAL = 1
VERBOSE = 2
RAY_LOG_FILE = "ray.log"
NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
RAY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.data", "optuna")


def tune_verbosity(verbosity: int) -> int | None:
    """`RunConfig(verbose=...)`: 0 silences Tune's tables (the event lines replace them);
    None keeps Tune's default output (`-v`)."""
    return None if verbosity >= VERBOSE else 0


@contextlib.contextmanager
def ray_logs_to_file(log_file: Path, verbosity: int) -> Iterator[Path | None]:
    """While the search runs, send the records of Ray's loggers to `log_file` instead of the
    console (unless VERBOSE); yields the file used, or None. Ray configures its `ray` logger
    with its own console handler and no propagation when it is first imported, so the
    console handlers are swapped for one file handler here and put back afterwards."""
    if verbosity >= VERBOSE:
        yield None
        return
    import ray  # noqa: F401  (configures Ray's loggers, whose handlers are replaced below)

    # Tune's newer console output prints its configuration box and a TensorBoard hint even
    # at verbose=0; its classic output prints nothing at 0.
    previous_output = os.environ.get(NEW_OUTPUT_ENV)
    os.environ[NEW_OUTPUT_ENV] = "0"

    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate))
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.propagate = False
        logger.addHandler(handler)
    try:
        yield log_file
    finally:
        if previous_output is None:
            os.environ.pop(NEW_OUTPUT_ENV, None)
        else:
            os.environ[NEW_OUTPUT_ENV] = previous_output
        for logger, handlers, propagate in saved:
            logger.removeHandler(handler)
            for h in handlers:
                logger.addHandler(h)
            logger.propagate = propagate
        with contextlib.suppress(OSError):  # a full disk must not replace the search's own error
            handler.close()
