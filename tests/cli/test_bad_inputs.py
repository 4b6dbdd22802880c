"""Bad inputs, table-driven: each ends with exit code 2 and exactly one `error:` line, no
traceback, before Ray starts, and leaves the searches already there exactly as they were.

The CLI runs in this process (`skd_ray.cli.main`), so the table costs milliseconds a row.
The existing searches are written without training: MLflow runs through
`tests/fake_search.py`, and a search folder with the files a search saves (its settings,
Optuna's study, Ray Tune's state). Each row that damages a saved search damages its own copy.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import pickle
import shutil
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from skd_ray.cli import main
from skd_ray.search.request import SearchRequest
from skd_ray.search.space.definition import load_space, load_yaml
from skd_ray.search.state.saved import STATE_FILE, write_state
from tests.helpers.fake_search import write_fake_search

REPO = Path(__file__).resolve().parents[2]
STAMP = "20250101-000000"
INTACT = "fake"  # the finished search every row must leave unchanged
DAMAGED = "px_b"  # the search each saved-state row damages (a copy of it)


def saved_search(storage: Path, uri: str, experiment: str, parent_run_id: str, experiment_id: str) -> Path:
    """A search folder as a finished 1-trial search leaves it (Tune's files are stand-ins of the
    right format: the checks read their structure, nothing unpickles them)."""
    import optuna

    folder = storage / f"{experiment}_{STAMP}"
    folder.mkdir(parents=True)
    space = load_space(REPO / "search_spaces" / "byot.yaml", {"train.epochs": 1})
    req = SearchRequest(space=space, storage=str(storage), tracking_uri=uri, experiment=experiment,
                        search_name=folder.name, num_samples=1)
    write_state(folder, experiment_id, parent_run_id, {f.name: getattr(req, f.name) for f in fields(req)}, space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name=folder.name, storage=f"sqlite:///{folder / 'optuna.db'}")
    trial = json.dumps({"trial_id": "abc", "status": "TERMINATED"})
    (folder / f"experiment_state-{STAMP}.json").write_text(
        json.dumps({"trial_data": [[trial, "{}"]], "runner_data": {}, "stats": {}}))
    for name in ("tuner.pkl", f"searcher-state-{STAMP}.pkl", f"search_gen_state-{STAMP}.json"):
        (folder / name).write_bytes(pickle.dumps({"stand-in": name}))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """Scratch inputs of every kind, an MLflow store with two finished searches and a storage
    folder holding their saved state."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("bad_inputs")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    ids = {}
    for experiment in (INTACT, DAMAGED):
        parent = write_fake_search(uri, root / "artifacts", experiment)
        ids[experiment] = (parent, MlflowClient(uri).get_experiment_by_name(experiment).experiment_id)
    storage = root / "storage"
    for experiment in (INTACT, DAMAGED):
        saved_search(storage, uri, experiment, *ids[experiment])
    write_spaces(root / "spaces")
    write_data(root / "data")
    (root / "not_a_db.db").write_text("plain text, not SQLite\n")
    MlflowClient(f"sqlite:///{root / 'other_mlflow.db'}").search_experiments()  # MLflow's tables, not Optuna's
    (root / "a_folder.db").mkdir()
    (root / "a_file").write_text("a file where a folder is expected\n")
    (root / "report_with_folder" / "report.md").mkdir(parents=True)
    (root / "export_with_folder" / "model.pt2").mkdir(parents=True)
    comparison = storage / f"cmp_{STAMP}"
    comparison.mkdir()
    (comparison / "skd_compare.json").write_bytes('{"name": "comparaison \u00e9t\u00e9"}'.encode("latin-1"))
    return {"root": root, "uri": uri, "storage": storage}


