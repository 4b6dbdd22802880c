"""The search space of each method of a comparison: one shared recipe plus the method's own
parameters.

The per-method files (search_spaces/<method>.yaml) are tuned for searching one method and
differ in what they share: vanilla.yaml also searches the weight decay, byot.yaml selects on a
larger validation part. Searching each method in its own file would give some methods more
knobs (or easier data) than others. So every comparison space is the recipe file's `fixed`
settings and searched parameters (search_spaces/compare.yaml: learning rate, weight decay,
same ranges for all), plus only the `method.*` parameters of the method's own file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skd_ray.errors import ConfigError, SkdError
from skd_ray.methods import method_names
from skd_ray.search.space.definition import SearchSpace, load_space, parse_params, read_params, validate_space

REFERENCE = "vanilla"
RECIPE_FILE = "compare.yaml"


def parse_methods(text: str) -> list[str]:
    """`--compare a,b,c` -> [vanilla, a, b, c]: known methods, each once, the reference first."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = method_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SkdError(f"--compare names an unknown method {unknown[0]!r}",
                       f"choose from {', '.join(known)}, e.g. --compare vanilla,byot,tfd")
    ordered = [REFERENCE] + [n for n in dict.fromkeys(names) if n != REFERENCE]
    if len(ordered) < 2:
        raise SkdError("--compare needs at least one method besides vanilla (the reference)",
                       "pass e.g. --compare vanilla,byot")
    return ordered


def method_space(recipe: Path, method: str, overrides: dict[str, Any]) -> SearchSpace:
    """The recipe's space with `method` fixed and the method's own `method.*` parameters
    (from `search_spaces/<method>.yaml` beside the recipe); `overrides` fix values of both.
    Values the method's file names by stages (`choices: non_final_stages`, ...) are resolved
    for the backbone the comparison trains, overrides included (`--backbone resnet20`)."""
    shared = load_space(recipe, {})
    if any(p.key == "method" or p.key.startswith("method.") for p in shared.params) or "method" in shared.fixed:
        raise ConfigError(f"{recipe}: a comparison recipe must not fix or search the method or its parameters",
                          "keep only shared settings (data, model, optim, train) in it")
    own_file = recipe.parent / f"{method}.yaml"
    raw = read_params(recipe) + read_params(own_file, method_only=True)
    fixed = {**shared.fixed, "method": method}
    for key, value in overrides.items():
        fixed[key] = value
        raw = [r for r in raw if r.key != key]
    where = f"{recipe} + {own_file.name}"
    space = SearchSpace(where, f"comparison: {method}", fixed, parse_params(where, raw, fixed),
                        shared.metric, shared.mode)
    validate_space(space)
    return space
