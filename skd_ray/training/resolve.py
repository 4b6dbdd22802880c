"""From flat keys to a validated config, and from a config to the data and the method it
trains: the steps that need config, data, methods and models together (so they live above all
four, and `config` imports none of them)."""

from __future__ import annotations

from typing import Any

from skd_ray.config import SECTIONS, TrainConfig, build_dataclass, split_flat, validate_core
from skd_ray.data import DataBundle, dataset_info, load_data
from skd_ray.methods import MethodContext, SelfKDMethod, build_method, get_method_spec
from skd_ray.models import backbone_num_stages, build_backbone


def resolve_config(flat: dict[str, Any]) -> TrainConfig:
    """Build and fully validate a TrainConfig from flat keys (defaults fill the rest).

    Method parameters are checked against the method's dataclass and against the backbone
    (e.g. BYOT exits must be non-final stages), so impossible configurations fail here,
    before any worker starts.
    """
    method, sections, method_values = split_flat(flat)
    spec = get_method_spec(method)
    kwargs = {name: build_dataclass(cls, sections[name], name) for name, cls in SECTIONS.items()}
    params = build_dataclass(spec.params, method_values, "method")
    cfg = TrainConfig(method=method, method_params=params, **kwargs)
    validate_core(cfg)
    dataset_info(cfg.data.name)
    num_stages = backbone_num_stages(cfg.model.backbone)
    spec.validate(params, num_stages)
    return cfg


def build_run(cfg: TrainConfig) -> tuple[DataBundle, SelfKDMethod]:
    """The data and the method (backbone, exit heads, students, per-sample stores) that `cfg`
    trains, on the CPU: the one place that builds them, for training, export and benchmarks."""
    data = load_data(cfg.data)
    backbone = build_backbone(cfg.model.backbone, cfg.model.width, data.in_channels, data.num_classes)
    method = build_method(cfg.method, backbone, cfg.method_params, MethodContext(num_train_samples=len(data.train)))
    return data, method
