"""Search-space files: YAML -> validated parameters -> an Optuna define-by-run space.

Format (see search_spaces/*.yaml and docs/search-spaces.md):

    description: "..."
    metric: val_acc            # optional; mode: max
    fixed: {method: byot, data.name: digits, train.epochs: 15}
    params:
      method.alpha: {type: float, low: 0.1, high: 0.9, default: 0.3}
      method.attention: {type: categorical, choices: [true, false], default: true}
      method.exits: {type: subset, choices: non_final_stages, default: all}
      method.aux_stage: {type: int, low: 1, high: last_non_final_stage, default: method_default}
      method.l_intra: {type: float, low: 1e-4, high: 1e-3, log: true, when: {method.intra: true}}
    methods: {byot: byot.yaml, vanilla: vanilla.yaml}   # cross-method spaces only

Types: `float` and `int` (`low`, `high`, optional `log` or `step`), `categorical` (`choices`),
`subset` (any non-empty subset of `choices`; `default: all`, or no default, is every choice).
`when:` samples a parameter only while the listed values hold.

Values counted in backbone stages (BYOT's exits, LightSKD's auxiliary stage, TESKD's students)
differ between 3-, 4- and 5-stage networks, so they are written by meaning: `choices:
non_final_stages` (the stages 1..S-1 of the space's backbone), `low:`/`high:`/`default:
last_non_final_stage` (S-1) and `default: method_default` (what the method itself uses on that
backbone). They are resolved once the space's fixed values are final (after `--backbone`,
`--dataset` and `--set`), by probing that backbone; see `skd_ray.search.space.stages`. Literal
stage numbers still work, and fail before any trial, naming the backbone and its stage count,
where that backbone lacks them.

`methods:` pulls each listed method's `method.*` parameters from its own file, scoped so they
are only sampled when that method is chosen (TPE then models each method's parameters
separately). Every problem in a file is reported before any trial starts.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skd_ray.errors import ConfigError, check_path_fits, read_text_file
from skd_ray.methods import get_method_spec
from skd_ray.search.space.stages import (
    LAST_NON_FINAL_STAGE,
    NON_FINAL_STAGES,
    Stages,
    resolve_stage_spec,
    space_stages,
    stage_parameter,
    stage_spelling,
    uses_stages,
)
from skd_ray.training.metrics import VAL_ACC
from skd_ray.training.objective import MODES, Objective
from skd_ray.training.resolve import resolve_config

TYPES = ("float", "int", "categorical", "subset")
TOP_LEVEL = {"description", "metric", "mode", "fixed", "params", "methods"}
PARAM_FIELDS = {"type", "low", "high", "log", "step", "choices", "default", "when"}


@dataclass
class Param:
    """One searched parameter: config key, Optuna name, distribution, default, condition."""

    key: str
    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)
    default: Any = None
    when: dict[str, list[Any]] = field(default_factory=dict)

    def active(self, values: dict[str, Any]) -> bool:
        """True when every `when` condition holds for the values chosen so far."""
        return all(values.get(k) in allowed for k, allowed in self.when.items())

    def suggest(self, trial: Any) -> Any:
        """Sample this parameter from an Optuna trial (define-by-run)."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        return trial.suggest_categorical(self.name, subset_choices(self.choices))

    def decode(self, value: Any) -> Any:
        """Optuna value -> config value (subsets travel as strings like '1-3')."""
        if self.kind == "subset" and isinstance(value, str):
            return [type(self.choices[0])(v) for v in value.split("-")]
        return value

    def extremes(self) -> list[Any]:
        """Values that must all be valid configs: range ends, every choice, the full subset."""
        if self.kind in ("float", "int"):
            return [self.low, self.high]
        if self.kind == "categorical":
            return list(self.choices)
        return [list(self.choices)]


def subset_choices(items: list[Any]) -> list[str]:
    """Every non-empty subset of `items`, encoded '1-2-3' (Optuna needs hashable choices)."""
    return ["-".join(str(v) for v in combo)
            for r in range(1, len(items) + 1) for combo in itertools.combinations(items, r)]


