"""The search's console: one line per trial event and a compact progress line.

Ray Tune's own output (a result box per trial report, a config box per trial, status
tables) is hundreds of lines for a handful of trials; the driver silences it (see
`skd_ray.search.console.ray_logs`) and prints these lines instead:

    [0:04] t00 started   exits=[1, 2, 3] attention=true alpha=0.3 lr=0.05
    [0:09] t02 stopped by ASHA after epoch 2 (best val_acc 0.8412)
    [0:12] t00 finished  best val_acc 0.9620 at epoch 11 of 12
    [0:15] progress: 3 done, 2 running, 3 pending | best val_acc 0.9620 (t00) | elapsed 0:15, ETA ~0:25

On a terminal the progress line is redrawn in place (carriage return + erase); anywhere else
(a pipe, a file, a Ray job's logs) it is a plain line every `PLAIN_EVERY_S` seconds, with no
control characters. The callback is pickled into Tune's saved state, so it keeps only plain
values and looks the output stream up when it writes.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from ray import tune

from skd_ray.search.space.definition import SearchSpace
from skd_ray.search.tuning.numbering import label as trial_label
from skd_ray.training.metrics import EPOCH, best

PLAIN_EVERY_S = 30.0  # a progress line this often when the output is not a terminal
TTY_EVERY_S = 1.0  # redraw cadence on a terminal
SHORT_NAMES = {"temperature": "T"}


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def searched_values(space: SearchSpace, config: dict[str, Any]) -> dict[str, Any]:
    """The trial's searched values by short name (`lr`, `T`, ...), in the space's order."""
    flat = space.to_flat(config)
    out = {}
    for p in space.params:
        if p.key in flat:
            short = p.key.rsplit(".", 1)[-1]
            out[SHORT_NAMES.get(short, short)] = flat[p.key]
    return out


def clock(seconds: float) -> str:
    """`m:ss` (or `h:mm:ss`) of a duration."""
    s = int(max(0.0, seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class SearchProgress(tune.Callback):
    """Driver-side Tune callback printing the trial events and the progress line."""

    def __init__(self, space: SearchSpace, num_samples: int, max_epochs: int, metric: str, mode: str,
                 *, tty: bool | None = None) -> None:
        self.space = space
        self.num_samples = num_samples
        self.max_epochs = max_epochs
        self.metric = metric
        self.best_key = best(metric)
        self.sign = 1.0 if mode == "max" else -1.0
        self.tty = tty
        self.started = time.monotonic()
        self.epochs: dict[str, int] = {}
        self.bests: dict[str, float] = {}
        self.best_epochs: dict[str, int] = {}
        self.done = 0
        self.last_progress = 0.0
        self.line_drawn = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.started = time.monotonic()  # a resumed search counts from its restart
        self.line_drawn = False

    # ---- output -----------------------------------------------------------------------
    @property
    def out(self) -> TextIO:
        return sys.stdout

    def is_tty(self) -> bool:
        if self.tty is not None:
            return self.tty
        try:
            return self.out.isatty()
        except (AttributeError, ValueError):
            return False

    def say(self, text: str) -> None:
        """One event line (clearing a progress line drawn in place first)."""
        self._clear()
        self.out.write(f"[{clock(time.monotonic() - self.started)}] {text}\n")
        self.out.flush()

    def _clear(self) -> None:
        if self.line_drawn:
            self.out.write("\r\033[K")
            self.line_drawn = False

    # ---- bookkeeping --------------------------------------------------------------------
    def label(self, trial: Any) -> str:
        return trial_label(trial.trial_id)

    def leader(self) -> tuple[str, float] | None:
        if not self.bests:
            return None
        trial_id = max(self.bests, key=lambda t: self.sign * self.bests[t])
        return trial_label(trial_id), self.bests[trial_id]

    def progress_text(self, trials: list) -> str:
        running = sum(t.status == "RUNNING" for t in trials)
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        pending = max(0, self.num_samples - done - running)
        elapsed = time.monotonic() - self.started
        leader = self.leader()
        best_text = f"best {self.metric} {leader[1]:.4f} ({leader[0]})" if leader else f"best {self.metric} -"
        eta = f"ETA ~{clock(elapsed / done * (self.num_samples - done))}" if done and done < self.num_samples \
            else "ETA -"
        return (f"progress: {done} done, {running} running, {pending} pending | {best_text} | "
                f"elapsed {clock(elapsed)}, {eta}")

    def show_progress(self, trials: list, force: bool = False) -> None:
        now = time.monotonic()
        every = TTY_EVERY_S if self.is_tty() else PLAIN_EVERY_S
        if not force and now - self.last_progress < every:
            return
        self.last_progress = now
        text = self.progress_text(trials)
        if self.is_tty():
            self.out.write(f"\r\033[K{text}")
            self.line_drawn = True
        else:
            self.out.write(f"[{clock(now - self.started)}] {text}\n")
        self.out.flush()

    # ---- Tune's hooks -------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        values = " ".join(f"{k}={format_value(v)}" for k, v in searched_values(self.space, trial.config).items())
        self.say(f"{self.label(trial)} started   {values}".rstrip())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.label(trial)
        epoch = int(result.get(EPOCH, 0) or 0)
        self.epochs[trial.trial_id] = epoch
        value = result.get(self.best_key, result.get(self.metric))
        if isinstance(value, int | float) and math.isfinite(value):
            previous = self.bests.get(trial.trial_id)
            if previous is None or self.sign * value > self.sign * previous:
                self.bests[trial.trial_id] = float(value)
                self.best_epochs[trial.trial_id] = epoch
        self.show_progress(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        label = self.label(trial)
        epoch = int((trial.last_result or {}).get(EPOCH, self.epochs.get(trial.trial_id, 0)) or 0)
        value = self.bests.get(trial.trial_id)
        best_text = f"best {self.metric} {value:.4f}" if value is not None else f"no {self.metric}"
        if epoch < self.max_epochs:
            self.say(f"{label} stopped by ASHA after epoch {epoch} ({best_text})")
        else:
            at = self.best_epochs.get(trial.trial_id)
            where = f" at epoch {at}" if at else ""
            self.say(f"{label} finished  {best_text}{where} of {epoch}")
        self.show_progress(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        message = str(getattr(trial, "error_msg", "") or "").strip().splitlines()
        reason = message[-1][:200] if message else "the trial raised"
        self.say(f"{self.label(trial)} failed    {reason}")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.is_tty():
            self.show_progress(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._clear()
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        self.say(self.progress_text(trials).replace("progress:", "search ended:", 1).split(" | elapsed")[0]
                 + f" | {clock(time.monotonic() - self.started)} in all" if done else "search ended: no trial ran")
