"""A search's tracking store going away and coming back, said once each, and bounded.

A tracking server restarts, a head node hiccups, a database fails over: for a while every
MLflow call of the search fails. The store's client waits such an outage out call by call
(`skd_ray.results.store.PatientClient`), so trials pause at their next log call instead of
failing, and what they log reaches the store once it is back. Nothing on the console would say
so: `StoreWatch` is a thread in the driver that asks the store every few seconds whether it
answers, and prints one line when it stops answering and one when it is back. When it stays
away longer than the search's bound (`--tracking-outage-limit`), the watch stops the search as
Ctrl-C does (Ray Tune saves its state; `resume` continues it) and the search ends with one
`error:` line. A store on local disk (SQLite, files) is not watched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from skd_ray.errors import SkdError
from skd_ray.results.store import MlflowStore, masked, ping_database
from skd_ray.search.state.study import give_up_on_studies

POLL_S = 2.0


class StoreWatch(threading.Thread):
    """Polls `ping` (None: it answered); says when the store stops and starts answering; gives
    up after `limit_s` without an answer (`on_give_up`, then the search is interrupted)."""

    def __init__(self, label: str, ping: Callable[[], str | None], limit_s: float,
                 say: Callable[[str], None] = print, poll_s: float = POLL_S,
                 interrupt: Callable[[], None] | None = None, on_give_up: Callable[[], None] = lambda: None) -> None:
        super().__init__(name="skd-store-watch", daemon=True)
        self.label, self.ping, self.limit_s = label, ping, limit_s
        self.say, self.poll_s, self.on_give_up = say, poll_s, on_give_up
        # Tune stops as on Ctrl-C: state saved, resume works.
        self.interrupt = interrupt or (lambda: os.kill(os.getpid(), signal.SIGINT))
        self.down_since: float | None = None
        self.gave_up: str | None = None
        self._stop = threading.Event()

    @classmethod
    def of_store(cls, store: MlflowStore, **kwargs: Any) -> StoreWatch:
        """The watch of the search's MLflow server or database."""
        def give_up() -> None:
            store.gave_up = True  # the driver's own waiting calls fail now, so the search can stop

        kind = "server" if store.is_server else "store"
        return cls(f"MLflow {kind} {store}", store.ping, store.outage_limit_s, on_give_up=give_up, **kwargs)

    def run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.check(self.ping())
            if self.gave_up:
                return

    def check(self, problem: str | None, now: float | None = None) -> None:
        """One poll's answer: None when the store answered."""
        now = time.monotonic() if now is None else now
        if problem is None:
            if self.down_since is not None:
                self.say(f"{self.label} is back after {now - self.down_since:.0f} s; "
                         "what waited for it goes to it now")
                self.down_since = None
            return
        if self.down_since is None:
            self.down_since = now
            self.say(f"warning: {self.label} is unreachable ({problem}); trials keep what they log until it is "
                     f"back (the search stops after {self.limit_s:.0f} s without it)")
            return
        if now - self.down_since >= self.limit_s and self.gave_up is None:
            self.gave_up = f"{self.label} was unreachable for {now - self.down_since:.0f} s"
            self.say(f"giving up: {self.gave_up}")
            self.on_give_up()
            self.interrupt()

    def stop(self) -> None:
        self._stop.set()


GAVE_UP: dict[str, str] = {}


@contextlib.contextmanager
def watch_store(store: MlflowStore, name: str, study_url: str | None = None) -> Iterator[list[StoreWatch]]:
    """Watch the tracking store of search `name`, and the database of its Optuna study
    (`study_url`, when it is a database server), while Tune runs it (see module docstring)."""
    GAVE_UP.pop(name, None)
    say = lambda line: print(line, flush=True)  # noqa: E731
    watches = []
    if store.is_server or store.is_database:
        watches.append(StoreWatch.of_store(store, say=say))
    if study_url and not study_url.startswith("sqlite"):
        watches.append(StoreWatch(f"Optuna storage {masked(study_url)}", lambda: ping_database(study_url),
                                  store.outage_limit_s, say=say, on_give_up=give_up_on_studies))
    for watch in watches:
        watch.start()
    try:
        yield watches
    finally:
        for watch in watches:
            watch.stop()
        gave_up = [w.gave_up for w in watches if w.gave_up]
        if gave_up:
            GAVE_UP[name] = gave_up[0]


def store_gave_up(name: str) -> bool:
    """Whether the watch of search `name` stopped it (until `raise_if_store_gave_up` reports it)."""
    return name in GAVE_UP


def raise_if_store_gave_up(name: str, cause: BaseException | None = None) -> None:
    """The one error line of a search stopped because its tracking store stayed away."""
    reason = GAVE_UP.pop(name, None)
    if reason:
        raise SkdError(f"the search stopped: {reason}",
                       "start the MLflow server or database again, then continue with skd-ray resume "
                       "(or raise --tracking-outage-limit)") from cause
