"""Final evaluation bookkeeping, free of Ray: which configurations to retrain, with which
seeds and config changes, and how their test accuracies are summarised.

A search selects on validation accuracy; its winners are then retrained from scratch on
train + validation with several seeds and judged on the test split, so the reported number
is neither selected on nor a single lucky seed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from skd_ray.errors import SkdError
from skd_ray.results.leaderboard import TrialRow, decode_params, format_table, selectable, varying_params

# How a chosen configuration is retrained: on train + validation, scored on test at the end.
FINAL_OVERRIDES: dict[str, Any] = {"data.train_on_validation": True, "eval.test_at_end": True}


def config_identity(row: TrialRow) -> tuple[tuple[str, str], ...]:
    """A trial's configuration without its seed: trials that sampled the same values are one
    configuration (the final evaluation varies the seed itself)."""
    return tuple(sorted((k, v) for k, v in row.params.items() if k != "train.seed"))


def select_top_configs(rows: list[TrialRow], k: int) -> list[TrialRow]:
    """The `k` best distinct configurations by best validation accuracy (the trial that
    reached the higher accuracy represents a repeated configuration)."""
    if k < 1:
        raise SkdError(f"--final-top must be >= 1, got {k}", "pass e.g. --final-top 3")
    candidates = selectable(rows)
    chosen: list[TrialRow] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for row in candidates:
        identity = config_identity(row)
        if identity not in seen:
            seen.add(identity)
            chosen.append(row)
        if len(chosen) == k:
            break
    if not chosen:
        raise SkdError("the search has no finished trial with a validation accuracy",
                       "let a search finish (or --resume it) before evaluating it")
    return chosen


def final_seeds(count: int, base: int | None) -> list[int]:
    """Seeds `base, base+1, ...` (0, 1, ... without --seed): distinct and reproducible."""
    if count < 1:
        raise SkdError(f"--seeds must be >= 1, got {count}", "pass e.g. --seeds 3")
    start = base or 0
    return list(range(start, start + count))


def final_config(params: dict[str, str]) -> dict[str, Any]:
    """The flat config to retrain from a trial's MLflow params (seed set per run later)."""
    flat = decode_params(params)
    flat.pop("train.seed", None)
    flat.update(FINAL_OVERRIDES)
    return flat


def shared_items(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """The key/value pairs every config has in common (what the final runs hold fixed)."""
    if not configs:
        return {}
    first = configs[0]
    return {k: v for k, v in first.items() if all(k in c and c[k] == v for c in configs[1:])}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n-1); NaN where undefined (no value; one value)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


@dataclass
class ConfigSummary:
    """Test accuracy of one retrained configuration over its seeds."""

    rank: int  # 1 = best validation accuracy in the search
    source: TrialRow
    seeds: int  # runs started (one per seed)
    test_acc: dict[int, float] = field(default_factory=dict)  # seed -> test accuracy (finished runs)

    @property
    def mean(self) -> float:
        return mean_std(list(self.test_acc.values()))[0]

    @property
    def std(self) -> float:
        return mean_std(list(self.test_acc.values()))[1]

    def as_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "source_trial": self.source.name, "source_run_id": self.source.run_id,
                "search_val_acc": self.source.best_val_acc, "seeds": self.seeds,
                "finished": len(self.test_acc), "test_acc": {str(s): a for s, a in sorted(self.test_acc.items())},
                "test_acc_mean": _json_float(self.mean), "test_acc_std": _json_float(self.std),
                "params": decode_params(self.source.params)}


def summarize(chosen: list[TrialRow], seeds: list[int],
              results: list[tuple[int, int, float | None]]) -> list[ConfigSummary]:
    """Group `(rank, seed, test accuracy or None for a failed run)` by configuration rank."""
    summaries = [ConfigSummary(rank, row, len(seeds)) for rank, row in enumerate(chosen, 1)]
    for rank, seed, acc in results:
        if acc is not None and math.isfinite(acc) and 1 <= rank <= len(summaries):
            summaries[rank - 1].test_acc[seed] = acc
    return summaries


def format_final_table(summaries: list[ConfigSummary], max_params: int = 6) -> str:
    """Fixed-width table: rank, source trial, its validation accuracy, finished runs,
    test accuracy mean ± std, and the parameters that differ between the configurations."""
    params = varying_params([s.source for s in summaries])[:max_params]
    header = ["rank", "source trial", "search val_acc", "runs", "test acc (mean ± std)"] + \
        [p.removeprefix("method.") for p in params]
    table = [header]
    for s in summaries:
        table.append([str(s.rank), s.source.name, f"{s.source.best_val_acc:.4f}", f"{len(s.test_acc)}/{s.seeds}",
                      _pm(s.mean, s.std)] + [param_cell(s.source.params.get(p, "-")) for p in params])
    return format_table(table)


def param_cell(text: str) -> str:
    """A logged param for a table cell: floats to 4 significant digits, the rest cut to 16."""
    try:
        return f"{float(text):.4g}" if any(c in text for c in ".e") else text
    except ValueError:
        return text[:16]


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if not math.isnan(std) else f"{mean:.4f} (1 run)"


def _json_float(v: float) -> float | None:
    return None if math.isnan(v) else v
