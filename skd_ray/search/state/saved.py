"""What a search records beside its Ray results (`skd_search.json`), so `--resume` can
continue it from the storage alone: its MLflow parent run and every setting it was started
with, the search space included (the space file may have changed or be gone since)."""

from __future__ import annotations

import glob
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from skd_ray.errors import SkdError, check_path_fits, name_limits, nearest_existing
from skd_ray.search.request import SearchRequest
from skd_ray.search.space.definition import Param, SearchSpace
from skd_ray.search.state.study import StudyStorage
from skd_ray.search.state.tune_files import DamagedFile, check_tune_state, usable_backup

STATE_FILE = "skd_search.json"
NOT_SAVED = ("space", "callbacks", "resume")  # the space is saved whole; the others are per run
# Saved settings a resume reads, with the JSON types they must have.
REQUEST_TYPES: dict[str, tuple[type, ...]] = {
    "storage": (str,), "tracking_uri": (str,), "experiment": (str,), "search_name": (str,),
    "num_samples": (int,), "workers": (int,), "cpus_per_worker": (int, float), "gpus_per_worker": (int, float),
    "seed": (int,), "grace_period": (int,), "sampler": (str,), "objectives": (list,),
}
# Saved settings that searches saved before them lack, with the JSON types they may have.
OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {"optuna_storage": (str, type(None))}


def write_state(exp_dir: Path, experiment_id: str, parent_run_id: str, request: dict[str, Any],
                space: SearchSpace) -> None:
    """Record a new search (`request`: the SearchRequest's fields)."""
    settings = {k: v for k, v in request.items() if k not in NOT_SAVED}
    (exp_dir / STATE_FILE).write_text(json.dumps(
        {"experiment_id": experiment_id, "parent_run_id": parent_run_id, "request": settings,
         "space": asdict(space)}, indent=2, default=str))


def read_state(exp_dir: Path) -> dict[str, Any]:
    """The saved state of a search, its shape checked (a JSON file of the wrong shape must be
    a clear error, not a TypeError or KeyError deep inside the resume)."""
    path = exp_dir / STATE_FILE
    try:
        state = json.loads(path.read_bytes().decode("utf-8-sig"))  # an editor may have added a BOM
    except (OSError, ValueError) as err:  # UnicodeDecodeError included
        missing = isinstance(err, FileNotFoundError)
        raise SkdError(f"cannot read the saved search state {path} "
                       f"({'missing' if missing else 'damaged: ' + ' '.join(str(err).split())[:200]})",
                       "use the same --storage as the interrupted search" if missing else
                       "restore the file from a backup, or start a new search without --resume") from None
    check_state_shape(path, state)
    return state


def check_state_shape(path: Path, state: Any) -> None:
    """The fields `saved_request_fields` needs, with the types it needs."""
    def bad(why: str) -> SkdError:
        return SkdError(f"the saved search state {path} is damaged ({why}); the search was left as it was",
                        "restore the file from a backup, or start a new search without --resume")

    if not isinstance(state, dict):
        raise bad("not a JSON object")
    if "space" not in state:
        raise SkdError("this search was saved by an older skd-ray without its settings",
                       "resume it with the skd-ray version that started it")
    for key in ("experiment_id", "parent_run_id"):
        if not isinstance(state.get(key), str) or not state[key]:
            raise bad(f"{key} is not a non-empty text")
    request, space = state.get("request"), state.get("space")
    if not isinstance(request, dict) or not isinstance(space, dict):
        raise bad("request and space must be objects")
    for key, kinds in REQUEST_TYPES.items():
        if key not in request or not isinstance(request[key], kinds) or isinstance(request[key], bool) \
                and bool not in kinds:
            raise bad(f"request.{key} is missing or of the wrong type")
    for key, kinds in OPTIONAL_TYPES.items():
        if key in request and not isinstance(request[key], kinds):
            raise bad(f"request.{key} is of the wrong type")
    if not isinstance(space.get("params"), list) or not all(isinstance(p, dict) for p in space["params"]):
        raise bad("space.params is not a list of objects")
    try:
        saved_request_fields(state)
    except (TypeError, ValueError, KeyError) as err:
        raise bad(f"its space or settings do not rebuild: {err}") from None


