"""Flat-key configuration: round trip, coercion, unknown names and range checks."""

from __future__ import annotations

import pytest

from skd_ray.config import TrainConfig, coerce_value
from skd_ray.data import DataConfig, load_data
from skd_ray.errors import ConfigError
from skd_ray.methods.byot import ByotParams
from skd_ray.methods.vanilla import VanillaParams
from skd_ray.training.resolve import resolve_config


def config_error(flat: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        resolve_config(flat)
    return info.value


# --- round trip -------------------------------------------------------------------------

@pytest.mark.parametrize("flat", [
    {},
    {"method": "vanilla", "method.label_smoothing": 0.1},
    {"method": "byot", "method.exits": [1, 3], "method.attention": False, "method.kd_t_squared": True,
     "optim.lr": 0.1, "optim.name": "adamw", "sched.name": "step", "sched.milestones": [0.3, 0.6],
     "data.dir": "/tmp/x", "data.augment": True, "model.width": 8, "model.backbone": "resnet18",
     "train.amp": "bf16", "eval.thresholds": [0.5, 1.0]},
])
def test_flat_keys_round_trip(flat: dict) -> None:
    cfg = resolve_config(flat)
    again = resolve_config(cfg.to_flat())
    assert again == cfg
    assert again.to_flat() == cfg.to_flat()
    # every given key survives with its value
    for key, value in flat.items():
        assert cfg.to_flat()[key] == value


def test_defaults_are_byot_with_paper_params() -> None:
    cfg = resolve_config({})
    assert isinstance(cfg, TrainConfig)
    assert cfg.method == "byot"
    assert cfg.method_params == ByotParams()
    assert cfg.method_params.exits == [1, 2, 3]
    assert cfg.method_params.alpha == 0.3 and cfg.method_params.temperature == 3.0
    assert cfg.method_params.hint_weight == 0.03 and cfg.method_params.kd_t_squared is False
    flat = cfg.to_flat()
    assert flat["method"] == "byot" and flat["method.exits"] == [1, 2, 3]
    assert "data.val_fraction" in flat and "optim.lr" in flat


def test_vanilla_params_namespace() -> None:
    cfg = resolve_config({"method": "vanilla", "method.label_smoothing": "0.2"})
    assert cfg.method_params == VanillaParams(label_smoothing=0.2)
    assert "method.exits" not in cfg.to_flat()


# --- coercion from strings -----------------------------------------------------------------

def test_coercion_from_strings() -> None:
    cfg = resolve_config({
        "optim.lr": "0.1", "optim.nesterov": "true", "data.augment": "off", "method.exits": "1,2",
        "train.epochs": "7", "model.width": "12", "eval.thresholds": "0.9,0.95", "method.alpha": "0.5",
        "train.channels_last": "yes", "method.attention": "False", "data.dir": "/data",
    })
    assert cfg.optim.lr == 0.1 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.nesterov is True
    assert cfg.data.augment is False
    assert cfg.method_params.exits == [1, 2]
    assert all(isinstance(s, int) for s in cfg.method_params.exits)
    assert cfg.train.epochs == 7 and isinstance(cfg.train.epochs, int)
    assert cfg.model.width == 12
    assert cfg.eval.thresholds == [0.9, 0.95]
    assert cfg.method_params.alpha == 0.5
    assert cfg.train.channels_last is True
    assert cfg.method_params.attention is False
    assert cfg.data.dir == "/data"


def test_coercion_of_numbers_and_tuples() -> None:
    assert coerce_value("k", 8.0, int) == 8 and isinstance(coerce_value("k", 8.0, int), int)
    assert coerce_value("k", 3, float) == 3.0 and isinstance(coerce_value("k", 3, float), float)
    assert coerce_value("k", (1, 3), list[int]) == [1, 3]
    assert coerce_value("k", None, int | None) is None
    assert coerce_value("k", "5", int | None) == 5
    assert coerce_value("k", " 1 , 3 ", list[int]) == [1, 3]


@pytest.mark.parametrize("key,value", [
    ("optim.lr", "fast"), ("train.epochs", "2.5"), ("train.epochs", True), ("optim.nesterov", "maybe"),
    ("optim.lr", True), ("method.exits", "1,x"), ("method.exits", 3), ("data.name", 5),
    ("model.width", "wide"),
])
def test_bad_types_name_the_key(key: str, value: object) -> None:
    err = config_error({key: value})
    assert key in err.problem
    assert err.fix


def test_list_of_floats_in_scientific_notation() -> None:
    assert coerce_value("eval.thresholds", "1e-3,0.5", list[float]) == [0.001, 0.5]


# --- unknown names -------------------------------------------------------------------------

def test_unknown_key_in_section() -> None:
    err = config_error({"optim.lrr": 0.1})
    assert "optim.lrr" in err.problem
    assert "lr" in err.fix.split(": ")[1].split(", ")
    assert "momentum" in err.fix


def test_unknown_method_param() -> None:
    err = config_error({"method": "vanilla", "method.alpha": 0.3})
    assert "method.alpha" in err.problem
    assert "label_smoothing" in err.fix


def test_unknown_section() -> None:
    err = config_error({"trainer.epochs": 3})
    assert "trainer" in err.problem and "trainer.epochs" in err.problem
    for section in ("method", "data", "model", "train", "optim", "sched", "eval"):
        assert section in err.fix


def test_undotted_key() -> None:
    err = config_error({"lr": 0.1})
    assert "lr" in err.problem
    assert "optim.<field>" in err.fix


def test_unknown_method() -> None:
    err = config_error({"method": "byott"})
    assert "byott" in err.problem and "method" in err.problem
    assert "byot" in err.fix and "vanilla" in err.fix


def test_method_must_be_a_name() -> None:
    err = config_error({"method": 3})
    assert "method" in err.problem


def test_unknown_backbone() -> None:
    err = config_error({"model.backbone": "vgg16"})
    assert "vgg16" in err.problem and "backbone" in err.problem
    assert "resnet18" in err.fix and "resnet_small" in err.fix


def test_unknown_dataset_at_load() -> None:
    with pytest.raises(ConfigError) as info:
        load_data(DataConfig(name="mnist-but-not"))
    assert "mnist-but-not" in info.value.problem
    assert "digits" in info.value.fix and "cifar100" in info.value.fix


def test_unknown_dataset_rejected_by_resolve_config() -> None:
    err = config_error({"data.name": "mnist-but-not"})
    assert "mnist-but-not" in err.problem
    assert "digits" in err.fix


# --- BYOT exit placement -------------------------------------------------------------------

@pytest.mark.parametrize("backbone", ["resnet_small", "resnet18"])
@pytest.mark.parametrize("exits", [[1, 3], [1], [2], [3], [1, 2, 3], [3, 1]])
def test_byot_exits_valid(backbone: str, exits: list[int]) -> None:
    cfg = resolve_config({"method.exits": exits, "model.backbone": backbone})
    assert cfg.method_params.exits == exits


@pytest.mark.parametrize("exits", [[], [4], [0], [1, 1], [1, 4], [-1], ""])
def test_byot_exits_rejected(exits: list[int] | str) -> None:
    err = config_error({"method.exits": exits})
    assert "method.exits" in err.problem
    assert "4 stages" in err.problem
    assert "[1, 2, 3]" in err.fix


# --- range checks --------------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [
    ("data.val_fraction", 0.0), ("data.val_fraction", 1.0), ("data.val_fraction", -0.1),
    ("data.val_fraction", 1.5), ("optim.lr", 0.0), ("optim.lr", -0.1), ("train.amp", "fp8"),
    ("train.amp", "on"), ("train.epochs", 0), ("train.batch_size", 0), ("optim.weight_decay", -1e-4),
    ("optim.name", "adam"), ("sched.name", "linear"), ("sched.milestones", [0.5, 1.0]),
    ("sched.milestones", [0.0]), ("train.device", "tpu"), ("eval.thresholds", [0.0]),
    ("eval.thresholds", [0.9, 1.01]), ("model.width", 0),
    ("method.alpha", 1.5), ("method.alpha", -0.1), ("method.temperature", 0.0), ("method.hint_weight", -0.1),
])
def test_range_checks_name_the_key(key: str, value: object) -> None:
    err = config_error({key: value})
    assert key in err.problem
    assert err.fix


def test_label_smoothing_range() -> None:
    err = config_error({"method": "vanilla", "method.label_smoothing": 1.0})
    assert "method.label_smoothing" in err.problem
    resolve_config({"method": "vanilla", "method.label_smoothing": 0.0})


@pytest.mark.parametrize("key,value", [
    ("data.val_fraction", 0.5), ("eval.thresholds", [1.0]), ("method.alpha", 0.0), ("method.alpha", 1.0),
    ("method.hint_weight", 0.0), ("train.amp", "fp16"), ("optim.name", "adamw"), ("sched.name", "none"),
    ("train.device", "cuda"),
])
def test_boundary_values_accepted(key: str, value: object) -> None:
    assert resolve_config({key: value}).to_flat()[key] == value


@pytest.mark.parametrize("key,value", [("eval.batch_size", 0), ("optim.momentum", -0.5), ("data.image_size", 0)])
def test_missing_range_checks(key: str, value: object) -> None:
    err = config_error({key: value})
    assert key in err.problem
