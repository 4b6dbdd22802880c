"""A search never waits for resources silently, nor forever.

Everything a search starts asks Ray for resources through placement groups: Tune's trial
processes, the DDP pools' and per-trial Ray Train runs' worker groups. When one of them stays
pending, nothing in Ray says so on the driver's console (Ray Train only logs its own startup
timeout, every 60 s, and then retries without end). `ResourceWatch` is a thread in the driver
that polls the cluster every few seconds, frees the placement groups that ended Train runs
left behind (`orphans`), and, once a request of this search has waited `NOTICE_S`, prints one
line saying what waits, and either what the autoscaler is doing about it or what holds the
resources (placement groups and actors by job: another search, or leftovers of an earlier
one). When the search has waited `bound_s` without any progress (no request granted, no trial
result), it gives up: it interrupts the search the way Ctrl-C does (Tune saves its state,
`--resume` continues) and the driver ends with one error line.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from ray import tune

from skd_ray.errors import SkdError
from skd_ray.search.cluster.autoscaler import activity, cpus_and_gpus, format_resources
from skd_ray.search.cluster.orphans import free_orphaned_groups

# A request pending this long gets its first console line; then one line per REPEAT_S. While
# the autoscaler launches nodes for it the wait is expected and worth seeing at once (a launch
# can take only seconds, shorter than any delay here would be); before the autoscaler has
# reacted to a new request, the plain line waits NOTICE_S like on a fixed cluster.
NOTICE_S = 20.0
AUTOSCALER_NOTICE_S = 0.0
REPEAT_S = 60.0
POLL_S = 2.0
# Default bound on waiting without progress (--resource-wait-timeout): cloud nodes with
# GPUs can take several minutes to launch and set up.
DEFAULT_BOUND_S = 900.0

# A CPU/GPU an actor holds: plain, or inside a placement group ("CPU_group_<pg id>"; the
# indexed "CPU_group_<i>_<pg id>" repeats it).
HELD = re.compile(r"(CPU|GPU)(?:_group_[0-9a-f]+)?")
# Watches of the searches running in this process, by search name: Tune pickles its callbacks
# into the search's saved state, so the callback refers to its watch by name only.
WATCHES: dict[str, ResourceWatch] = {}


class ResourceWatch:
    """Polls the cluster for this job's pending placement groups (see module docstring)."""

    def __init__(self, name: str, gcs_address: str, job_id: str, autoscaling: bool, bound_s: float,
                 say: Callable[[str], None] = print, poll_s: float = POLL_S) -> None:
        self.name = name
        self.gcs_address = gcs_address
        self.job_id = job_id
        self.autoscaling = autoscaling
        self.bound_s = bound_s
        self.say = say
        self.poll_s = poll_s
        self.gave_up: str | None = None
        self.last_progress = time.monotonic()
        self.waiting_since: float | None = None
        self.last_notice = 0.0
        self._created: set[str] = set()
        self._orphan_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="resource-watch")

    def __enter__(self) -> ResourceWatch:
        WATCHES[self.name] = self
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        WATCHES.pop(self.name, None)

    def progress(self) -> None:
        """Something moved (a trial reported): waiting is not stuck."""
        self.last_progress = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception as err:  # the state API can be briefly unavailable; never kill the search
                if self.waiting_since is not None:
                    self.say(f"resource watch: {type(err).__name__}: {str(err).splitlines()[0][:200]}")

    def check(self, now: float | None = None) -> None:
        """One poll: note granted requests, report and bound the waiting ones."""
        now = time.monotonic() if now is None else now
        # Two reads of the groups on purpose: the orphan sweep needs each group's creating actor,
        # which only Ray's private GCS accessor gives; waiting is watched through the public state
        # API, so a change in the private one can cost the sweep but never the bound.
        self.free_orphans()
        groups = placement_groups(self.gcs_address, self.job_id)
        created = {g["placement_group_id"] for g in groups if g["state"] == "CREATED"}
        if created - self._created:
            self.last_progress = now
        self._created = created
        pending = [g for g in groups if g["state"] in ("PENDING", "RESCHEDULING")]
        if not pending:
            self.waiting_since = None
            return
        if self.waiting_since is None:
            self.waiting_since = now
        waited = now - self.waiting_since
        stuck = now - max(self.last_progress, self.waiting_since)
        if stuck >= self.bound_s and self.gave_up is None:
            self.gave_up = (f"{describe_pending(pending)} waited {stuck:.0f} s for resources without progress; "
                            f"{self.situation()}")
            self.say(f"giving up: {self.gave_up}")
            os.kill(os.getpid(), signal.SIGINT)  # Tune stops as on Ctrl-C: state saved, --resume works
            return
        if now - self.last_notice < REPEAT_S:
            return
        line = self.autoscaler_line(pending) if self.autoscaling else None
        if waited >= (NOTICE_S if line is None else AUTOSCALER_NOTICE_S):
            self.last_notice = now
            line = line or f"waiting for resources: {describe_pending(pending)}; {self.situation()}"
            self.say(f"{line} (waiting {waited:.0f} s; the search gives up after "
                     f"{self.bound_s:.0f} s without progress, --resource-wait-timeout)")

    def free_orphans(self) -> None:
        """Free the groups ended Train runs left behind; a failure here is said once and never
        stops the watch from reporting and bounding the waiting requests."""
        try:
            freed = free_orphaned_groups(self.job_id)
        except Exception as err:
            if not self._orphan_error:
                self._orphan_error = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
                self.say(f"resource watch: cannot look for placement groups left by ended Train runs "
                         f"({self._orphan_error})")
            return
        for orphan in freed:
            self.say(f"freed {format_resources(orphan.resources)} that a Ray Train run left behind when its "
                     f"trial ended (its controller is gone; Ray keeps such groups until the search ends)")

    def autoscaler_line(self, pending: list[dict[str, Any]]) -> str | None:
        """What the autoscaler does for the pending requests; None while it launches nothing."""
        act = activity(self.gcs_address)
        if act is None or not (act.launching or act.pending):
            return None
        launching = sum(act.launching.values())
        types = ", ".join(sorted(act.launching))
        return (f"waiting for the autoscaler: {describe_pending(pending)}, {launching} node(s) launching"
                f"{f' ({types})' if types else ''}, {act.pending} node(s) starting")

    def situation(self) -> str:
        """Free resources and who holds the rest."""
        import ray

        free, total = ray.available_resources(), ray.cluster_resources()
        have = ", ".join(f"{free.get(k, 0):g} of {total[k]:g} {k}" for k in ("CPU", "GPU") if total.get(k))
        held = holders(self.gcs_address, self.job_id) or "nothing this search can see"
        return f"free: {have or 'no CPU or GPU'}; held by: {held}"