@dataclass
class SearchSpace:
    """A parsed search-space file."""

    path: str
    description: str
    fixed: dict[str, Any]
    params: list[Param]
    metric: str = VAL_ACC
    mode: str = "max"

    def __post_init__(self) -> None:
        """Every trial carries the objective in its config (`eval.objective`, see
        `skd_ray.training.objective`): its engine keeps the best epoch by it."""
        if self.mode not in MODES:
            raise ConfigError(f"{self.path}: mode must be max or min", "use mode: max")
        objective = Objective(self.metric, self.mode)
        for key, value in objective.config().items():
            if self.fixed.get(key, value) != value:
                raise ConfigError(f"{self.path}: fixed {key}={self.fixed[key]!r} contradicts the space's "
                                  f"metric: {self.metric} / mode: {self.mode}",
                                  "name the objective with metric: and mode: only, not under fixed:")
        self.fixed = {**self.fixed, **objective.config()}

    @property
    def objective(self) -> Objective:
        """What the space's trials are ranked by (one owner: `skd_ray.training.objective`)."""
        return Objective(self.metric, self.mode)

    def define_by_run(self, trial: Any) -> dict[str, Any]:
        """Optuna define-by-run function: samples active params, returns the fixed values."""
        values = dict(self.fixed)
        for p in self.params:
            if p.active(values):
                values[p.key] = p.decode(p.suggest(trial))
        return dict(self.fixed)

    def to_flat(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Trial config (Optuna names + fixed values) -> flat config keys."""
        by_name = {p.name: p for p in self.params}
        flat = {}
        for name, value in sampled.items():
            if name in by_name:
                flat[by_name[name].key] = by_name[name].decode(value)
            else:
                flat[name] = value
        return flat

    def defaults(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The flat config of the space's defaults (the debugging mode's single config)."""
        values = dict(self.fixed)
        values.update(overrides or {})
        for p in self.params:
            if p.key not in values and p.active(values):
                values[p.key] = p.default
        return values

    def default_point(self) -> dict[str, Any]:
        """The defaults as Optuna names, to enqueue as the first trial (paper settings)."""
        values = dict(self.fixed)
        point = {}
        for p in self.params:
            if p.active(values):
                values[p.key] = p.default
                point[p.name] = encode(p, p.default)
        return point

    def constants(self) -> dict[str, Any]:
        """The flat config values every trial of this space shares: the resolved defaults
        without the searched keys (and, where the method itself is searched, without any
        `method.*` key: those exist for one method only). Logged once on the search's run."""
        flat = resolve_config(self.defaults()).to_flat()
        searched = {p.key for p in self.params}
        method_searched = "method" in searched
        return {k: v for k, v in flat.items()
                if k not in searched and not (method_searched and k.startswith("method."))}

    def methods(self) -> list[str]:
        """Methods this space can produce."""
        for p in self.params:
            if p.key == "method":
                return list(p.choices)
        return [self.fixed.get("method", "byot")]


def encode(p: Param, value: Any) -> Any:
    if p.kind == "subset":
        return "-".join(str(v) for v in value)
    return value


@dataclass(frozen=True)
class RawParam:
    """A parameter as its file writes it: kept until the space's fixed values are final,
    because values named by stages (`non_final_stages`, ...) depend on the backbone."""

    path: str
    key: str
    spec: Any
    scope: str | None = None


def read_params(path: str | Path, label: str | None = None, scope: str | None = None,
                method_only: bool = False) -> list[RawParam]:
    """The `params:` of space file `path`, named `label` in errors (default: the path); `scope`
    is the method a cross-method space samples them under, `method_only` keeps the `method.*`
    keys (the ones a method's file lends to a cross-method space or a comparison)."""
    label = label or str(path)
    params = load_yaml(path).get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{label}: params must be a mapping", "see search_spaces/byot.yaml")
    return [RawParam(label, key, spec, scope) for key, spec in params.items()
            if not method_only or str(key).startswith("method.")]


def parse_params(where: str, raw: list[RawParam], fixed: dict[str, Any]) -> list[Param]:
    """Parse `raw` (in order) for a space whose fixed values are `fixed`, overrides applied:
    values named by stages become the stage numbers of the backbone those values train."""
    parsed = {i: _parse_param(r.path, r.key, r.spec, r.scope) for i, r in enumerate(raw) if not uses_stages(r.spec)}
    named = [i for i, r in enumerate(raw) if uses_stages(r.spec)]
    if named:
        stages = space_stages(where, fixed, list(parsed.values()), raw[named[0]].key)
        for i in named:
            parsed[i] = _parse_stage_param(raw[i], stages, fixed)
    return [parsed[i] for i in range(len(raw))]


def _parse_stage_param(r: RawParam, stages: Stages, fixed: dict[str, Any]) -> Param:
    spec = resolve_stage_spec(f"{r.path}: parameter {r.key}", r.key, r.spec, stages, r.scope or fixed.get("method"))
    try:
        # a 2-stage network leaves one non-final stage: a range of one value is then legitimate
        return _parse_param(r.path, r.key, spec, r.scope, single_value=True)
    except ConfigError as err:
        raise ConfigError(f"{err.problem}, as {stages.describe()}", err.fix) from None


def _parse_param(path: str, key: str, spec: Any, scope: str | None, single_value: bool = False) -> Param:
    where = f"{path}: parameter {key}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping with a type", "write e.g. {type: float, low: 0.1, high: 1}")
    unknown = set(spec) - PARAM_FIELDS
    if unknown:
        raise ConfigError(f"{where} has unknown field {sorted(unknown)[0]!r}",
                          f"allowed fields: {', '.join(sorted(PARAM_FIELDS))}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{where} has type {kind!r}", f"use one of: {', '.join(TYPES)}")
    when = spec.get("when") or {}
    if not isinstance(when, dict):
        raise ConfigError(f"{where}: when must be a mapping", "write e.g. when: {method.intra: true}")
    when = {k: v if isinstance(v, list) else [v] for k, v in when.items()}
    name = f"{scope}:{key}" if scope else key
    if scope:
        when = {"method": [scope], **when}
    check_numeric_fields(where, kind, spec)
    p = Param(key=key, name=name, kind=kind, when=when, default=spec.get("default"),
              log=bool(spec.get("log", False)), step=spec.get("step"))
    if kind in ("float", "int"):
        low, high = spec.get("low"), spec.get("high")
        for bound, label in ((low, "low"), (high, "high")):
            if not isinstance(bound, (int, float)) or isinstance(bound, bool):
                raise ConfigError(f"{where} needs a numeric {label}, got {bound!r}",
                                  f"add {label}: <number>, or {label}: {LAST_NON_FINAL_STAGE} for the backbone's "
                                  "last non-final stage")
        if kind == "int" and (int(low) != low or int(high) != high):
            raise ConfigError(f"{where} is int but its bounds are not whole numbers", "use whole-number bounds")
        if not (low < high or single_value and low == high):
            raise ConfigError(f"{where} has an empty range [{low}, {high}]",
                              "make low < high, or move it to fixed: if it is a constant")
        if p.log and low <= 0:
            raise ConfigError(f"{where} is log-scaled but low={low} <= 0", "use a positive low or log: false")
        p.low, p.high = float(low), float(high)
        if p.default is None:
            p.default = low if kind == "float" else int(low)
        if not isinstance(p.default, (int, float)) or isinstance(p.default, bool) \
                or (kind == "int" and int(p.default) != p.default):
            raise ConfigError(f"{where} default {p.default!r} is not a{'' if kind == 'int' else ' numeric'} "
                              f"{'whole number' if kind == 'int' else 'value'}", f"write default: {low}")
        if not (p.low <= p.default <= p.high):
            raise ConfigError(f"{where} default {p.default} lies outside [{low}, {high}]",
                              "move the default into the range")
    else:
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where} needs a non-empty list of choices, got {choices!r}",
                              f"add choices: [a, b], or choices: {NON_FINAL_STAGES} for the backbone's non-final "
                              "stages")
        p.choices = choices
        if kind == "subset":
            if len(set(map(str, choices))) != len(choices):
                raise ConfigError(f"{where} has repeated choices", "list each item once")
            p.default = list(choices) if p.default is None or p.default == "all" else p.default
            if not isinstance(p.default, list) or not p.default or any(v not in choices for v in p.default):
                raise ConfigError(f"{where} default {p.default!r} is not a non-empty subset of {choices}",
                                  "choose the default from the choices")
        else:
            p.default = choices[0] if p.default is None else p.default
            if p.default not in choices:
                raise ConfigError(f"{where} default {p.default!r} is not among {choices}",
                                  "choose the default from the choices")
    check_distribution(where, p)
    return p


