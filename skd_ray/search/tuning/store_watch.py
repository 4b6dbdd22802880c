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

from skd_ray.errors import SkdError
from skd_ray.results.store import MlflowStore

POLL_S = 2.0


class StoreWatch(threading.Thread):
    """Polls `store.ping()`; says when the store stops and starts answering; gives up after
    `store.outage_limit_s` without an answer."""

    def __init__(self, store: MlflowStore, say: Callable[[str], None] = print, poll_s: float = POLL_S,
                 interrupt: Callable[[], None] | None = None) -> None:
        super().__init__(name="skd-store-watch", daemon=True)
        self.store, self.say, self.poll_s = store, say, poll_s
        # Tune stops as on Ctrl-C: state saved, resume works.
        self.interrupt = interrupt or (lambda: os.kill(os.getpid(), signal.SIGINT))
        self.down_since: float | None = None
        self.gave_up: str | None = None
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.check(self.store.ping(timeout_s=self.poll_s))
            if self.gave_up:
                return

    def check(self, problem: str | None, now: float | None = None) -> None:
        """One poll's answer: None when the store answered."""
        now = time.monotonic() if now is None else now
        kind = "server" if self.store.is_server else "store"
        if problem is None:
            if self.down_since is not None:
                self.say(f"MLflow {kind} {self.store} is back after {now - self.down_since:.0f} s; "
                         "the trials' waiting logs go to it now")
                self.down_since = None
            return
        if self.down_since is None:
            self.down_since = now
            self.say(f"warning: MLflow {kind} {self.store} is unreachable ({problem}); trials keep what they "
                     f"log until it is back (the search stops after {self.store.outage_limit_s:.0f} s without it)")
            return
        if now - self.down_since >= self.store.outage_limit_s and self.gave_up is None:
            self.gave_up = f"MLflow {kind} {self.store} was unreachable for {now - self.down_since:.0f} s"
            self.say(f"giving up: {self.gave_up}")
            self.store.gave_up = True  # the driver's own waiting calls fail now, so the search can stop
            self.interrupt()

    def stop(self) -> None:
        self._stop.set()


GAVE_UP: dict[str, str] = {}


@contextlib.contextmanager
def watch_store(store: MlflowStore, name: str) -> Iterator[StoreWatch | None]:
    """Watch the tracking store of search `name` while Tune runs it (see module docstring)."""
    GAVE_UP.pop(name, None)
    if not (store.is_server or store.is_database):
        yield None
        return
    watch = StoreWatch(store, say=lambda line: print(line, flush=True))
    watch.start()
    try:
        yield watch
    finally:
        watch.stop()
        if watch.gave_up:
            GAVE_UP[name] = watch.gave_up


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
