"""Which searched parameters mattered: Optuna's fANOVA importances of a finished search.

The trials are read from MLflow (values = best validation accuracy, as on the leaderboard)
and put into an in-memory Optuna study, so importances agree with the leaderboard and need
neither the search's storage nor its Optuna database. Distributions are rebuilt from the
values seen: numbers as a float range, anything else as categories. fANOVA's random forest
splits on thresholds, so it needs no log scale and the observed range is enough.
"""

from __future__ import annotations

from typing import Any

from skd_ray.results.leaderboard import TrialRow, decode_params, varying_params


class ImportanceUnavailable(Exception):
    """Importances cannot be computed for this search; the message says why."""


# fANOVA fits a random forest to the finished trials; with fewer than this many its ranking is
# mostly noise, so no importance plot is drawn (skipped.txt says so).
MIN_TRIALS = 10
# Depth of fANOVA's trees (Optuna's default: 64). Its marginals cost about the square of a
# tree's leaves, which grow with the trials. On a real 1,000-trial search (3 parameters) it took
# 16.7 s of CPU at depth 64, 1.45 s at depth 8 and 0.51 s at depth 6 (at most 64 leaves), the
# importances equal to 0.002; on a 64-trial search equal to 0.001.
MAX_DEPTH = 6


def param_importances(rows: list[TrialRow], seed: int = 0, min_trials: int | None = None) -> dict[str, float]:
    """Normalised importance of each searched parameter (sums to 1), most important first.

    Raises ImportanceUnavailable with the reason when the search has fewer than two finished
    trials or fewer than two searched parameters that every finished trial has (a single
    parameter is trivially 100% important; conditional parameters are left out).
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    scored = [r for r in rows if r.is_scored]
    min_trials = MIN_TRIALS if min_trials is None else min_trials
    if len(scored) < max(2, min_trials):
        raise ImportanceUnavailable(f"needs at least {max(2, min_trials)} finished trials, the search has "
                                    f"{len(scored)} (with fewer, fANOVA's ranking is mostly noise)")
    values = [decode_params(r.params) for r in scored]
    names = [k for k in varying_params(scored) if all(k in v for v in values)]
    if len(names) < 2:
        which = f" ({names[0]})" if names else ""
        raise ImportanceUnavailable(f"needs at least 2 parameters that vary across every finished trial, "
                                    f"the search has {len(names)}{which}")
    distributions = {name: _distribution([v[name] for v in values]) for name in names}
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" lines in the driver's output
    try:
        study = optuna.create_study(direction="maximize")
        for row, params in zip(scored, values):
            study.add_trial(optuna.trial.create_trial(
                params={name: _encode(params[name], distributions[name]) for name in names},
                distributions=distributions, value=row.value))
        evaluator = FanovaImportanceEvaluator(seed=seed, max_depth=MAX_DEPTH)
        found = get_param_importances(study, evaluator=evaluator, params=names)
    finally:
        optuna.logging.set_verbosity(previous)
    return {name: float(value) for name, value in sorted(found.items(), key=lambda kv: -kv[1])}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _distribution(values: list[Any]) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if all(_is_number(v) for v in values):
        return FloatDistribution(float(min(values)), float(max(values)))
    return CategoricalDistribution(sorted({str(v) for v in values}))


def _encode(value: Any, distribution: Any) -> Any:
    from optuna.distributions import FloatDistribution

    return float(value) if isinstance(distribution, FloatDistribution) else str(value)