class ResultsAreProgress(tune.Callback):
    """Tells the watch of search `name` that its trials report results. A module-level class
    holding only the name: Tune pickles its callbacks with the search's state."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        watch = WATCHES.get(self.name)
        if watch is not None:
            watch.progress()


def placement_groups(address: str, job_id: str) -> list[dict[str, Any]]:
    """This job's placement groups (Tune trials, Train worker groups) with state and bundles.
    The address is explicit: with two Ray instances on the machine Ray's lookup fails."""
    from ray.util.state import list_placement_groups

    return [{"placement_group_id": g.placement_group_id, "state": g.state,
             "bundles": [b.get("unit_resources") or {} for b in (g.bundles or [])]}
            for g in list_placement_groups(address, filters=[("creator_job_id", "=", job_id)], detail=True,
                                           limit=10000, timeout=10, raise_on_missing_output=False)]


def describe_pending(pending: list[dict[str, Any]]) -> str:
    shapes = Counter(format_resources({k: v for k, v in b.items() if not k.startswith("bundle")})
                     for g in pending for b in g["bundles"])
    asks = ", ".join(f"{shape} x{count}" for shape, count in shapes.items())
    return f"{len(pending)} trial request(s) pending ({asks})"


def holders(address: str, job_id: str) -> str:
    """Who holds CPUs/GPUs, by job (this search first): reserved placement groups (with the
    actors running in them) and actors holding resources outside any group."""
    from ray.util.state import list_actors, list_placement_groups

    held: dict[str, Counter] = {}
    inside: dict[str, Counter] = {}
    for group in list_placement_groups(address, filters=[("state", "=", "CREATED")], detail=True, limit=10000,
                                       timeout=10, raise_on_missing_output=False):
        reserved = cpus_and_gpus(bundle.get("unit_resources") or {} for bundle in group.bundles or [])
        if reserved:
            held.setdefault(group.creator_job_id, Counter()).update(reserved)
    for actor in list_actors(address, filters=[("state", "=", "ALIVE")], detail=True, limit=10000, timeout=10,
                             raise_on_missing_output=False):
        for key, value in (actor.required_resources or {}).items():
            match = HELD.fullmatch(key)
            if match and value:
                if "_group_" in key:
                    inside.setdefault(actor.job_id, Counter())[actor.class_name] += 1
                    break
                held.setdefault(actor.job_id, Counter())[match.group(1)] += value
    parts = []
    for job in sorted(held, key=lambda j: (j != job_id, j)):
        whose = "this search" if job == job_id else f"job {job}"
        actors = ", ".join(f"{cls} x{n}" for cls, n in sorted(inside.get(job, Counter()).items()))
        parts.append(f"{whose}: {format_resources(dict(held[job]))}{f' ({actors})' if actors else ''}")
    return "; ".join(parts)


# Searches of this process whose watch gave up, by name, with the reason.
GAVE_UP: dict[str, str] = {}


@contextlib.contextmanager
def watch_search(name: str, autoscaling: bool, bound_s: float) -> Iterator[ResourceWatch]:
    """Watch the resources of search `name` while Tune runs it (see module docstring)."""
    import ray

    ctx = ray.get_runtime_context()
    GAVE_UP.pop(name, None)
    with ResourceWatch(name, ctx.gcs_address, ctx.get_job_id(), autoscaling, bound_s) as watch:
        yield watch
    if watch.gave_up:
        GAVE_UP[name] = watch.gave_up


def raise_if_gave_up(name: str) -> None:
    """After the search closed as interrupted: the one error line of a search that gave up waiting."""
    reason = GAVE_UP.pop(name, None)
    if reason:
        raise SkdError(f"the search stopped: {reason}",
                       "free or add the resources (`ray status`), or raise --resource-wait-timeout; "
                       "--resume continues the search")