SPACES = {
    "fixed_list": {"fixed": [1, 2]},
    "methods_list": {"methods": ["byot", "vanilla"]},
    "methods_missing_file": {"methods": {"byot": "nowhere.yaml"}},
    "params_list": {"params": ["method.alpha"]},
    "param_not_mapping": {"fixed": {"method": "byot"}, "params": {"method.alpha": 0.3}},
    "unknown_type": {"fixed": {"method": "byot"}, "params": {"method.alpha": {"type": "gauss"}}},
    "step_zero": {"fixed": {"method": "byot"},
                  "params": {"method.alpha": {"type": "float", "low": 0.1, "high": 0.9, "step": 0}}},
    "step_negative": {"fixed": {"method": "byot"},
                      "params": {"method.alpha": {"type": "float", "low": 0.1, "high": 0.9, "step": -0.1}}},
    "step_with_log": {"fixed": {"method": "byot"}, "params": {
        "method.temperature": {"type": "float", "low": 1.0, "high": 8.0, "log": True, "step": 1.0}}},
    "log_text": {"fixed": {"method": "byot"},
                 "params": {"method.temperature": {"type": "float", "low": 1.0, "high": 8.0, "log": "yes"}}},
    "int_fraction_step": {"fixed": {"method": "vanilla"},
                          "params": {"train.batch_size": {"type": "int", "low": 16, "high": 64, "step": 0.5}}},
    "default_text": {"fixed": {"method": "byot"},
                     "params": {"method.alpha": {"type": "float", "low": 0.1, "high": 0.9, "default": "high"}}},
    "default_off_grid": {"fixed": {"method": "byot"}, "params": {
        "method.alpha": {"type": "float", "low": 0.1, "high": 0.9, "step": 0.2, "default": 0.2}}},
    "step_on_categorical": {"fixed": {"method": "byot"},
                            "params": {"method.attention": {"type": "categorical", "choices": [True, False],
                                                            "step": 1}}},
    "unknown_metric": {"metric": "val_accuracy", "fixed": {"method": "byot"}},
    "exit_metric_single_exit": {"metric": "val_acc.exit1", "fixed": {"method": "vanilla"}},
    "threshold_metric_unknown": {"metric": "val_acc.dynamic_t0.33", "fixed": {"method": "byot"}},
    "bad_mode": {"mode": "best", "fixed": {"method": "byot"}},
    "batch_larger_than_split": {"fixed": {"method": "vanilla", "train.batch_size": 5000}},
    "searched_batch_too_large": {"fixed": {"method": "vanilla"}, "params": {
        "train.batch_size": {"type": "int", "low": 32, "high": 4096}}},
}


# Space files written as bytes: text in other encodings, and names too long for the file system.
LATIN1_SPACE = "description: r\u00e9glage de BYOT\nfixed: {method: byot}\n".encode("latin-1")
RAW_SPACES = {
    "latin1": LATIN1_SPACE,
    "latin1_method": b"# m\xe9thode\nparams: {method.alpha: {type: float, low: 0.1, high: 0.9}}\n",
    "methods_latin1": yaml.safe_dump({"methods": {"byot": "latin1_method.yaml"}}).encode(),
    "methods_name_too_long": yaml.safe_dump({"methods": {"byot": "z" * 300 + ".yaml"}}).encode(),
    "utf16_truncated": codecs.BOM_UTF16_LE + "fixed: {method: byot}\n".encode("utf-16-le")[:-1],
}


def write_spaces(folder: Path) -> None:
    folder.mkdir()
    for name, body in SPACES.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(body))
    for name, data in RAW_SPACES.items():
        (folder / f"{name}.yaml").write_bytes(data)


def idx_bytes(ndim: int, shape: tuple[int, ...], payload: int) -> bytes:
    import struct

    return struct.pack(">HBB", 0, 8, ndim) + struct.pack(">" + "I" * ndim, *shape) + bytes(payload)


def write_fashion(folder: Path, train: int, train_labels: int, truncate: int = 0) -> None:
    folder.mkdir(parents=True)
    for prefix, n, n_labels in (("train", train, train_labels), ("t10k", 20, 20)):
        images = idx_bytes(3, (n, 28, 28), n * 784)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(images[:len(images) - truncate] if prefix == "train"
                                                             else images)
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(1, (n_labels,), n_labels))


def write_image(path: Path, good: bool) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if good:
        Image.new("RGB", (8, 8), (120, 30, 200)).save(path)
    else:
        path.write_bytes(b"\x89PNG not really an image")


