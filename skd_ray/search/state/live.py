"""One live driver per search folder.

A search's folder holds what its driver rewrites all the time (Ray Tune's state every second,
the Optuna study, `skd_search.json`); two drivers on one folder (two `resume`s of the same
search at once, or a comparison resumed twice) would overwrite each other's state and share
the study. So a driver holds an exclusive `flock` on `<folder>/.skd_driver.lock` from before it
changes anything until it ends (the operating system drops it when the process dies, so a
killed driver never leaves the folder locked). NFSv4 clients (EFS) share such locks between
machines. A second driver is refused at once with one error line that names the first.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from skd_ray.errors import SkdError
from skd_ray.results.databases import LockTimeout, file_lock

LOCK_FILE = ".skd_driver.lock"
HELD: dict[Path, int] = {}  # folders this process holds, with how many blocks hold each


def holder_note() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"


@contextlib.contextmanager
def hold_search(folder: str | Path) -> Iterator[None]:
    """This process is the one driver of the search (or comparison) in `folder` while the block
    runs; re-entrant within the process (the command line holds it before a resume checks
    anything, the search again while it runs)."""
    key = Path(folder).resolve()
    if HELD.get(key):
        HELD[key] += 1
        try:
            yield
        finally:
            HELD[key] -= 1
        return
    path = key / LOCK_FILE
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(path, timeout_s=0, note=holder_note()))
        except LockTimeout:
            raise SkdError(f"search {key.name} is being run by another live process ({read_note(path)})",
                           "wait for it to end, or stop it (Ctrl-C, ray job stop), then resume") from None
        HELD[key] = 1
        try:
            yield
        finally:
            HELD.pop(key, None)


def read_note(path: Path) -> str:
    try:
        return path.read_text().strip() or "no details"
    except OSError:
        return "no details"