def check_numeric_fields(where: str, kind: str, spec: dict[str, Any]) -> None:
    """`log` is a boolean and `step` a positive number, not combined with `log` (Optuna's
    rules, checked here so they fail before Ray starts); only numeric types take them."""
    log, step = spec.get("log", False), spec.get("step")
    if kind not in ("float", "int") and ("log" in spec or "step" in spec):
        raise ConfigError(f"{where}: log and step apply to float and int parameters only",
                          "drop them, or make the parameter numeric")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}", "write log: true")
    if step is None:
        return
    if not isinstance(step, (int, float)) or isinstance(step, bool) or not step > 0:
        raise ConfigError(f"{where}: step must be a positive number, got {step!r}", "write e.g. step: 0.1")
    if log:
        raise ConfigError(f"{where}: step cannot be combined with log: true (Optuna samples one or the other)",
                          "drop step, or set log: false")
    if kind == "int" and int(step) != step:
        raise ConfigError(f"{where}: an int parameter needs a whole-number step, got {step}", "write e.g. step: 2")


def check_distribution(where: str, p: Param) -> None:
    """Build the Optuna distribution `Param.suggest` will sample, with the same arguments, so
    that whatever Optuna refuses is refused now, and check the default is a legal value of it."""
    import optuna  # only here: the debugging mode and the core need no Optuna

    try:
        if p.kind == "float":
            optuna.distributions.FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        elif p.kind == "int":
            optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        elif p.kind == "categorical":
            optuna.distributions.CategoricalDistribution(p.choices)
        else:
            optuna.distributions.CategoricalDistribution(subset_choices(p.choices))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where} is not a distribution Optuna accepts ({err})",
                          "fix low/high/step/log or the choices") from None
    if p.step and p.low is not None and abs((p.default - p.low) / p.step - round((p.default - p.low) / p.step)) > 1e-8:
        raise ConfigError(f"{where} default {p.default} is not on the grid low + k * step",
                          "move the default onto the grid, or drop step")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning a name the file system cannot hold, text that is not
    UTF-8 (a BOM is fine) and syntax errors into one clear error each."""
    p = Path(path)
    check_path_fits(p, "search-space file", "pass a file from search_spaces/")  # `methods:` entries too
    if not p.is_file():
        raise ConfigError(f"search-space file {path} does not exist", "pass a file from search_spaces/")
    try:
        data = yaml.safe_load(read_text_file(p, "search-space file"))
    except OSError as err:
        raise ConfigError(f"search-space file {path} cannot be read ({err.strerror})",
                          "make it readable, or pass another file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"search-space file {path} is not valid YAML{line}",
                          "fix the syntax (indentation, colons, brackets)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"search-space file {path} must be a YAML mapping", "see search_spaces/byot.yaml")
    return data


def load_space(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Parse and validate a search-space file; `overrides` replace or add fixed values."""
    data = load_yaml(path)
    unknown = set(data) - TOP_LEVEL
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {sorted(unknown)[0]!r}",
                          f"allowed: {', '.join(sorted(TOP_LEVEL))}")
    fixed_in, params_in, methods = data.get("fixed") or {}, data.get("params") or {}, data.get("methods") or {}
    for label, value in (("fixed", fixed_in), ("params", params_in), ("methods", methods)):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {label} must be a mapping, got {type(value).__name__}",
                              "see search_spaces/byot.yaml and search_spaces/all.yaml")
    fixed = dict(fixed_in)
    raw = [RawParam(str(path), k, v) for k, v in params_in.items()]
    for method, file in methods.items():
        if not isinstance(method, str) or not isinstance(file, str):
            raise ConfigError(f"{path}: methods must map method names to space files, got {method!r}: {file!r}",
                              "write e.g. methods: {byot: byot.yaml}")
    if methods:
        if not any(r.key == "method" for r in raw):
            raw.insert(0, RawParam(str(path), "method", {"type": "categorical", "choices": list(methods),
                                                         "default": list(methods)[0]}))
        for method, file in methods.items():
            if file:
                raw += read_params(Path(path).parent / file, file, method, method_only=True)
    # Overrides first: values named by stages are resolved for the backbone that really trains.
    for key, value in (overrides or {}).items():
        fixed[key] = value
        raw = [r for r in raw if r.key != key]
    space = SearchSpace(str(path), str(data.get("description", "")), fixed, parse_params(str(path), raw, fixed),
                        str(data.get("metric", VAL_ACC)), str(data.get("mode", "max")))
    validate_space(space)
    return space


