"""What a search records beside its Ray results (`skd_search.json`), so `--resume` can
continue it from the storage alone: its MLflow parent run and every setting it was started
with, the search space included (the space file may have changed or be gone since)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from skd_ray.errors import SkdError
from skd_ray.space import Param, SearchSpace

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
