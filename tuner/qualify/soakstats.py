"""What a soak's series say, as pure functions over plain numbers (unit-tested on synthetic series):
the decode trend and whether it is drift, clock collapses at normal temperature, throttle time from the
violation counters, energy per token from the energy counter.

Drift: a robust (Theil-Sen) slope of decode tok/s over time, on the post-heat-soak samples binned in time
(so a night of samples stays cheap and one stalled generation does not move it), in % of the median per
hour. It is flagged when it is beyond the plan's tolerance (drift_pct_per_h, the slow settling a warm GPU
still shows after the heat soak), beyond noise (4 standard errors of the slope, from the residuals' MAD), and
when the change it makes over the soak is at least MIN_CHANGE_PCT (a slope per hour from a few seconds of
soak extrapolates a wobble no one would call drift).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_BINS = 60
MIN_CHANGE_PCT = 1.0  # the trend must move decode speed at least this much over the soak itself
NOISE_SE = 4.0  # standard errors of the slope that count as noise
MIN_SAMPLES = 12  # fewer post-heat-soak samples give no trend: a few generations cannot tell drift from noise


@dataclass(frozen=True)
class Trend:
    slope_per_h: float  # tok/s per hour
    pct_per_h: float  # slope in % of the median per hour
    noise_pct_per_h: float  # NOISE_SE standard errors of the slope, in % of the median per hour
    median: float
    samples: int
    drift: bool  # beyond the tolerance and beyond noise


def _bins(times: Sequence[float], values: Sequence[float], max_bins: int) -> tuple[list[float], list[float]]:
    """Median time and value of up to max_bins equal-count bins (order by time)."""
    pairs = sorted(zip(times, values, strict=True))
    n = len(pairs)
    if n <= max_bins:
        return [p[0] for p in pairs], [p[1] for p in pairs]
    xs: list[float] = []
    ys: list[float] = []
    for b in range(max_bins):
        chunk = pairs[b * n // max_bins : (b + 1) * n // max_bins]
        if chunk:
            xs.append(statistics.median(p[0] for p in chunk))
            ys.append(statistics.median(p[1] for p in chunk))
    return xs, ys


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(slope, intercept): the median of the pairwise slopes, the median of the residual intercepts."""
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] != xs[i]
    ]
    if not slopes:
        return 0.0, statistics.median(ys) if ys else 0.0
    slope = statistics.median(slopes)
    return slope, statistics.median(y - slope * x for x, y in zip(xs, ys, strict=True))


def trend(
    times_s: Sequence[float],
    decode_tok_s: Sequence[float],
    tolerance_pct_per_h: float,
    max_bins: int = MAX_BINS,
) -> Trend | None:
    """The decode trend of a soak (post-heat-soak samples); None with fewer than MIN_SAMPLES usable ones."""
    pairs = [
        (t, v) for t, v in zip(times_s, decode_tok_s, strict=True) if math.isfinite(v) and math.isfinite(t)
    ]
    if len(pairs) < MIN_SAMPLES:
        return None
    xs, ys = _bins([p[0] / 3600.0 for p in pairs], [p[1] for p in pairs], max_bins)
    if len(xs) < 4 or max(xs) == min(xs):
        return None
    slope, intercept = theil_sen(xs, ys)
    residuals = [y - (intercept + slope * x) for x, y in zip(xs, ys, strict=True)]
    mad = statistics.median(abs(r - statistics.median(residuals)) for r in residuals)
    sigma = 1.4826 * mad
    mean_x = statistics.fmean(xs)
    spread = math.sqrt(sum((x - mean_x) ** 2 for x in xs))
    se = sigma / spread if spread > 0 else math.inf
    median = statistics.median(v for _, v in pairs)
    scale = 100.0 / median if median > 0 else 0.0
    pct, noise = slope * scale, NOISE_SE * se * scale
    change = abs(pct) * (max(xs) - min(xs))  # % over the soak
    drift = abs(pct) > tolerance_pct_per_h and abs(pct) > noise and change >= MIN_CHANGE_PCT
    return Trend(slope, pct, noise, median, len(pairs), drift)


@dataclass(frozen=True)
class Collapse:
    time_s: float
    gpu: int
    sm_clock_mhz: float
    median_mhz: float
    temperature_c: float | None


def clock_collapses(
    samples: Sequence[tuple[float, int, float | None, float | None]], fraction: float, hot_c: float
) -> list[Collapse]:
    """Samples (time_s, gpu, sm_clock_mhz, temperature_c) whose SM clock is below `fraction` of that GPU's
    median over the soak while its temperature is below `hot_c` (a hot GPU's drop is thermal throttling,
    reported as such; a cool one's is a power or driver problem). A sample with no temperature counts as cool."""
    by_gpu: dict[int, list[float]] = {}
    for _, gpu, sm, _ in samples:
        if sm is not None and math.isfinite(sm):
            by_gpu.setdefault(gpu, []).append(sm)
    medians = {gpu: statistics.median(v) for gpu, v in by_gpu.items()}
    found: list[Collapse] = []
    for t, gpu, sm, temp in samples:
        if sm is None or gpu not in medians:
            continue
        cool = temp is None or temp < hot_c
        if cool and sm < fraction * medians[gpu]:
            found.append(Collapse(t, gpu, sm, medians[gpu], temp))
    return found


def spans(times: Sequence[float], flagged: set[float], limit: int = 200) -> list[tuple[float, float]]:
    """The runs of consecutive flagged readings (`times` in order) as (first, last) time pairs, at most
    `limit` of them: what a plot shades, without storing every flagged reading."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    last = 0.0
    for t in times:
        if t in flagged:
            start = t if start is None else start
            last = t
        elif start is not None:
            out.append((start, last))
            start = None
    if start is not None:
        out.append((start, last))
    return out[:limit]


def counter_delta(first: Mapping[str, float], last: Mapping[str, float]) -> dict[str, float]:
    """Per cause, how much a cumulative counter grew between two readings (a reset reads as 0, not negative)."""
    return {k: max(0.0, float(last[k]) - float(first.get(k, 0.0))) for k in last if k in first or last[k]}


def energy_per_token(first_j: float | None, last_j: float | None, tokens: int) -> float | None:
    """J/token from two readings of a cumulative energy counter; None without both or without tokens."""
    if first_j is None or last_j is None or tokens <= 0 or last_j < first_j:
        return None
    return (last_j - first_j) / tokens


def depth_ratio(by_depth: Sequence[tuple[int, float]]) -> float | None:
    """Decode tok/s at the deepest step over the shallowest one ((depth_tokens, decode) pairs)."""
    clean = sorted((d, v) for d, v in by_depth if math.isfinite(v) and v > 0)
    if len(clean) < 2 or clean[0][0] == clean[-1][0]:
        return None
    return clean[-1][1] / clean[0][1]
