"""The driver's watch on its tracking store: one line when it goes away, one when it is back,
and a stop past the bound (checked by feeding it answers and times)."""

from skd_ray.results.store import MlflowStore
from skd_ray.search.tuning.store_watch import StoreWatch


def watch(limit: float) -> tuple[StoreWatch, list[str], list[bool]]:
    said: list[str] = []
    stopped: list[bool] = []
    w = StoreWatch.of_store(MlflowStore("http://127.0.0.1:5999", outage_limit_s=limit), say=said.append,
                            interrupt=lambda: stopped.append(True))
    return w, said, stopped


def test_an_outage_is_said_once_when_it_starts_and_once_when_it_ends() -> None:
    w, said, stopped = watch(limit=300)
    w.check(None, now=0)
    for t in range(10, 70, 2):
        w.check("Connection refused", now=t)
    w.check(None, now=72)
    w.check(None, now=74)
    assert len(said) == 2 and not stopped
    assert said[0].startswith("warning: MLflow server http://127.0.0.1:5999 is unreachable (Connection refused)")
    assert said[1].startswith("MLflow server http://127.0.0.1:5999 is back after 62 s")


def test_past_the_bound_the_search_is_stopped_once() -> None:
    w, said, stopped = watch(limit=20)
    for t in range(0, 40, 2):
        w.check("Connection refused", now=t)
    assert stopped == [True] and "was unreachable" in (w.gave_up or "")
    assert said[-1] == "giving up: MLflow server http://127.0.0.1:5999 was unreachable for 20 s"
    assert w.gave_up is not None and len(said) == 2