def saved_request_fields(state: dict[str, Any]) -> dict[str, Any]:
    """The SearchRequest fields a search was started with, its space rebuilt."""
    space = dict(state["space"])
    space["params"] = [Param(**p) for p in space["params"]]
    fields = dict(state["request"])
    fields["objectives"] = [tuple(o) for o in fields.get("objectives", [])]
    fields = {**fields, "space": SearchSpace(**space)}
    SearchRequest(**fields)  # unknown or missing fields fail here, while checking
    return fields


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# A stand-in for the `%Y%m%d-%H%M%S` time a search's folder name ends with: names are sized
# before the search starts, and every such time has this many characters.
SAMPLE_STAMP = "20250101-000000"
# Bytes kept free below a search's folder for what Ray Tune writes inside it: a trial's folder
# (Tune cuts its generated part at 130 characters, then adds the trainable, trial id and date),
# a checkpoint folder, and the files in it.
INSIDE_RESERVE = 300


def check_folder_names(storage: str | Path, folders: dict[str, str], fix: str) -> None:
    """Refuse names the file system under `storage` cannot hold, before anything is created:
    `folders` maps each folder (relative to `storage`) a run will create to what it is."""
    for folder, what in folders.items():
        check_path_fits(Path(storage) / folder, what, fix, INSIDE_RESERVE)


def shorter_name_fix(storage: str | Path, folders: dict[str, str], part: str, option: str) -> str:
    """The fix for folder names too long: a shorter `option`, which sets `part` of each name,
    with the number of characters it may have under `storage` (or a shorter --storage, when
    it is the path that is too long)."""
    name_max, _ = name_limits(nearest_existing(Path(storage).resolve()))
    overhead = max(len(name) for folder in folders for name in Path(folder).parts) - len(part)
    allowed = name_max - overhead
    if allowed < 1:
        return f"pass a shorter {option} or --storage"
    return f"pass a shorter {option} (here it may have {allowed} letters, digits, '.', '_' or '-')"


def check_search_names(storage: str, experiment: str) -> None:
    """A new search's folder (`<experiment>_<time>`) and the folder of its later final
    evaluation (`final-<search>_<time>`, see `final_search_name`) must fit the file system
    under `storage`: a 500-character --experiment would otherwise pass every check, create its
    MLflow experiment, start Ray and fail there (`File name too long`), and a name just short
    enough for the search would leave a search whose --final-top cannot run."""
    search = f"{safe_name(experiment)}_{SAMPLE_STAMP}"
    folders = {search: "the search's folder",
               final_search_name(search, SAMPLE_STAMP): "the folder of its final evaluation (--final-top)"}
    check_folder_names(storage, folders, shorter_name_fix(storage, folders, safe_name(experiment), "--experiment"))


def final_search_name(search_run_name: str, stamp: str) -> str:
    """The name (and folder) of a final evaluation of the search whose MLflow run is named
    `search_run_name`, started at `stamp` (`%Y%m%d-%H%M%S`)."""
    return f"final-{search_run_name}_{stamp}"


def search_folders(storage: str, experiment: str) -> list[Path]:
    """Folders of `experiment`'s searches under `storage`, oldest first: named exactly
    `<experiment as a folder name>_<YYYYmmdd-HHMMSS>` (not by prefix: experiment `px` must not
    find `px_b`'s searches) and recorded as that experiment (`a b` and `a_b` share a folder name)."""
    pattern = re.compile(re.escape(safe_name(experiment)) + r"_\d{8}-\d{6}")
    found = []
    for state in Path(storage).glob(f"{glob.escape(safe_name(experiment))}_*/{STATE_FILE}"):
        if pattern.fullmatch(state.parent.name) and saved_experiment(state) in (experiment, None):
            found.append(state.parent)
    return sorted(found, key=lambda p: p.name)