def write_data(root: Path) -> None:
    (root / "empty").mkdir(parents=True)
    (root / "fashion_headers_only").mkdir()
    (root / "fashion_headers_only" / "train-images-idx3-ubyte").write_bytes(b"")
    write_fashion(root / "fashion_truncated", 100, 100, truncate=1000)
    write_fashion(root / "fashion_counts_differ", 100, 90)
    cifar = root / "cifar_garbage" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (cifar / name).write_bytes(b"garbage")
    one = root / "folder_one_class"
    write_image(one / "train" / "cat" / "a.png", True)
    write_image(one / "val" / "cat" / "a.png", True)
    broken = root / "folder_undecodable"
    write_image(broken / "train" / "cat" / "a.png", True)
    write_image(broken / "train" / "dog" / "a.png", False)
    write_image(broken / "val" / "cat" / "a.png", True)
    write_image(broken / "val" / "dog" / "a.png", True)
    differ = root / "folder_val_differs"
    for cls in ("cat", "dog"):
        write_image(differ / "train" / cls / "a.png", True)
    write_image(differ / "val" / "cat" / "a.png", True)
    write_image(differ / "val" / "cow" / "a.png", True)
    (root / "folder_no_val" / "train" / "cat").mkdir(parents=True)
    tiny = root / "folder_annotations_latin1"
    for cls in ("cat", "dog"):
        write_image(tiny / "train" / cls / "a.png", True)
    write_image(tiny / "val" / "images" / "a.png", True)
    (tiny / "val" / "val_annotations.txt").write_bytes(b"a.png\tcat\t0\t0\t8\t8\t# chat gris, \xe9t\xe9\n")


# --- saved-state damage: each takes the damaged search's folder ---------------------------

def rewrite_state(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        state = json.loads((folder / STATE_FILE).read_text())
        result = change(state)
        (folder / STATE_FILE).write_text(json.dumps(state if result is None else result))
    return damage


def write_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / name.replace("{stamp}", STAMP)).write_bytes(data)
    return damage


