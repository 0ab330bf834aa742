"""Spread of a measured speed: Student-t confidence intervals, relative standard error, ties. Pure.

Every trial makes several timed generations (repeats) of the same config; their decode tok/s differ by
run-to-run noise. A trial's speed is the mean of its repeats with a 95% t-interval around it:

    mean +- t(0.975, n - 1) * stdev / sqrt(n)

Two configs whose intervals overlap are a tie: the data cannot tell which one is faster. scipy is not a
dependency, so the t quantiles come from a table (df 1..30, the usual printed values) and, past 30 degrees
of freedom, from the Cornish-Fisher expansion around the normal quantile (within 0.001 of the exact value).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
# Two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30.
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t_quantile(df: int) -> float:
    """t(0.975, df): the half-width of a 95% interval in standard errors. df >= 1."""
    if df < 1:
        raise ValueError(f"degrees of freedom {df!r} must be at least 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = statistics.NormalDist().inv_cdf(0.975)
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def relative_standard_error(values: Sequence[float]) -> float:
    """stdev / sqrt(n) / mean; infinite with fewer than two values or a mean <= 0."""
    if len(values) < 2:
        return math.inf
    mean = statistics.fmean(values)
    if mean <= 0:
        return math.inf
    return statistics.stdev(values) / math.sqrt(len(values)) / mean


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else None


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% confidence interval, from n values. n < 2: no spread known (low = high = mean)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def relative_half_width(self) -> float:
        return self.half_width / self.mean if self.mean > 0 else math.inf

    @property
    def known(self) -> bool:
        """Whether a spread was measured (at least two values)."""
        return self.n >= 2

    def overlaps(self, other: Interval) -> bool:
        """A tie: neither interval lies wholly above the other."""
        return self.low <= other.high and other.low <= self.high

    def above(self, other: Interval) -> bool:
        """Faster beyond noise: this interval lies wholly above the other."""
        return self.low > other.high

    def scaled(self, factor: float) -> Interval:
        return Interval(self.mean * factor, self.low * factor, self.high * factor, self.n)


def t_interval(values: Sequence[float]) -> Interval | None:
    """The 95% t-interval of the mean of `values` (finite ones only); None when there are none."""
    clean = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not clean:
        return None
    mean = statistics.fmean(clean)
    if len(clean) < 2:
        return Interval(mean, mean, mean, len(clean))
    half = t_quantile(len(clean) - 1) * statistics.stdev(clean) / math.sqrt(len(clean))
    return Interval(mean, mean - half, mean + half, len(clean))


def interval_from_summary(mean: float, cv: float | None, n: int) -> Interval:
    """The same interval from a stored summary (mean, coefficient of variation, n): for records written
    before the repeats themselves were stored."""
    if cv is None or not math.isfinite(cv) or n < 2:
        return Interval(mean, mean, mean, max(1, n))
    half = t_quantile(n - 1) * cv * mean / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)
