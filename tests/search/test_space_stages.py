"""Search-space values named by stages (`non_final_stages`, `last_non_final_stage`,
`method_default`) follow the backbone that trains: 3-, 4- and 5-stage networks load the same
files, 4-stage networks keep the Optuna names and values a literal file gives (so older
searches resume), and literal stage numbers a backbone lacks fail with one clear error."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from skd_ray.errors import ConfigError
from skd_ray.search.space.definition import SearchSpace, corner_points, load_space, subset_choices
from skd_ray.selection.comparison.method_spaces import method_space
from skd_ray.training.resolve import resolve_config

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
RECIPE = SPACES / "compare.yaml"
STAGE_KEYS = {"byot": "method.exits", "lightskd": "method.aux_stage", "teskd": "method.num_students"}

# backbone, overrides, non-final stages
BACKBONES = [
    ("resnet20", {"model.backbone": "resnet20"}, [1, 2]),
    ("resnet_small", {}, [1, 2, 3]),
    ("timm:resnet18", {"model.backbone": "timm:resnet18", "data.name": "cifar10"}, [1, 2, 3, 4]),
]
# method -> its own default for a backbone with these non-final stages
METHOD_DEFAULTS = {"byot": lambda st: st, "lightskd": lambda st: min(2, st[-1]), "teskd": lambda st: min(3, st[-1])}


def param(space: SearchSpace, key: str) -> Any:
    return next(p for p in space.params if p.key == key)


def write(tmp_path: Path, base: str, params: dict[str, Any], fixed: dict[str, Any] | None = None,
          drop_fixed: tuple[str, ...] = ()) -> Path:
    data = yaml.safe_load((SPACES / base).read_text())
    data["params"].update(params)
    data["fixed"].update(fixed or {})
    for key in drop_fixed:
        del data["fixed"][key]
    path = tmp_path / base
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("name,overrides,stages", BACKBONES, ids=[b[0] for b in BACKBONES])
@pytest.mark.parametrize("method", sorted(STAGE_KEYS))
def test_stage_values_follow_the_backbone(method: str, name: str, overrides: dict[str, Any], stages: list[int]):
    space = load_space(SPACES / f"{method}.yaml", overrides)
    p = param(space, STAGE_KEYS[method])
    if p.kind == "subset":
        assert p.choices == stages
    else:
        assert (p.low, p.high) == (1, stages[-1])
    assert p.default == METHOD_DEFAULTS[method](stages)
    cfg = resolve_config(space.defaults())
    assert getattr(cfg.method_params, p.key.partition(".")[2]) == p.default
    points = corner_points(space)
    assert any(pt[p.key] == (stages if p.kind == "subset" else stages[-1]) for pt in points)
    for flat in points:
        resolve_config(flat)


@pytest.mark.parametrize("method,literal", [
    ("byot", {"type": "subset", "choices": [1, 2, 3], "default": [1, 2, 3]}),
    ("lightskd", {"type": "int", "low": 1, "high": 3, "default": 2}),
    ("teskd", {"type": "int", "low": 1, "high": 3, "default": 3}),
])
def test_four_stage_spaces_equal_their_former_literal_form(tmp_path: Path, method: str, literal: dict[str, Any]):
    """What Optuna and the saved state see is unchanged on resnet_small: a search started from
    the literal files resumes, and its subsets still travel as '1-2-3'."""
    named = load_space(SPACES / f"{method}.yaml")
    old = load_space(write(tmp_path, f"{method}.yaml", {STAGE_KEYS[method]: literal}))
    assert [asdict(p) for p in named.params] == [asdict(p) for p in old.params]
    assert named.default_point() == old.default_point()
    if method == "byot":
        p = param(named, "method.exits")
        assert subset_choices(p.choices)[-1] == "1-2-3" and p.decode("1-3") == [1, 3]
        assert named.default_point()["method.exits"] == "1-2-3"


def test_resolved_values_are_what_a_search_saves():
    """The saved space holds numbers, not names: a resume rebuilds it without the backbone."""
    space = load_space(SPACES / "byot.yaml", {"model.backbone": "resnet20"})
    saved = asdict(space)
    assert saved["params"][0]["choices"] == [1, 2] and saved["params"][0]["default"] == [1, 2]
    assert "non_final_stages" not in repr(saved) and "method_default" not in repr(saved)


def test_overrides_are_applied_before_stages_resolve(tmp_path: Path):
    path = write(tmp_path, "byot.yaml", {}, {"model.backbone": "resnet20"})
    assert param(load_space(path), "method.exits").choices == [1, 2]
    assert param(load_space(path, {"model.backbone": "resnet_small"}), "method.exits").choices == [1, 2, 3]
    assert param(load_space(path, {"model.backbone": "timm:convnext_atto", "data.name": "cifar10"}),
                 "method.exits").choices == [1, 2, 3]


def test_a_two_stage_network_leaves_one_value(tmp_path: Path):
    """Two tapped stages: one non-final stage, so each stage value has a single choice."""
    tapped = {"model.backbone": "timm:resnet18", "model.stages": ["layer3", "layer4"], "data.name": "cifar10"}
    for method in STAGE_KEYS:
        space = load_space(SPACES / f"{method}.yaml", tapped)
        p = param(space, STAGE_KEYS[method])
        assert (p.choices if p.kind == "subset" else [p.low, p.high]) in ([1], [1, 1])
        for flat in corner_points(space):
            resolve_config(flat)


@pytest.mark.parametrize("method,literal,value", [
    ("byot", {"type": "subset", "choices": [1, 2, 3], "default": [1, 2, 3]}, "[1, 2, 3]"),
    ("byot", {"type": "subset", "choices": [1, 2, 3], "default": [1]}, "[1, 2, 3]"),
    ("teskd", {"type": "int", "low": 1, "high": 3, "default": 2}, "3"),
    ("lightskd", {"type": "categorical", "choices": [1, 2, 3], "default": 3}, "3"),
])
def test_impossible_literal_stages_name_parameter_backbone_and_fix(tmp_path: Path, method: str,
                                                                   literal: dict[str, Any], value: str):
    path = write(tmp_path, f"{method}.yaml", {STAGE_KEYS[method]: literal})
    with pytest.raises(ConfigError) as err:
        load_space(path, {"model.backbone": "resnet20"})
    problem, fix = err.value.problem, err.value.fix or ""
    assert f"parameter {STAGE_KEYS[method]}, value {value}" in problem
    assert "model.backbone resnet20 has 3 stages" in problem
    assert "non_final_stages" in fix or "last_non_final_stage" in fix
    assert "1..2" in fix or "[1, 2]" in fix


def test_a_fixed_stage_value_the_backbone_lacks_is_named():
    """`--set method.num_students=3 --backbone resnet20`: the fixed value is the one to blame."""
    with pytest.raises(ConfigError, match=r"fixed method.num_students, value 3\).*resnet20 has 3 stages"):
        load_space(SPACES / "teskd.yaml", {"model.backbone": "resnet20", "method.num_students": 3})


def test_a_searched_backbone_with_other_stage_counts_is_refused(tmp_path: Path):
    path = write(tmp_path, "byot.yaml", {"model.backbone": {"type": "categorical",
                                                             "choices": ["resnet_small", "resnet20"]}},
                 drop_fixed=("model.backbone",))
    with pytest.raises(ConfigError, match="method.exits takes its values from the backbone's stages") as err:
        load_space(path)
    assert "model.backbone" in (err.value.fix or "")
    same = write(tmp_path, "byot.yaml", {"model.backbone": {"type": "categorical",
                                                             "choices": ["resnet_small", "resnet18"]}},
                 drop_fixed=("model.backbone",))
    assert param(load_space(same), "method.exits").choices == [1, 2, 3]


def test_misspelled_stage_names_are_explained(tmp_path: Path):
    path = write(tmp_path, "byot.yaml", {"method.exits": {"type": "subset", "choices": "stages"}})
    with pytest.raises(ConfigError, match="non-empty list of choices") as err:
        load_space(path)
    assert "non_final_stages" in (err.value.fix or "")
    path = write(tmp_path, "teskd.yaml", {"method.num_students": {"type": "int", "low": 1, "high": "last_stage"}})
    with pytest.raises(ConfigError, match="numeric high") as err:
        load_space(path)
    assert "last_non_final_stage" in (err.value.fix or "")


def test_method_default_needs_a_known_method(tmp_path: Path):
    path = write(tmp_path, "byot.yaml", {"optim.lr": {"type": "float", "low": 0.01, "high": 0.2,
                                                      "default": "method_default"}})
    with pytest.raises(ConfigError, match="method.. parameters only"):
        load_space(path)


def test_cross_method_space_resolves_each_method_on_its_backbone():
    space = load_space(SPACES / "all.yaml", {"model.backbone": "resnet20", "train.epochs": 1})
    assert param(space, "method.exits").name == "byot:method.exits"
    assert param(space, "method.exits").choices == [1, 2]
    assert (param(space, "method.num_students").high, param(space, "method.num_students").default) == (2, 2)
    assert (param(space, "method.aux_stage").high, param(space, "method.aux_stage").default) == (2, 2)


@pytest.mark.parametrize("method", ["vanilla", "byot", "teskd", "lightskd"])
def test_compare_spaces_are_valid_on_resnet20(method: str):
    space = method_space(RECIPE, method, {"model.backbone": "resnet20"})
    assert space.fixed["model.backbone"] == "resnet20"
    if method in STAGE_KEYS:
        p = param(space, STAGE_KEYS[method])
        assert (p.choices if p.kind == "subset" else [int(p.low), int(p.high)]) == [1, 2]
    for flat in corner_points(space):
        resolve_config(flat)


EXAMPLES = sorted((SPACES / "examples").glob("*.yaml"))


def test_example_spaces_cover_a_wide_resnet_and_a_timm_network():
    backbones = {yaml.safe_load(p.read_text())["fixed"]["model.backbone"] for p in EXAMPLES}
    assert any(b.startswith("wrn_") for b in backbones) and any(b.startswith("timm:") for b in backbones)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_spaces_load_and_validate(path: Path):
    space = load_space(path)
    backbone = space.fixed["model.backbone"]
    stage_params = [p for p in space.params if p.key in STAGE_KEYS.values()]
    assert stage_params, "an example shows a stage-valued parameter"
    expected = {"wrn_16_2": [1, 2], "timm:mobilenetv3_small_100": [1, 2, 3, 4]}.get(backbone)
    for p in stage_params:
        values = p.choices if p.kind == "subset" else list(range(int(p.low), int(p.high) + 1))
        if expected:
            assert values == expected
    for flat in corner_points(space):
        resolve_config(flat)
