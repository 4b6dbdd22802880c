"""What a search records beside its Ray results (`skd_search.json`), so `--resume` can
continue it from the storage alone: its MLflow parent run and every setting it was started
with, the search space included (the space file may have changed or be gone since)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from skd_ray.errors import SkdError
from skd_ray.search.request import SearchRequest
from skd_ray.search.space import Param, SearchSpace

STATE_FILE = "skd_search.json"
NOT_SAVED = ("space", "callbacks", "resume")  # the space is saved whole; the others are per run


def write_state(exp_dir: Path, experiment_id: str, parent_run_id: str, request: dict[str, Any],
                space: SearchSpace) -> None:
    """Record a new search (`request`: the SearchRequest's fields)."""
    settings = {k: v for k, v in request.items() if k not in NOT_SAVED}
    (exp_dir / STATE_FILE).write_text(json.dumps(
        {"experiment_id": experiment_id, "parent_run_id": parent_run_id, "request": settings,
         "space": asdict(space)}, indent=2, default=str))


def read_state(exp_dir: Path) -> dict[str, Any]:
    path = exp_dir / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SkdError(f"cannot read the saved search state {path} ({err})",
                       "use the same --storage as the interrupted search") from None


def saved_request_fields(state: dict[str, Any]) -> dict[str, Any]:
    """The SearchRequest fields a search was started with, its space rebuilt."""
    if "space" not in state:
        raise SkdError("this search was saved by an older skd-ray without its settings",
                       "resume it with the skd-ray version that started it")
    space = dict(state["space"])
    space["params"] = [Param(**p) for p in space["params"]]
    fields = dict(state["request"])
    fields["objectives"] = [tuple(o) for o in fields.get("objectives", [])]
    return {**fields, "space": SearchSpace(**space)}


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def latest_search_name(storage: str, experiment: str) -> str:
    """Name of the newest search of `experiment` under `storage` (what --resume continues)."""
    prefix = safe_name(experiment) + "_"
    found = sorted(p.parent.name for p in Path(storage).glob(f"{prefix}*/{STATE_FILE}"))
    if not found:
        raise SkdError(f"no search of experiment {experiment!r} under {storage}",
                       "use the same --storage and --experiment as the interrupted search")
    return found[-1]


def saved_request(storage: str, search_name: str) -> SearchRequest:
    """The request a search was started with, to `--resume` it without repeating its flags."""
    request = SearchRequest(**saved_request_fields(read_state(Path(storage) / safe_name(search_name))))
    request.storage, request.search_name, request.resume = storage, search_name, True
    return request
