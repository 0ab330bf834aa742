"""What one trial record says, as predicates and numbers the picks, the plots and the text share. Pure.

A trial counts for a pick only when it is COMPLETE, feasible (every user constraint met) and measured
(it loaded and produced a decode speed). Trials that did not load have no speed at all, never 0 tok/s.
Its speed is an interval (tuner.stats): from the interleaved re-measure when the trial was a contender,
else from its own repeats, else (schema 1 records) from the stored mean, CV and repeat count.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import TypeGuard

from tuner.errors import memory_failure_kind
from tuner.schema import TrialRecord, fully_on_gpu
from tuner.stats import Interval, interval_from_summary, t_interval
from tuner.units import GiB

CPU_ONLY_FRACTION = 0.001  # gpu_fraction at or below this: nothing of the model is on the GPU


def finite(value: object) -> TypeGuard[float]:
    """A real number that is not NaN or infinite (the report's records may come back from a CSV with NaN)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_true(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value == 1


def is_complete(record: TrialRecord) -> bool:
    return record.state == "COMPLETE"


def is_measured(record: TrialRecord) -> bool:
    """It loaded and produced a decode speed (an OOM trial's placeholder value does not count)."""
    return finite(record.decode_tok_s) and record.decode_tok_s > 0 and not is_true(record.oom)


def did_not_load(record: TrialRecord) -> bool:
    return is_complete(record) and not is_measured(record)


def is_feasible(record: TrialRecord) -> bool:
    return is_complete(record) and is_true(record.feasible) and is_measured(record)


def _known(flag: object) -> bool:
    return flag is not None and not (isinstance(flag, float) and math.isnan(flag))


def is_on_gpu(record: TrialRecord) -> bool:
    """Fully on the GPU: cpu_spill is False, or (unknown spill) tuner.schema.fully_on_gpu(gpu_fraction)."""
    if _known(record.cpu_spill):
        return not is_true(record.cpu_spill)
    return fully_on_gpu(record.gpu_fraction)


def is_spilled(record: TrialRecord) -> bool:
    if _known(record.cpu_spill):
        return is_true(record.cpu_spill)
    return finite(record.gpu_fraction) and not fully_on_gpu(record.gpu_fraction)


def is_cpu_only(record: TrialRecord) -> bool:
    """Nothing of the model on the GPU: num_gpu 0, or the engine reports (almost) no VRAM for it."""
    if record.num_gpu == 0:
        return True
    return finite(record.gpu_fraction) and record.gpu_fraction <= CPU_ONLY_FRACTION


def has_vram(record: TrialRecord) -> bool:
    return finite(record.peak_vram_bytes)


def own_interval(record: TrialRecord) -> Interval | None:
    """The trial's decode speed from its own repeats (no re-measure), or None when it has none."""
    if not is_measured(record):
        return None
    samples = [v for v in record.decode_samples or [] if finite(v)]
    if samples:
        return t_interval(samples)
    cv = record.decode_cv if finite(record.decode_cv) else None
    return interval_from_summary(float(record.decode_tok_s), cv, int(record.repeats or 0))  # type: ignore[arg-type]


def speed_interval(record: TrialRecord) -> Interval | None:
    """The decode speed every decision uses: the re-measure's when there is one, else the trial's own."""
    again = [v for v in record.remeasure_samples or [] if finite(v)]
    if len(again) >= 2 and is_measured(record):
        return t_interval(again)
    return own_interval(record)


def was_remeasured(record: TrialRecord) -> bool:
    return len([v for v in record.remeasure_samples or [] if finite(v)]) >= 2 and is_measured(record)


def decode_of(record: TrialRecord) -> float:
    """Decode tok/s as one number (the centre of speed_interval), NaN where there is none (never 0)."""
    interval = speed_interval(record)
    return interval.mean if interval is not None else math.nan


def vram_of(record: TrialRecord) -> float:
    """Peak VRAM bytes as a number: the measured value, NaN where there is none."""
    return float(record.peak_vram_bytes) if finite(record.peak_vram_bytes) else math.nan


def vram_or_inf(record: TrialRecord) -> float:
    return vram_of(record) if has_vram(record) else math.inf


def effective_ctx(record: TrialRecord) -> int:
    """num_ctx, or what the engine says it actually uses when that is smaller (trained-length cap)."""
    if finite(record.context_length_loaded) and 0 < record.context_length_loaded < record.num_ctx:
        return int(record.context_length_loaded)
    return int(record.num_ctx)


def feasible_trials(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if is_feasible(r)]


def failure_kind(record: TrialRecord) -> str:
    """Why a finished trial has no speed: "predicted" (not loaded: predicted not to fit), "host" (host RAM),
    "gpu" (GPU memory), "other"; "" for a trial that loaded."""
    if not did_not_load(record):
        return ""
    if is_true(record.predicted_skip):
        return "predicted"
    return memory_failure_kind(record.error or "") or "other"


# ---------------------------------------------------------------------------------------------------------
# Formatting shared by the picks' reasons, the text and the plots
# ---------------------------------------------------------------------------------------------------------


def fmt_tok_s(value: object) -> str:
    return f"{value:.1f}" if finite(value) else "n/a"


def fmt_gib(value: object) -> str:
    return f"{value / GiB:.2f} GiB" if finite(value) else "n/a"


def fmt_percent(value: object) -> str:
    return f"{100 * value:.0f}%" if finite(value) else "n/a"


def fmt_interval(interval: Interval | None) -> str:
    """'42.3 (41.9-42.7)': the mean and its 95% interval; just the mean when no spread is known."""
    if interval is None:
        return "n/a"
    if not interval.known:
        return f"{interval.mean:.1f}"
    return f"{interval.mean:.1f} ({interval.low:.1f}-{interval.high:.1f})"
