"""Statistics of a method comparison: per-method test accuracy over seeds, and each method's
difference to the vanilla reference.

With S seeds (3-5 in practice) a normal approximation understates the uncertainty, so every
interval uses Student's t with the right degrees of freedom. The seeds of a comparison are
paired: every method is retrained with the same seeds s, s+1, ..., which fix the same data
order and the same validation/test split, so the difference to vanilla is computed per seed
and tested with a paired t-test (S-1 degrees of freedom). Only the t distribution's quantile
and tail come from scipy; the estimates and the tests are written out here so that they can
be checked by hand.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

CONFIDENCE = 0.95


def t_quantile(p: float, dof: int) -> float:
    """The `p` quantile of Student's t with `dof` degrees of freedom."""
    from scipy.stats import t  # scipy comes with scikit-learn; imported here to keep startup light

    return float(t.ppf(p, dof))


def t_two_sided_p(t_value: float, dof: int) -> float:
    """P(|T| >= |t_value|) for Student's t with `dof` degrees of freedom."""
    from scipy.stats import t

    return float(2.0 * t.sf(abs(t_value), dof))


@dataclass(frozen=True)
class Interval:
    """A mean with its sample std, the number of values and its two-sided t interval."""

    mean: float
    std: float  # sample standard deviation (n-1); NaN for fewer than 2 values
    n: int
    low: float  # NaN when undefined (fewer than 2 values)
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean ± t_{(1+c)/2, n-1} * s / sqrt(n); NaN bounds for fewer than 2 values."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan, math.nan)
    mean = statistics.fmean(values)
    if n < 2:
        return Interval(mean, math.nan, 1, math.nan, math.nan)
    std = statistics.stdev(values)
    half = t_quantile((1 + confidence) / 2, n - 1) * std / math.sqrt(n)
    return Interval(mean, std, n, mean - half, mean + half)


@dataclass(frozen=True)
class PairedTest:
    """A method minus the reference over the seeds both finished: the mean difference with its
    t interval, the t statistic and its two-sided p-value (paired t-test, n-1 dof)."""

    diff: Interval
    t: float
    p: float
    seeds: tuple[int, ...]


def paired_test(method: Mapping[int, float], reference: Mapping[int, float],
                confidence: float = CONFIDENCE) -> PairedTest:
    """Paired t-test of `method` against `reference` (seed -> accuracy) on their common seeds.
    Identical differences (std 0) give t = ±inf and p = 0, or t = 0 and p = 1 when all are 0."""
    seeds = tuple(sorted(set(method) & set(reference)))
    diffs = [method[s] - reference[s] for s in seeds]
    interval = t_interval(diffs, confidence)
    if interval.n < 2:
        return PairedTest(interval, math.nan, math.nan, seeds)
    if interval.std == 0:
        if interval.mean == 0:
            return PairedTest(interval, 0.0, 1.0, seeds)
        return PairedTest(interval, math.copysign(math.inf, interval.mean), 0.0, seeds)
    t_value = interval.mean / (interval.std / math.sqrt(interval.n))
    return PairedTest(interval, t_value, t_two_sided_p(t_value, interval.n - 1), seeds)