def truncate(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / name.replace("{stamp}", STAMP)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return damage


def remove(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / name.replace("{stamp}", STAMP)).unlink()
    return damage


def other_study(folder: Path) -> None:
    import optuna

    (folder / "optuna.db").unlink()
    optuna.create_study(study_name="someone_else", storage=f"sqlite:///{folder / 'optuna.db'}")


DAMAGES: dict[str, Callable[[Path], None]] = {
    "state_not_json": write_bytes(STATE_FILE, b"{not json"),
    "state_a_list": rewrite_state(lambda s: [1, 2, 3]),
    "state_no_request": rewrite_state(lambda s: s.pop("request") and None),
    "state_params_text": rewrite_state(lambda s: s["space"].__setitem__("params", "x")),
    "state_samples_text": rewrite_state(lambda s: s["request"].__setitem__("num_samples", "three")),
    "state_param_unknown_field": rewrite_state(lambda s: s["space"]["params"][0].__setitem__("bogus", 1)),
    "state_request_unknown_field": rewrite_state(lambda s: s["request"].__setitem__("bogus", 1)),
    "state_parent_unknown": rewrite_state(lambda s: s.__setitem__("parent_run_id", "0" * 32)),
    "state_not_utf8": write_bytes(STATE_FILE, '{"experiment_id": "r\u00e9sum\u00e9"}'.encode("latin-1")),
    "optuna_garbage": write_bytes("optuna.db", b"garbage " * 512),
    "optuna_missing": remove("optuna.db"),
    "optuna_other_study": other_study,
    "tune_state_truncated": truncate("experiment_state-{stamp}.json"),
    "tune_state_wrong_shape": write_bytes("experiment_state-{stamp}.json", b'{"trial_data": 5}'),
    "tune_state_not_utf8": write_bytes("experiment_state-{stamp}.json", b'{"trial_data": [], "note": "\xe9"}'),
    "tune_state_missing": remove("experiment_state-{stamp}.json"),
    "tuner_pickle_truncated": truncate("tuner.pkl"),
    "searcher_pickle_garbage": write_bytes("searcher-state-{stamp}.pkl", b"garbage"),
    "search_gen_missing": remove("search_gen_state-{stamp}.json"),
}

# (id, arguments with {root}/{storage}/{uri} placeholders, text the error line must contain).
D = "{root}/data"
S = "{root}/spaces"
USER = "tests.helpers.user_nets"
NEW = ["--storage", "{root}/new_storage", "--mlflow-uri", "{uri}", "--num-samples", "1"]
CASES: list[tuple[str, list[str], str]] = [
    # flags
    ("num_samples_negative", ["--num-samples", "-1"], "--num-samples -1 is out of range"),
    ("num_samples_zero", ["--num-samples", "0"], "--num-samples 0 is out of range"),
    ("max_epochs_zero", ["--max-epochs", "0"], "--max-epochs 0 is out of range"),
    ("grace_period_zero", ["--grace-period", "0"], "--grace-period 0 is out of range"),
    ("cpus_negative", ["--cpus-per-worker", "-1"], "--cpus-per-worker -1 is out of range"),
    ("cpus_zero", ["--cpus-per-worker", "0"], "--cpus-per-worker 0 is out of range"),
    ("cpus_nan", ["--cpus-per-worker", "nan"], "--cpus-per-worker nan is out of range"),
    ("gpus_negative", ["--gpus-per-worker", "-0.5"], "--gpus-per-worker -0.5 is out of range"),
    ("gpus_one_and_a_half", ["--gpus-per-worker", "1.5"], "neither a fraction of one GPU nor whole GPUs"),
    ("workers_zero", ["--workers-per-trial", "0"], "--workers-per-trial 0 is out of range"),
    ("max_concurrent_zero", ["--max-concurrent", "0"], "--max-concurrent 0 is out of range"),
    ("seed_negative", ["--seed", "-3"], "--seed -3 is out of range"),
    ("seeds_zero", ["--final-top", "2", "--seeds", "0"], "--seeds 0 is out of range"),
    ("final_top_zero", ["--final-top", "0"], "--final-top 0 is out of range"),
    ("threshold_above_one", ["--multi-objective", "--compute-threshold", "1.5"], "--compute-threshold 1.5"),
    ("debug_resume", ["--debug", "--resume"], "--debug cannot be combined with --resume"),
    ("debug_multi_objective", ["--debug", "--multi-objective"], "--debug cannot be combined with --multi-objective"),
    ("debug_address", ["--debug", "--address", "auto"], "--debug cannot be combined with --address"),
    ("resume_with_config", ["--resume", "--config", "x.yaml"], "--resume cannot be combined with --config"),
    ("resume_with_samples", ["--resume", "--num-samples", "3"], "--resume cannot be combined with --num-samples"),
    ("results_multi_objective", ["--results", "--multi-objective"], "--results cannot be combined"),
    ("multi_objective_random", ["--multi-objective", "--sampler", "random"], "always uses NSGA-II"),
    ("keep_exits_alone", ["--export-keep-exits"], "--export-keep-exits only applies to --export-best"),
    ("threshold_alone", ["--compute-threshold", "0.9"], "--compute-threshold only applies to --multi-objective"),
    ("search_alone", ["--search", "x"], "--search picks a finished search"),
    ("report_without_results", ["--report", "r"], "add --results"),
    # backbones (the default dataset is 8x8 digits)
    ("backbone_unknown", ["--backbone", "resnet50", *NEW], "unknown backbone 'resnet50'"),
    ("backbone_unknown_timm", ["--backbone", "timm:no_such_net", *NEW], "unknown timm model 'no_such_net'"),
    ("backbone_import_fails", ["--backbone", "no_such_pkg.nets:build", *NEW], "no_such_pkg.nets (from"),
    ("backbone_wrong_signature", ["--backbone", f"{USER}:wrong_signature", *NEW], "cannot be called as"),
    ("backbone_no_stages", ["--backbone", f"{USER}:torchvision_resnet18", *NEW], "does not say where its stages"),
    ("backbone_stage_missing", ["--backbone", f"{USER}:torchvision_resnet18", "--set", "model.stages=layer1,layer9",
                                *NEW], "stage 'layer9' does not exist"),
    ("backbone_no_classifier", ["--backbone", f"{USER}:no_classifier", *NEW], "no classifier found"),
    ("backbone_too_deep", ["--backbone", "timm:resnet18", *NEW], "too deep for 8x8 images"),
    ("backbone_width_on_timm", ["--backbone", "timm:convnext_atto", "--set", "model.width=8", *NEW],
     "model.width does not apply"),
    ("backbone_weights_missing", ["--set", "model.weights=/nowhere/w.pt", *NEW], "/nowhere/w.pt does not exist"),
    ("exits_beyond_three_stages", ["--backbone", "resnet20", "--set", "method.exits=[1,3]", *NEW],
     "method.exits [1, 3] is impossible for a backbone with 3 stages"),
    # search-space files
    *[(f"space_{name}", ["--config", f"{S}/{name}.yaml", *NEW], text) for name, text in (
        ("fixed_list", "fixed must be a mapping"),
        ("methods_list", "methods must be a mapping"),
        ("methods_missing_file", "nowhere.yaml does not exist"),
        ("params_list", "params must be a mapping"),
        ("param_not_mapping", "must be a mapping with a type"),
        ("unknown_type", "has type 'gauss'"),
        ("step_zero", "step must be a positive number"),
        ("step_negative", "step must be a positive number"),
        ("step_with_log", "step cannot be combined with log"),
        ("log_text", "log must be true or false"),
        ("int_fraction_step", "whole-number step"),
        ("default_text", "default 'high' is not a numeric value"),
        ("default_off_grid", "not on the grid"),
        ("step_on_categorical", "log and step apply to float and int parameters only"),
        ("unknown_metric", "metric 'val_accuracy' is not reported"),
        ("exit_metric_single_exit", "reported only by methods with early exits"),
        ("threshold_metric_unknown", "'dynamic_t0.33' is not an exit"),
        ("bad_mode", "mode must be max or min"),
        ("batch_larger_than_split", "fewer than one batch"),
        ("searched_batch_too_large", "fewer than one batch"),
    )],
    ("set_batch_too_large_for_workers", ["--set", "train.batch_size=600", "--workers-per-trial", "2", *NEW],
     "fewer than one batch"),
    # data directories
    ("fashion_empty_dir", ["--dataset", "fashion-mnist", "--data-dir", f"{D}/empty", *NEW], "IDX files not found"),
    ("fashion_empty_file", ["--dataset", "fashion-mnist", "--data-dir", f"{D}/fashion_headers_only", *NEW],
     "IDX files not found"),
    ("fashion_truncated", ["--dataset", "fashion-mnist", "--data-dir", f"{D}/fashion_truncated", *NEW],
     "is truncated or padded"),
    ("fashion_counts_differ", ["--dataset", "fashion-mnist", "--data-dir", f"{D}/fashion_counts_differ", *NEW],
     "holds 100 images but"),
    ("cifar_empty_dir", ["--dataset", "cifar10", "--data-dir", f"{D}/empty", *NEW], "data_batch_1 is missing"),
    ("cifar_no_dir", ["--dataset", "cifar100", *NEW], "cifar100 needs a data directory"),
    ("cifar_garbage", ["--dataset", "cifar10", "--data-dir", f"{D}/cifar_garbage", *NEW], "is damaged"),
    ("folder_empty", ["--dataset", "imagefolder", "--data-dir", f"{D}/empty", *NEW], "lacks train/ and val/"),
    ("folder_one_class", ["--dataset", "imagefolder", "--data-dir", f"{D}/folder_one_class", *NEW],
     "a classifier needs 2"),
    ("folder_undecodable", ["--dataset", "imagefolder", "--data-dir", f"{D}/folder_undecodable", *NEW],
     "can be decoded"),
    ("folder_val_differs", ["--dataset", "imagefolder", "--data-dir", f"{D}/folder_val_differs", *NEW],
     "val classes differ"),
    ("folder_no_images", ["--dataset", "imagefolder", "--data-dir", f"{D}/folder_no_val", *NEW],
     "lacks train/ and val/"),
    ("data_dir_missing", ["--data-dir", f"{D}/nowhere", *NEW], "does not exist"),
    # MLflow stores
    ("mlflow_in_memory", ["--mlflow-uri", "sqlite:///:memory:", "--storage", "{root}/new_storage"],
     "in-memory SQLite"),
    ("mlflow_unknown_scheme", ["--mlflow-uri", "foo://bar", "--storage", "{root}/new_storage"],
     "unknown scheme 'foo'"),
    ("mlflow_folder", ["--mlflow-uri", "sqlite:///{root}/a_folder.db", "--storage", "{root}/new_storage"],
     "is a folder"),
    ("mlflow_not_a_database", ["--mlflow-uri", "sqlite:///{root}/not_a_db.db", "--storage", "{root}/new_storage"],
     "is a file that is not an SQLite database"),
    ("mlflow_unwritable", ["--mlflow-uri", "sqlite:////proc/skd/mlflow.db", "--storage", "{root}/new_storage"],
     "is not writable"),
    ("mlflow_unreachable", ["--mlflow-uri", "http://127.0.0.1:9/", "--storage", "{root}/new_storage"],
     "cannot be reached"),
    ("mlflow_debug_not_a_database", ["--debug", "--mlflow-uri", "sqlite:///{root}/not_a_db.db"],
     "is a file that is not an SQLite database"),
    # Optuna storages (a closed port: 9, discard, has no server on loopback)
    ("optuna_unknown_scheme", ["--optuna-storage", "redis://127.0.0.1:6379", *NEW], "is not a database URL"),
    ("optuna_not_a_url", ["--optuna-storage", "{root}/optuna.db", *NEW], "is not a database URL"),
    ("optuna_in_memory", ["--optuna-storage", "sqlite:///:memory:", *NEW], "in-memory SQLite"),
    ("optuna_not_a_database", ["--optuna-storage", "sqlite:///{root}/not_a_db.db", *NEW],
     "is a file that is not an SQLite database"),
    ("optuna_folder", ["--optuna-storage", "sqlite:///{root}/a_folder.db", *NEW], "is a folder, not a file"),
    ("optuna_under_a_file", ["--optuna-storage", "sqlite:///{root}/a_file/optuna.db", *NEW],
     "a_file is a file, not a folder"),
    ("optuna_folder_missing", ["--optuna-storage", "sqlite:///{root}/nowhere/optuna.db", *NEW], "does not exist"),
    ("optuna_name_too_long", ["--optuna-storage", "sqlite:///{root}/" + "o" * 300 + ".db", *NEW],
     "-- fix: pass --optuna-storage with a shorter path"),
    ("optuna_unreachable", ["--optuna-storage", "postgresql://postgres@127.0.0.1:9/optuna", *NEW],
     "cannot be reached"),
    ("optuna_is_the_mlflow_store", ["--optuna-storage", "{uri}", *NEW], "is the MLflow store's database"),
    ("optuna_holds_mlflow_tables", ["--optuna-storage", "sqlite:///{root}/other_mlflow.db", *NEW],
     "holds another application's tables"),
    ("optuna_compare_unreachable", ["--compare", "byot", "--optuna-storage", "postgresql://postgres@127.0.0.1:9/o",
                                    *NEW], "cannot be reached"),
    ("optuna_with_debug", ["--debug", "--optuna-storage", "sqlite:///{root}/o.db"],
     "--optuna-storage cannot be combined with --debug"),
    ("optuna_with_results", ["--results", "--optuna-storage", "sqlite:///{root}/o.db"],
     "--optuna-storage cannot be combined with --results"),
    ("optuna_with_final_top", ["--final-top", "2", "--optuna-storage", "sqlite:///{root}/o.db"],
     "--optuna-storage cannot be combined with --final-top"),
    ("resume_optuna_unreachable", ["--resume", "--experiment", DAMAGED, "--storage", "{storage}", "--mlflow-uri",
                                   "{uri}", "--optuna-storage", "postgresql://postgres@127.0.0.1:9/optuna"],
     "cannot be reached"),
    ("resume_optuna_without_the_study", ["--resume", "--experiment", DAMAGED, "--storage", "{storage}",
                                         "--mlflow-uri", "{uri}", "--optuna-storage",
                                         "sqlite:///{storage}/fake_20250101-000000/optuna.db"],
     "holds no study named px_b_20250101-000000"),
    # storage and names
    ("storage_unwritable", ["--storage", "/proc/skd_results", "--mlflow-uri", "{uri}"], "cannot be created"),
    ("name_collides", ["--experiment", "px b", "--storage", "{storage}", "--mlflow-uri", "{uri}"],
     "map to the same folder name"),
    ("resume_prefix_only", ["--resume", "--experiment", "px", "--storage", "{storage}", "--mlflow-uri", "{uri}"],
     "no search of experiment 'px'"),
    ("resume_nothing", ["--resume", "--experiment", "never", "--storage", "{storage}", "--mlflow-uri", "{uri}"],
     "no search of experiment 'never'"),
    ("resume_other_mlflow", ["--resume", "--experiment", DAMAGED, "--storage", "{storage}",
                             "--mlflow-uri", "sqlite:///{root}/other.db"], "is not in"),
    # names longer than the file system allows (255 bytes a name, 4095 a path on Linux)
    ("experiment_too_long", ["--experiment", "x" * 500, *NEW], "the search's folder"),
    ("experiment_too_long_for_final", ["--experiment", "y" * 230, *NEW],
     "the folder of its final evaluation (--final-top)"),
    ("compare_experiment_too_long", ["--compare", "byot", "--experiment", "x" * 500, *NEW], "the comparison's folder"),
    ("compare_experiment_too_long_inside", ["--compare", "byot", "--experiment", "x" * 236, *NEW],
     "the folder of its vanilla search"),
    ("storage_name_too_long", ["--storage", "{root}/" + "s" * 300, "--mlflow-uri", "{uri}"],
     "has 300 bytes, more than the 255"),
    ("storage_path_too_long", ["--storage", "{root}/" + "/".join(["p" * 200] * 21), "--mlflow-uri", "{uri}"],
     "is too long: its path has"),
    ("report_name_too_long", ["--results", "--experiment", INTACT, "--mlflow-uri", "{uri}",
                              "--report", "{root}/" + "r" * 300], "-- fix: pass --report with a shorter path"),
    ("export_name_too_long", ["--export-best", "{root}/" + "e" * 300, "--experiment", INTACT, "--mlflow-uri", "{uri}"],
     "-- fix: pass --export-best with a shorter path"),
    ("data_dir_name_too_long", ["--data-dir", "{root}/" + "d" * 300, *NEW], "-- fix: pass an existing --data-dir"),
    ("set_data_dir_name_too_long", ["--dataset", "fashion-mnist", "--set", "data.dir={root}/" + "d" * 300, *NEW],
     "data directory"),
    ("config_name_too_long", ["--config", "{root}/" + "c" * 300 + ".yaml", *NEW], "search-space file"),
    ("method_name_too_long", ["--method", "m" * 300, *NEW], "unknown method 'mmm"),
    ("space_methods_name_too_long", ["--config", f"{S}/methods_name_too_long.yaml", *NEW], "has 305 bytes"),
    ("weights_name_too_long", ["--set", "model.weights={root}/" + "w" * 300 + ".pt", *NEW], "model.weights file"),
    ("mlflow_name_too_long", ["--mlflow-uri", "sqlite:///{root}/" + "m" * 300 + ".db", "--storage",
                              "{root}/new_storage"], "-- fix: pass --mlflow-uri with a shorter path"),
    ("search_name_too_long", ["--results", "--experiment", INTACT, "--search", "n" * 500, "--mlflow-uri", "{uri}"],
     "holds no search named"),
    ("resume_experiment_too_long", ["--resume", "--experiment", "x" * 500, "--storage", "{storage}",
                                    "--mlflow-uri", "{uri}"], "no search of experiment"),
    # text that is not UTF-8 (UTF-8 with a byte-order mark, and UTF-16 after its mark, are read)
    ("space_latin1", ["--config", f"{S}/latin1.yaml", *NEW], "is not UTF-8 text (byte 0xe9 at line 1, column 15)"),
    ("space_methods_file_latin1", ["--config", f"{S}/methods_latin1.yaml", *NEW],
     "latin1_method.yaml is not UTF-8 text (byte 0xe9 at line 1, column 4)"),
    ("space_utf16_truncated", ["--config", f"{S}/utf16_truncated.yaml", *NEW], "is not UTF-16 text"),
    ("compare_recipe_latin1", ["--compare", "byot", "--config", f"{S}/latin1.yaml", *NEW], "is not UTF-8 text"),
    ("argument_not_utf8", ["--experiment", "caf\udce9", *NEW], "--experiment 'caf\\xe9' is not UTF-8 text"),
    ("set_value_not_utf8", ["--set", "optim.lr=\udce9", *NEW], "--set 'optim.lr=\\xe9' is not UTF-8 text"),
    ("tiny_imagenet_labels_latin1", ["--dataset", "imagefolder", "--data-dir", f"{D}/folder_annotations_latin1",
                                     *NEW], "label file"),
    ("comparison_state_not_utf8", ["--resume", "--experiment", "cmp", "--storage", "{storage}",
                                   "--mlflow-uri", "{uri}"], "cannot read the saved comparison state"),
    # output paths that are existing files (or hold a folder where a file is written)
    ("storage_is_a_file", ["--storage", "{root}/a_file", "--mlflow-uri", "{uri}"], "is an existing file, not a folder"),
    ("storage_under_a_file", ["--storage", "{root}/a_file/results", "--mlflow-uri", "{uri}"],
     "a_file is a file, not a folder"),
    ("resume_storage_is_a_file", ["--resume", "--experiment", DAMAGED, "--storage", "{root}/a_file",
                                  "--mlflow-uri", "{uri}"], "is an existing file, not a folder"),
    ("compare_storage_is_a_file", ["--compare", "byot", "--storage", "{root}/a_file", "--mlflow-uri", "{uri}",
                                   "--num-samples", "1"], "is an existing file, not a folder"),
    ("report_is_a_file", ["--results", "--experiment", INTACT, "--mlflow-uri", "{uri}", "--report", "{root}/a_file"],
     "report directory"),
    ("report_holds_a_folder", ["--results", "--experiment", INTACT, "--mlflow-uri", "{uri}",
                               "--report", "{root}/report_with_folder"], "holds a folder named report.md"),
    ("export_is_a_file", ["--export-best", "{root}/a_file", "--experiment", INTACT, "--mlflow-uri", "{uri}"],
     "export directory"),
    ("export_under_a_file", ["--export-best", "{root}/a_file/model", "--experiment", INTACT, "--mlflow-uri", "{uri}"],
     "a_file is a file, not a folder"),
    ("export_holds_a_folder", ["--export-best", "{root}/export_with_folder", "--experiment", INTACT,
                               "--mlflow-uri", "{uri}"], "holds a folder named model.pt2"),
    ("mlflow_under_a_file", ["--mlflow-uri", "sqlite:///{root}/a_file/mlflow.db", "--storage", "{root}/new_storage"],
     "a_file is a file, not a folder"),
    ("mlflow_debug_under_a_file", ["--debug", "--mlflow-uri", "sqlite:///{root}/a_file/mlflow.db"],
     "a_file is a file, not a folder"),
    # saved state of the search being resumed
    *[(f"resume_{name}", ["--resume", "--experiment", DAMAGED, "--storage", "{storage}", "--mlflow-uri", "{uri}"],
       "damaged" if name not in ("state_parent_unknown", "tune_state_missing") else
       ("is not in" if name == "state_parent_unknown" else "holds no Ray Tune state"))
      for name in DAMAGES],
]


def snapshot(uri: str, folders: list[Path]) -> dict[str, object]:
    """Every run's status, end time and tags, and every file's bytes under `folders`."""
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    runs = {}
    for exp in c.search_experiments():
        for r in c.search_runs([exp.experiment_id], max_results=1000):
            runs[r.info.run_id] = (r.info.status, r.info.end_time, sorted(r.data.tags.items()))
    files = {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
             for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}
    return {"runs": runs, "files": files}


@pytest.mark.parametrize(("case", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_before_ray_and_changes_nothing(
        world: dict, case: str, args: list[str], expected: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)  # the default MLflow store and storage land in a scratch folder
    storage = Path(world["storage"])
    if case.startswith("resume_") and case.removeprefix("resume_") in DAMAGES:
        storage = tmp_path / "storage"
        shutil.copytree(world["storage"], storage)
        DAMAGES[case.removeprefix("resume_")](storage / f"{DAMAGED}_{STAMP}")
    values = {"root": str(world["root"]), "storage": str(storage), "uri": world["uri"]}
    argv = [a.format(**values) for a in args]
    before = snapshot(world["uri"], [storage])
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, out + err
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert " -- fix: " in lines[0]
    assert "Traceback" not in out + err
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "Ray started for an input knowable before"
    assert snapshot(world["uri"], [storage]) == before


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_space_file_with_a_byte_order_mark_is_not_a_bad_input(tmp_path: Path, encoding: str) -> None:
    """Windows editors save UTF-8 with a byte-order mark, or UTF-16 after one ("Unicode"):
    both read as the same space."""
    original = REPO / "search_spaces" / "byot.yaml"
    copy = tmp_path / "byot.yaml"
    copy.write_text(original.read_text(encoding="utf-8"), encoding=encoding)
    assert load_yaml(copy) == load_yaml(original)


def test_the_table_covers_sixty_bad_inputs() -> None:
    assert len(CASES) >= 60
