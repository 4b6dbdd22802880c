"""From flat keys to a validated config, and from a config to the data and the method it
trains: the steps that need config, data, methods and models together (so they live above all
four, and `config` imports none of them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skd_ray.config import SECTIONS, DataConfig, ModelConfig, TrainConfig, build_dataclass, split_flat, validate_core
from skd_ray.data import DataBundle, dataset_info, input_image_size, load_data
from skd_ray.errors import ConfigError, check_path_fits
from skd_ray.methods import MethodContext, SelfKDMethod, build_method, get_method_spec
from skd_ray.models import StageLayout, backbone_layout, build_backbone


def config_layout(data_cfg: DataConfig, model_cfg: ModelConfig) -> StageLayout:
    """The stage layout of the network `model_cfg` names, built for the images of `data_cfg`
    (probed once per shape and cached): what method values counted in stages are checked against."""
    info = dataset_info(data_cfg.name, data_cfg.dir)
    return backbone_layout(model_cfg.backbone, model_cfg.width, info.in_channels, max(2, info.num_classes),
                           input_image_size(data_cfg), tuple(model_cfg.stages), model_cfg.classifier)


def resolve_config(flat: dict[str, Any]) -> TrainConfig:
    """Build and fully validate a TrainConfig from flat keys (defaults fill the rest).

    Method parameters are checked against the method's dataclass and against the backbone
    (e.g. BYOT exits must be non-final stages), so impossible configurations fail here,
    before any worker starts.
    """
    method, sections, method_values = split_flat(flat)
    spec = get_method_spec(method)
    kwargs = {name: build_dataclass(cls, sections[name], name) for name, cls in SECTIONS.items()}
    m = kwargs["model"]
    layout = config_layout(kwargs["data"], m)
    # Defaults that depend on the stage count (BYOT's exits after every non-final stage, ...)
    # are written into the config, so the logged parameters say what really ran.
    method_values = {**spec.cls.stage_defaults(layout.num_stages), **method_values}
    params = build_dataclass(spec.params, method_values, "method")
    cfg = TrainConfig(method=method, method_params=params, **kwargs)
    validate_core(cfg)
    spec.validate(params, layout.num_stages)
    if m.weights:  # read in full on the worker
        weights = Path(m.weights).expanduser()
        fix = "pass a local weights file (nothing is downloaded), or leave model.weights empty"
        check_path_fits(weights, "model.weights file", fix, error=ConfigError)  # else is_file raises
        if not weights.is_file():
            raise ConfigError(f"model.weights file {m.weights} does not exist", fix)
    return cfg


def build_run(cfg: TrainConfig) -> tuple[DataBundle, SelfKDMethod]:
    """The data and the method (backbone, exit heads, students, per-sample stores) that `cfg`
    trains, on the CPU: the one place that builds them, for training, export and benchmarks."""
    data = load_data(cfg.data)
    m = cfg.model
    backbone = build_backbone(m.backbone, m.width, data.in_channels, data.num_classes,
                              image_size=input_image_size(cfg.data), stages=m.stages, classifier=m.classifier,
                              weights=m.weights)
    method = build_method(cfg.method, backbone, cfg.method_params, MethodContext(num_train_samples=len(data.train)))
    return data, method