def validate_space(space: SearchSpace) -> None:
    """Resolve the default config of every method, and each range end / choice against it,
    so wrong keys, types, impossible exit placements and out-of-range bounds fail now."""
    known = set(space.fixed) | {p.key for p in space.params}
    for p in space.params:
        for cond in p.when:
            if cond not in known:
                raise ConfigError(f"{space.path}: parameter {p.key} depends on {cond}, which is "
                                  "neither fixed nor searched", "fix the key in when:")
    for flat, p in corners(space):
        _resolve(space, flat, p)
    check_metric(space)


def corners(space: SearchSpace) -> list[tuple[dict[str, Any], Param | None]]:
    """Each method's default config, and that config with one parameter at one range end or
    choice (with the parameter, None for the defaults): the configs every check must pass."""
    out: list[tuple[dict[str, Any], Param | None]] = []
    for method in space.methods():
        base = space.defaults({"method": method} if any(p.key == "method" for p in space.params) else None)
        out.append((base, None))
        for p in space.params:
            if not p.active(base) or p.key == "method":
                continue
            out.extend(({**base, p.key: value}, p) for value in p.extremes())
    return out


def corner_points(space: SearchSpace) -> list[dict[str, Any]]:
    """The flat configs of `corners` (checked by `validate_space` already, so they resolve)."""
    return [flat for flat, _ in corners(space)]


