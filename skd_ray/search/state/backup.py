"""Driver-side Tune callback keeping a last good copy of Ray Tune's saved state.

Tune rewrites its state files every second; one write that hits a full disk truncates them,
and a search could then never be resumed. After each save this callback copies the complete
set aside (`skd_ray.search.state.tune_files.back_up_tune_state`), so `--resume` has an intact state
to fall back on once space is back.

The state grows with the trials (26 KB each for `vanilla`), and copying and checking it runs
in Tune's loop: copies every 2 s took 142 s of the 951 s of a 1,000-trial search (26 MB of
state at its end, 2 CPUs shared with other work). So a copy waits at least `BACKUP_EVERY_S`
and at least 20 times as long as the last copy took (`BACKUP_SHARE`, the share Ray Tune's
"auto" pacing gives its own saves); the copy is then at most that old.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray import tune

from skd_ray.search.state.tune_files import STATE_GLOBS, back_up_tune_state, newest

BACKUP_EVERY_S = 2.0  # at most this often: Tune saves every second, and each copy costs a little
BACKUP_SHARE = 0.05  # and at most this share of the driver's time


class BackUpTuneState(tune.Callback):
    """Copies the search's Tune state to its backup folder whenever Tune saved a new one."""

    def __init__(self, exp_dir: str) -> None:
        self.exp_dir = exp_dir
        self._last_check = 0.0
        self._last_saved = 0.0
        self._every_s = BACKUP_EVERY_S

    def _maybe_back_up(self) -> None:
        now = time.monotonic()
        if now - self._last_check < getattr(self, "_every_s", BACKUP_EVERY_S):
            return
        self._last_check = now
        state = newest(Path(self.exp_dir), STATE_GLOBS[0])
        if state is None:
            return
        try:
            saved = state.stat().st_mtime
        except OSError:
            return
        if saved == self._last_saved:
            return
        if back_up_tune_state(Path(self.exp_dir)):
            self._last_saved = saved
        self._every_s = max(BACKUP_EVERY_S, (time.monotonic() - now) / BACKUP_SHARE)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._maybe_back_up()

    def __getstate__(self) -> dict[str, Any]:
        return {"exp_dir": self.exp_dir, "_last_check": 0.0, "_last_saved": 0.0, "_every_s": BACKUP_EVERY_S}
