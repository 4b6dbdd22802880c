"""The meeting point of Tune trials and the persistent DDP worker pools (`skd_ray.search.execution.pool`).

A multi-worker trial does not start its own Ray Train run: it posts a job here, a pool that
is already running (worker processes up, torch imported, process group formed, datasets
cached) takes it, and rank 0 of that pool posts back one event per epoch. After each epoch
rank 0 waits for the trial's decision: Tune's function API blocks `tune.report` until the
driver wants the next result, so "proceed" arrives only when the trial may go on, and a
trial stopped by ASHA (or one whose process died) becomes "stop" at once, not an epoch later.

Every submission gets its own key: a trial that Tune retries is a new attempt, and events of
an old attempt can never reach the new one. Used as an asyncio Ray actor (`MAILBOX_OPTIONS`);
its logic is plain Python so it is testable without Ray.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from typing import Any

from skd_ray.search.execution.pool.messages import Failed, PoolEvent, PoolJob, Report

# A trial process that has not called in for this long is gone (killed, node lost): its job stops.
HEARTBEAT_TIMEOUT_S = 30.0
# The mailbox holds no CPU: it only passes small messages (checkpoints travel as object refs).
MAILBOX_OPTIONS: dict[str, Any] = {"num_cpus": 0, "max_concurrency": 1000}
SHUTDOWN = "shutdown"


class PoolMailbox:
    """Job queue for the pools, event queue per trial attempt, decision queue per attempt."""

    def __init__(self, heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._keys = itertools.count(1)
        self._pending: deque[str] = deque()
        self._jobs: dict[str, PoolJob] = {}
        self._taken: dict[str, tuple[int, PoolJob]] = {}  # key -> (pool, job) until the pool is done
        self._trial_of: dict[str, str] = {}
        self._events: dict[str, deque[PoolEvent]] = {}
        self._decisions: dict[str, deque[str]] = {}
        self._released: set[str] = set()
        self._beats: dict[str, float] = {}
        self._pool_of: dict[str, int] = {}
        self._broken: dict[int, str] = {}
        self._pools = 0
        self._shutdown = False
        self._changed: asyncio.Condition | None = None

    # -- driver -------------------------------------------------------------------------

    def expect_pools(self, count: int) -> None:
        """How many pools serve this mailbox (all broken means no trial can run)."""
        self._pools = count

    async def shutdown(self) -> None:
        """Every pool's next `take` answers SHUTDOWN; pending trials get an error, and a job
        still training (its trial stopped by Ctrl-C) stops at its next report."""
        self._shutdown = True
        for key in list(self._pending):
            self._fail(key, "the search is shutting down", retryable=False)
        self._pending.clear()
        for key in list(self._pool_of):
            self._release(key)
        await self._notify()

    async def release_trial(self, trial_id: str) -> None:
        """Tune ended `trial_id` (stopped, errored or finished): end whatever attempt runs."""
        self._release_attempts_of(trial_id)
        await self._notify()

    async def pool_failed(self, pool_id: int, reason: str) -> None:
        """A pool's Train run ended for good: its trial fails, and with no pool left every
        waiting trial fails too, with the reason (never a silent wait)."""
        self._broken[pool_id] = reason
        for key, pool in list(self._pool_of.items()):
            if pool == pool_id:
                self._fail(key, f"its DDP worker pool failed: {reason}", retryable=True)
        if self._all_pools_broken():
            for key in list(self._pending):
                self._fail(key, f"every DDP worker pool failed: {reason}", retryable=False)
            self._pending.clear()
        await self._notify()

    # -- trial process ------------------------------------------------------------------

    async def submit(self, trial_id: str, job: PoolJob) -> str:
        """Queue a job for the next free pool; returns the attempt's key. An earlier attempt
        of the same trial still running (its process died unnoticed) is stopped."""
        self._release_attempts_of(trial_id)
        key = f"{trial_id}#{next(self._keys)}"
        self._trial_of[key] = trial_id
        self._events[key] = deque()
        self._decisions[key] = deque()
        self._beats[key] = time.monotonic()
        if self._shutdown:
            self._fail(key, "the search is shutting down", retryable=False)
        elif self._all_pools_broken():
            self._fail(key, f"every DDP worker pool failed: {next(iter(self._broken.values()))}", retryable=False)
        else:
            self._jobs[key] = job
            self._pending.append(key)
        await self._notify()
        return key

    async def next_event(self, key: str, timeout: float) -> PoolEvent | None:
        """The attempt's next event (Report / Done / Failed), or None after `timeout` s."""
        self._beats[key] = time.monotonic()
        await self._wait(lambda: bool(self._events.get(key)), timeout)
        queue = self._events.get(key)
        return queue.popleft() if queue else None

    def heartbeat(self, key: str) -> None:
        """The trial process is alive (called while it waits inside `tune.report`)."""
        self._beats[key] = time.monotonic()

    async def decide(self, key: str, proceed: bool) -> None:
        """The trial's answer to its latest report: train on, or stop."""
        if proceed and key not in self._released:
            self._decisions.setdefault(key, deque()).append("proceed")
        else:
            self._release(key)
        await self._notify()

    async def release(self, key: str) -> None:
        """The trial attempt is over (returned, raised or stopped): nothing more to do for it."""
        self._release(key)
        await self._notify()

    # -- pool rank 0 --------------------------------------------------------------------

    async def take(self, pool_id: int, timeout: float) -> Any:
        """The next job as (key, job), SHUTDOWN, or None after `timeout` s."""
        await self._wait(lambda: self._shutdown or bool(self._pending), timeout)
        if self._shutdown:
            return SHUTDOWN
        if not self._pending:
            return None
        key = self._pending.popleft()
        self._pool_of[key] = pool_id
        job = self._jobs.pop(key)
        self._taken[key] = (pool_id, job)
        return key, job

    def job(self, key: str) -> PoolJob:
        """A taken job, for the pool's other ranks: they fetch it through Ray (not from rank 0
        over the process group) so object refs in it stay valid. Kept until `done_with`,
        whatever happens to the trial meanwhile, so every rank gets the same job."""
        return self._taken[key][1]

    def done_with(self, key: str) -> None:
        """The pool finished training `key` (every rank has its job)."""
        self._taken.pop(key, None)

    async def post(self, key: str, event: PoolEvent) -> None:
        """An event for the trial attempt (dropped once the attempt is released)."""
        if key not in self._released and key in self._events:
            self._events[key].append(event)
            if not isinstance(event, Report):
                self._pool_of.pop(key, None)
        await self._notify()

    async def await_decision(self, key: str, timeout: float) -> str | None:
        """"proceed" or "stop" for the attempt's latest report, or None after `timeout` s.
        A trial process silent for HEARTBEAT_TIMEOUT_S is taken as gone: "stop"."""
        await self._wait(lambda: bool(self._decisions.get(key)) or key in self._released, timeout)
        decisions = self._decisions.get(key)
        if decisions:
            return decisions.popleft()
        if key in self._released:
            return "stop"
        if time.monotonic() - self._beats.get(key, 0.0) > self.heartbeat_timeout_s:
            self._release(key)
            return "stop"
        return None

    async def pool_started(self, pool_id: int) -> None:
        """A pool (re)started its workers: an attempt it was running died with the old ones."""
        self._broken.pop(pool_id, None)
        for key, (pool, _) in list(self._taken.items()):
            if pool == pool_id:
                del self._taken[key]
        for key, pool in list(self._pool_of.items()):
            if pool == pool_id:
                self._fail(key, "a worker of its DDP pool died; the pool restarted", retryable=True)
        await self._notify()

    # -- internals ----------------------------------------------------------------------

    def _release_attempts_of(self, trial_id: str) -> None:
        for key, trial in list(self._trial_of.items()):
            if trial == trial_id:
                self._release(key)

    def _all_pools_broken(self) -> bool:
        return bool(self._pools) and len(self._broken) >= self._pools

    def _fail(self, key: str, message: str, retryable: bool) -> None:
        self._pool_of.pop(key, None)
        if key not in self._released and key in self._events:
            self._events[key].append(Failed(message, deterministic=not retryable))

    def _release(self, key: str) -> None:
        self._released.add(key)
        self._pool_of.pop(key, None)
        self._jobs.pop(key, None)
        if key in self._pending:
            self._pending.remove(key)
        self._events.pop(key, None)
        self._decisions.pop(key, None)
        self._beats.pop(key, None)
        self._trial_of.pop(key, None)

    async def _notify(self) -> None:
        changed = self._condition()
        async with changed:
            changed.notify_all()

    async def _wait(self, ready: Any, timeout: float) -> None:
        changed = self._condition()
        async with changed:
            try:
                await asyncio.wait_for(changed.wait_for(ready), timeout)
            except TimeoutError:
                pass

    def _condition(self) -> asyncio.Condition:
        # Created on first use, inside the actor's event loop.
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed
