"""What a comparison records under --storage (`<storage>/<name>/skd_compare.json`), so that
`--resume` continues it where it stopped: its MLflow run, the settings every method's search
gets, each method's space, and per method whether its search and its final evaluation ended
(with the final numbers, so finished work is never redone)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skd_ray.errors import SkdError
from skd_ray.results.store import StoreOfRequest
from skd_ray.search.space.definition import Param, SearchSpace
from skd_ray.search.state.saved import safe_name

COMPARE_FILE = "skd_compare.json"


@dataclass
class MethodStep:
    """One method of a comparison: its search, then its final evaluation."""

    method: str
    search_name: str
    search_run_id: str = ""
    search_done: bool = False
    final_run_id: str = ""
    final_done: bool = False
    result: dict[str, Any] = field(default_factory=dict)  # see compare.method_result


@dataclass
class CompareState(StoreOfRequest):
    name: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    seeds: list[int]
    settings: dict[str, Any]  # SearchRequest fields every method's search shares
    spaces: dict[str, dict[str, Any]]  # method -> its SearchSpace as a dict
    steps: list[MethodStep]
    finished: bool = False

    def space(self, method: str) -> SearchSpace:
        saved = dict(self.spaces[method])
        saved["params"] = [Param(**p) for p in saved["params"]]
        return SearchSpace(**saved)

    def save(self, folder: Path) -> None:
        """Write atomically: a driver killed mid-write leaves the previous state intact."""
        tmp = folder / (COMPARE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=str))
        os.replace(tmp, folder / COMPARE_FILE)



def space_dict(space: SearchSpace) -> dict[str, Any]:
    return asdict(space)


def load_state(folder: Path) -> CompareState:
    path = folder / COMPARE_FILE
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))  # not UTF-8: a ValueError, caught
        data["steps"] = [MethodStep(**s) for s in data["steps"]]
        state = CompareState(**data)
        for method in state.spaces:
            state.space(method)
        return state
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise SkdError(f"cannot read the saved comparison state {path} ({' '.join(str(err).split())[:200]})",
                       "use the same --storage as the interrupted comparison, or start a new one") from None


def comparison_folders(storage: str, experiment: str) -> list[Path]:
    """Folders of `experiment`'s comparisons under `storage`, oldest first."""
    pattern = re.compile(re.escape(safe_name(experiment)) + r"_\d{8}-\d{6}")
    return sorted((p.parent for p in Path(storage).glob(f"*/{COMPARE_FILE}") if pattern.fullmatch(p.parent.name)),
                  key=lambda p: p.name)
