"""What the resource watch says while a search's requests wait, polled against a scripted
cluster state: the autoscaler's launches are announced at once, plain waiting only after
NOTICE_S, one line per REPEAT_S, and a search without progress gives up after its bound."""

from __future__ import annotations

import pytest

from skd_ray.search.cluster import waiting
from skd_ray.search.cluster.autoscaler import Activity
from skd_ray.search.cluster.waiting import NOTICE_S, REPEAT_S, ResourceWatch

PENDING = [{"placement_group_id": "a", "state": "PENDING", "bundles": [{"CPU": 1.0}]}]
GRANTED = [{"placement_group_id": "a", "state": "CREATED", "bundles": [{"CPU": 1.0}]}]


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> dict:
    state = {"groups": PENDING, "activity": None}
    monkeypatch.setattr(waiting, "placement_groups", lambda address, job: state["groups"])
    monkeypatch.setattr(waiting, "activity", lambda address: state["activity"])
    monkeypatch.setattr(waiting, "free_orphaned_groups", lambda job: [])
    monkeypatch.setattr(ResourceWatch, "situation", lambda self: "free: 0 of 0 CPU; held by: nothing")
    return state


def watch(autoscaling: bool, lines: list[str], bound_s: float = 900.0) -> ResourceWatch:
    return ResourceWatch("s", "gcs", "job", autoscaling, bound_s, say=lines.append)


def test_a_launch_by_the_autoscaler_is_announced_at_the_first_poll(cluster: dict) -> None:
    lines: list[str] = []
    w = watch(True, lines)
    cluster["activity"] = Activity({"cpu_worker": 1}, 0, {})
    w.check(now=100.0)
    assert len(lines) == 1 and lines[0].startswith("waiting for the autoscaler: 1 trial request(s) pending")
    assert "1 node(s) launching (cpu_worker)" in lines[0]
    w.check(now=100.0 + REPEAT_S - 1)  # no repeat within REPEAT_S
    assert len(lines) == 1


def test_before_the_autoscaler_reacts_nothing_is_said_until_notice_s(cluster: dict) -> None:
    lines: list[str] = []
    w = watch(True, lines)
    w.check(now=100.0)
    w.check(now=100.0 + NOTICE_S / 2)
    assert lines == []  # the autoscaler has not reacted yet: not worth a line
    cluster["activity"] = Activity({}, 1, {})  # now a node is starting
    w.check(now=100.0 + NOTICE_S / 2 + 2)
    assert len(lines) == 1 and "waiting for the autoscaler" in lines[0] and "1 node(s) starting" in lines[0]


def test_a_fixed_cluster_says_who_holds_the_resources_after_notice_s(cluster: dict) -> None:
    lines: list[str] = []
    w = watch(False, lines)
    w.check(now=100.0)
    w.check(now=100.0 + NOTICE_S - 1)
    assert lines == []
    w.check(now=100.0 + NOTICE_S)
    assert len(lines) == 1 and lines[0].startswith("waiting for resources: 1 trial request(s) pending")
    assert "held by: nothing" in lines[0]
    cluster["groups"] = GRANTED
    w.check(now=200.0)
    assert w.waiting_since is None


def test_no_progress_for_the_bound_gives_up(cluster: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    signals: list[int] = []
    monkeypatch.setattr(waiting.os, "kill", lambda pid, sig: signals.append(sig))
    lines: list[str] = []
    w = watch(False, lines, bound_s=30.0)
    w.check(now=w.last_progress + 1)
    w.check(now=w.last_progress + 32)
    assert w.gave_up and "waited" in w.gave_up and signals and lines[-1].startswith("giving up:")


def test_a_failing_orphan_lookup_is_said_once_and_the_watch_goes_on(cluster: dict,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(job: str) -> list:
        raise AttributeError("no placement group table")

    monkeypatch.setattr(waiting, "free_orphaned_groups", broken)
    lines: list[str] = []
    w = watch(False, lines)
    w.check(now=100.0)
    w.check(now=100.0 + NOTICE_S)
    assert lines[0] == ("resource watch: cannot look for placement groups left by ended Train runs "
                        "(AttributeError: no placement group table)")
    assert len(lines) == 2 and lines[1].startswith("waiting for resources: 1 trial request(s) pending")
