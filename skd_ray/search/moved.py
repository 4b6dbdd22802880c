"""The module paths of `skd_ray.search` before it was split into subpackages, still importable.

A search's saved state pickles Ray Tune's trials and searcher, and cloudpickle refers to the
trial function and the searcher class by their module path: a search saved before the split
names `skd_ray.search.trial`, `skd_ray.search.optuna_study`, ... Importing one of those names
gives the module it became, so such a search still resumes. Nothing in skd-ray imports these
names itself."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

MOVED = {
    "skd_ray.search.space_stages": "skd_ray.search.space.stages",
    "skd_ray.search.points": "skd_ray.search.tuning.points",
    "skd_ray.search.driver": "skd_ray.search.tuning.tuner",
    "skd_ray.search.callbacks": "skd_ray.search.tuning.callbacks",
    "skd_ray.search.optuna_study": "skd_ray.search.tuning.optuna_study",
    "skd_ray.search.numbering": "skd_ray.search.tuning.numbering",
    "skd_ray.search.answer": "skd_ray.search.tuning.answer",
    "skd_ray.search.closing": "skd_ray.search.tuning.closing",
    "skd_ray.search.trial_job": "skd_ray.search.execution.job",
    "skd_ray.search.trial": "skd_ray.search.execution.trial",
    "skd_ray.search.executors": "skd_ray.search.execution.executors",
    "skd_ray.search.sessions": "skd_ray.search.execution.sessions",
    "skd_ray.search.pool": "skd_ray.search.execution.pool",
    "skd_ray.search.pool.driver": "skd_ray.search.execution.pool.pools",
    "skd_ray.search.pool.link": "skd_ray.search.execution.pool.link",
    "skd_ray.search.pool.mailbox": "skd_ray.search.execution.pool.mailbox",
    "skd_ray.search.pool.messages": "skd_ray.search.execution.pool.messages",
    "skd_ray.search.pool.worker": "skd_ray.search.execution.pool.worker",
    "skd_ray.search.autoscaler": "skd_ray.search.cluster.autoscaler",
    "skd_ray.search.orphans": "skd_ray.search.cluster.orphans",
    "skd_ray.search.waiting": "skd_ray.search.cluster.waiting",
    "skd_ray.search.state_files": "skd_ray.search.state.tune_files",
    "skd_ray.search.state_backup": "skd_ray.search.state.backup",
    "skd_ray.search.progress": "skd_ray.search.console.progress",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed; importing it was the whole job."""


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds an old module path and hands back the module it moved to."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModules())  # before the path finder, which would load a second copy
