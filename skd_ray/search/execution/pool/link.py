"""The trial process's side of a DDP pool job (see `skd_ray.search.execution.pool` and its
`mailbox`).

`PoolLink` posts the job, yields the pool's events, turns each epoch's report into a
`tune.report` with a checkpoint and tells the pool to go on once Tune returns. A heartbeat
thread keeps the job alive while `tune.report` blocks; when the trial ends in any way
(returned, raised, stopped by Tune, which exits the thread inside `tune.report`) the job is
released so the pool moves on at once.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from skd_ray.search.execution.job import RUN_ID_RESULT
from skd_ray.search.execution.pool.messages import PoolEvent, PoolJob, Report
from skd_ray.training.checkpoint import CHECKPOINT_FILE

# Seconds between heartbeats (the mailbox gives up on a trial after HEARTBEAT_TIMEOUT_S).
HEARTBEAT_S = 2.0
# Seconds one `next_event` call waits in the mailbox before asking again.
EVENT_WAIT_S = 5.0


def checkpoint_ref(checkpoint: Any) -> list[Any] | None:
    """The state file of a Tune checkpoint as bytes in the object store (for the pool to
    load), wrapped in a list so Ray passes the reference rather than the bytes."""
    import ray

    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return [ray.put((Path(directory) / CHECKPOINT_FILE).read_bytes())]


class PoolLink:
    """One attempt of a trial in a pool: submit on enter, release on exit."""

    def __init__(self, mailbox: Any, trial_id: str, job: PoolJob, checkpoint: Any) -> None:
        self.mailbox = mailbox
        self.trial_id = trial_id
        self.job = job.with_state(checkpoint_ref(checkpoint))
        self.key = ""
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="pool-heartbeat")

    def __enter__(self) -> PoolLink:
        import ray

        self.key = ray.get(self.mailbox.submit.remote(self.trial_id, self.job))
        self._beat.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import ray

        self._stop.set()
        try:
            ray.get(self.mailbox.release.remote(self.key), timeout=10)
        except Exception:  # the mailbox is gone with the search: nothing to release
            pass

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.mailbox.heartbeat.remote(self.key)

    def events(self) -> Iterator[PoolEvent]:
        """The pool's events for this attempt, in order (waits as long as the job runs)."""
        import ray

        while True:
            event = ray.get(self.mailbox.next_event.remote(self.key, EVENT_WAIT_S))
            if event is not None:
                yield event

    def report_to_tune(self, event: Report) -> None:
        """Hand an epoch to Tune (metrics + checkpoint), then let the pool go on. Tune's
        `report` returns only when the driver wants the next result; a stopped trial never
        returns from it, and the release on exit stops the pool's job instead."""
        import ray
        from ray import tune

        state = ray.get(event.state[0])
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / CHECKPOINT_FILE).write_bytes(state)
            tune.report({**event.metrics, RUN_ID_RESULT: self.job.run_id},
                        checkpoint=tune.Checkpoint.from_directory(tmp))
        ray.get(self.mailbox.decide.remote(self.key, True))