def saved_experiment(state_file: Path) -> str | None:
    """The experiment a state file records, or None when it cannot be read (checked later)."""
    try:
        data = json.loads(state_file.read_bytes().decode("utf-8-sig"))
        return str(data["request"]["experiment"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def latest_search_name(storage: str, experiment: str) -> str:
    """Name of the newest search of `experiment` under `storage` (what --resume continues)."""
    found = search_folders(storage, experiment)
    if not found:
        raise SkdError(f"no search of experiment {experiment!r} under {storage}",
                       "use the same --storage and --experiment as the interrupted search")
    return found[-1].name


def claim_search_name(storage: str, experiment: str, taken: Callable[[str], bool] | None = None,
                      tries: int = 30) -> str:
    """A new search's name, `<experiment>_<YYYYmmdd-HHMMSS>`, with its folder under `storage`
    created by this process. A search of the same experiment started in the same second (by
    another process on this storage, or with its study in the same Optuna storage: `taken`
    says a study name is in use there) keeps that name; this one takes the next free second's."""
    for _ in range(tries):
        name = f"{experiment}_{time.strftime('%Y%m%d-%H%M%S')}"
        if taken is None or not taken(safe_name(name)):
            try:
                (Path(storage) / safe_name(name)).mkdir(parents=True)
                return name
            except FileExistsError:
                pass
        time.sleep(1.0 - time.time() % 1.0 + 0.01)  # the next second's name
    raise SkdError(f"no free name for a new search of {experiment!r} under {storage} in {tries} s",
                   "start it again, or pass another --experiment")


def check_name_unique(storage: str, experiment: str) -> None:
    """Refuse a new search whose folder name another experiment's searches already use
    (`a b` and `a_b` both become `a_b_<time>`): `--resume` could not tell them apart."""
    for state in Path(storage).glob(f"{glob.escape(safe_name(experiment))}_*/{STATE_FILE}"):
        other = saved_experiment(state)
        if re.fullmatch(re.escape(safe_name(experiment)) + r"_\d{8}-\d{6}", state.parent.name) \
                and other is not None and other != experiment:
            raise SkdError(f"experiment names {experiment!r} and {other!r} map to the same folder name "
                           f"{safe_name(experiment)!r} under {storage}",
                           "choose an --experiment name that differs in letters, digits, '.', '_' or '-'")


def saved_request(storage: str, search_name: str) -> SearchRequest:
    """The request a search was started with, to `--resume` it without repeating its flags."""
    request = SearchRequest(**saved_request_fields(read_state(Path(storage) / safe_name(search_name))))
    request.storage, request.search_name, request.resume = storage, search_name, True
    return request


@dataclass
class ResumeCheck:
    """What `check_resumable` found: the saved request, its MLflow runs, what Tune recorded of
    its trials, and a last good copy of Tune's state to put back before resuming (or None)."""

    request: SearchRequest
    experiment_id: str
    parent_run_id: str
    trial_statuses: list[str]
    backup: Path | None = None
    damaged_file: str = ""

    @property
    def finished(self) -> bool:
        """Every trial Tune recorded has ended (the search has nothing left to run)."""
        return bool(self.trial_statuses) and all(s in ("TERMINATED", "ERROR") for s in self.trial_statuses)


def check_resumable(storage: str, search_name: str, optuna_storage: str | None = None) -> ResumeCheck:
    """Check every saved piece of a search (its settings, Optuna's study, Tune's state) before
    anything is reopened; reading only, so a refused resume leaves the search as it was.
    `optuna_storage`: where the study is now, when not where the search saved it was."""
    exp_dir = Path(storage) / safe_name(search_name)
    state = read_state(exp_dir)
    request = saved_request(storage, search_name)
    if optuna_storage:
        request.optuna_storage = optuna_storage
    StudyStorage(request.optuna_storage, exp_dir).check_study(safe_name(search_name))
    try:
        return ResumeCheck(request, state["experiment_id"], state["parent_run_id"], check_tune_state(exp_dir))
    except DamagedFile as err:
        backup = usable_backup(exp_dir)
        if backup is None:
            raise
        return ResumeCheck(request, state["experiment_id"], state["parent_run_id"], check_tune_state(backup),
                           backup, err.problem)
