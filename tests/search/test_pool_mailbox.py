"""The DDP pools' mailbox: who gets which job, events, decisions, stops and failures.

The mailbox is plain asyncio code (Ray runs it as an async actor), so these tests drive it
directly; the pools themselves are covered end to end in test_search_e2e/test_fault_tolerance.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from skd_ray.results.store import MlflowStore
from skd_ray.search.execution.pool.mailbox import SHUTDOWN, PoolMailbox
from skd_ray.search.execution.pool.messages import Done, Failed, PoolJob, Report

JOB = PoolJob({"optim.lr": 0.1}, "run-1", MlflowStore("sqlite:///mlflow.db"), 0.0)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_job_goes_to_one_pool_and_its_events_to_its_trial() -> None:
    async def scenario() -> None:
        box = PoolMailbox()
        box.expect_pools(2)
        key = await box.submit("t1", JOB)
        taken = await box.take(0, timeout=0.1)
        assert taken == (key, JOB)
        assert await box.take(1, timeout=0.05) is None  # one job, one pool
        await box.release(key)  # even if the trial ends meanwhile, the pool's other ranks
        assert box.job(key) == JOB  # get the job rank 0 took
        box.done_with(key)
        key = await box.submit("t1", JOB)
        await box.take(0, timeout=0.1)
        await box.post(key, Report({"epoch": 1}, []))
        assert await box.next_event(key, timeout=0.1) == Report({"epoch": 1}, [])
        assert await box.next_event(key, timeout=0.05) is None
        await box.decide(key, True)
        assert await box.await_decision(key, timeout=0.1) == "proceed"
        assert await box.await_decision(key, timeout=0.05) is None  # no answer yet to the next report
        await box.post(key, Done({}, 1))
        assert isinstance(await box.next_event(key, timeout=0.1), Done)

    run(scenario())


def test_take_wakes_up_as_soon_as_a_job_arrives() -> None:
    async def scenario() -> float:
        box = PoolMailbox()
        started = time.monotonic()
        waiting = asyncio.create_task(box.take(0, timeout=5.0))
        await asyncio.sleep(0.05)
        await box.submit("t1", JOB)
        assert (await waiting)[1] == JOB
        return time.monotonic() - started

    assert run(scenario()) < 1.0


def test_a_stopped_trial_stops_its_job_at_the_next_decision() -> None:
    async def scenario() -> None:
        box = PoolMailbox()
        key = await box.submit("t1", JOB)
        await box.take(0, timeout=0.1)
        await box.post(key, Report({}, []))
        await box.release_trial("t1")  # what the driver does when ASHA stops t1
        assert await box.await_decision(key, timeout=0.1) == "stop"
        # Events for a released attempt are dropped, not queued for nobody.
        await box.post(key, Report({}, []))
        assert await box.next_event(key, timeout=0.05) is None

    run(scenario())


def test_a_trial_released_before_any_pool_took_it_is_never_trained() -> None:
    async def scenario() -> None:
        box = PoolMailbox()
        key = await box.submit("t1", JOB)
        await box.release(key)
        assert await box.take(0, timeout=0.05) is None

    run(scenario())


def test_a_silent_trial_process_counts_as_gone() -> None:
    async def scenario() -> None:
        box = PoolMailbox(heartbeat_timeout_s=0.2)
        key = await box.submit("t1", JOB)
        await box.take(0, timeout=0.1)
        assert await box.await_decision(key, timeout=0.05) is None  # still fresh
        await asyncio.sleep(0.3)
        assert await box.await_decision(key, timeout=0.05) == "stop"

    run(scenario())


def test_heartbeats_keep_a_waiting_trial_alive() -> None:
    async def scenario() -> None:
        box = PoolMailbox(heartbeat_timeout_s=0.2)
        key = await box.submit("t1", JOB)
        await box.take(0, timeout=0.1)
        for _ in range(4):
            await asyncio.sleep(0.1)
            box.heartbeat(key)
            assert await box.await_decision(key, timeout=0.01) is None

    run(scenario())


def test_a_retried_trial_is_a_new_attempt_and_ends_the_old_one() -> None:
    async def scenario() -> None:
        box = PoolMailbox()
        first = await box.submit("t1", JOB)
        await box.take(0, timeout=0.1)
        second = await box.submit("t1", JOB)
        assert first != second
        assert await box.await_decision(first, timeout=0.05) == "stop"
        assert (await box.take(0, timeout=0.1))[1] == JOB
        await box.post(first, Report({}, []))  # the old attempt cannot reach the new one
        assert await box.next_event(second, timeout=0.05) is None

    run(scenario())


def test_a_restarted_pool_fails_its_running_trial_as_retryable() -> None:
    async def scenario() -> None:
        box = PoolMailbox()
        box.expect_pools(2)
        key = await box.submit("t1", JOB)
        other = await box.submit("t2", JOB)
        await box.take(0, timeout=0.1)
        await box.take(1, timeout=0.1)
        await box.pool_started(0)
        event = await box.next_event(key, timeout=0.1)
        assert isinstance(event, Failed) and not event.deterministic and "restarted" in event.message
        assert await box.next_event(other, timeout=0.05) is None  # the other pool's trial is untouched

    run(scenario())


def test_when_every_pool_failed_waiting_and_new_trials_fail_with_the_reason() -> None:
    async def scenario() -> None:
        box = PoolMailbox()
        box.expect_pools(1)
        running = await box.submit("t1", JOB)
        await box.take(0, timeout=0.1)
        waiting = await box.submit("t2", JOB)
        await box.pool_failed(0, "no GPU on the node")
        for key in (running, waiting):
            event = await box.next_event(key, timeout=0.1)
            assert isinstance(event, Failed) and "no GPU on the node" in event.message
        late = await box.submit("t3", JOB)
        event = await box.next_event(late, timeout=0.1)
        assert event.deterministic and "no GPU on the node" in event.message

    run(scenario())


def test_shutdown_reaches_every_pool_and_fails_what_still_waits() -> None:
    async def scenario() -> None:
        box = PoolMailbox()
        running = await box.submit("t0", JOB)
        await box.take(0, timeout=0.1)
        key = await box.submit("t1", JOB)
        await box.shutdown()
        assert await box.take(0, timeout=0.1) == SHUTDOWN
        assert await box.take(1, timeout=0.1) == SHUTDOWN
        assert isinstance(await box.next_event(key, timeout=0.1), Failed)
        assert await box.await_decision(running, timeout=0.1) == "stop"

    run(scenario())