# The objective metrics every method reports each epoch, and the per-answer ones only methods
# with early exits report (`<prefix>.<answer>`; see skd_ray.training.early_exit).
PLAIN_METRICS = ("val_acc", "val_loss", "train_loss", "best_val_acc")
ANSWER_PREFIXES = ("val_acc", "best_val_acc", "val_compute")


def check_metric(space: SearchSpace) -> None:
    """The space's `metric:` must be one every method of the space reports each epoch; ASHA,
    Optuna and checkpoint ranking would otherwise fail (or wait) on a key that never comes."""
    metric = space.metric
    if metric in PLAIN_METRICS:
        return
    prefix, _, answer = metric.partition(".")
    fix = f"use one of {', '.join(PLAIN_METRICS)}, or val_acc.<exit1|ensemble|dynamic_t0.95> for a multi-exit method"
    if prefix not in ANSWER_PREFIXES or not answer:
        raise ConfigError(f"{space.path}: metric {metric!r} is not reported by any run", fix)
    for method in space.methods():
        if not get_method_spec(method).cls.multi_exit:
            raise ConfigError(f"{space.path}: metric {metric!r} is reported only by methods with early exits, "
                              f"and {method} has none", fix)
        cfg = resolve_config(space.defaults({"method": method} if len(space.methods()) > 1 else None))
        answers = {"ensemble", *(f"dynamic_t{t:g}" for t in cfg.eval.thresholds)}
        if answer not in answers and not re.fullmatch(r"exit[1-9]\d*", answer):
            raise ConfigError(f"{space.path}: metric {metric!r} is not reported: {answer!r} is not an exit, "
                              f"the ensemble or a threshold of eval.thresholds {cfg.eval.thresholds}", fix)


def _resolve(space: SearchSpace, flat: dict[str, Any], p: Param | None) -> None:
    """Resolve one corner; a failure names the parameter (for the defaults, the one whose value
    is to blame) and, for a value counted in stages, the backbone, its stages and the spelling
    that follows them."""
    try:
        resolve_config(flat)
    except ConfigError as err:
        key = p.key if p else _culprit(space, flat)
        searched = {q.key: q for q in space.params}
        where = f" ({'parameter' if key in searched else 'fixed'} {key}, value {flat[key]!r})" if key else ""
        problem, fix = err.problem, err.fix
        stages = stage_parameter(flat, key)
        if stages is not None:
            problem = f"{problem}; {stages.describe()}"
            if key in searched:
                fix = (f"{fix}; or let the space follow the backbone: {{type: {searched[key].kind}, "
                       f"{stage_spelling(searched[key].kind)}}}")
        raise ConfigError(f"{space.path}{where}: {problem}", fix) from None


def _culprit(space: SearchSpace, flat: dict[str, Any]) -> str | None:
    """The `method.*` key (searched or fixed) whose value alone keeps `flat` from resolving:
    without it, the method's own default for the backbone applies and the config resolves."""
    keys = [p.key for p in space.params if p.key in flat] + list(space.fixed)
    for key in dict.fromkeys(k for k in keys if k.startswith("method.")):
        try:
            resolve_config({k: v for k, v in flat.items() if k != key})
        except ConfigError:
            continue
        return key
    return None
