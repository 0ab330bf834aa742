"""What the study decided: the Pareto front, the named picks and the baseline comparison. Pure functions.

A trial counts for a pick only when it is COMPLETE, feasible (every user constraint met) and measured
(it loaded and produced a decode speed). Trials that did not load have no speed at all, never 0 tok/s.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeGuard

from tuner.pareto import pareto_front as front_of
from tuner.schema import StudyMeta, TrialRecord, fully_on_gpu, honour_limits
from tuner.units import GiB

PICK_NAMES = ("fastest", "leanest", "balanced", "largest_ctx_on_gpu")
PICK_TITLES = {
    "fastest": "Fastest",
    "leanest": "Leanest (least VRAM)",
    "balanced": "Balanced (knee of the front)",
    "largest_ctx_on_gpu": "Largest context fully on the GPU",
}


@dataclass(frozen=True)
class Pick:
    name: str  # one of PICK_NAMES
    trial: TrialRecord
    reason: str  # one line for people


@dataclass(frozen=True)
class BaselineComparison:
    baseline: TrialRecord | None  # the trial with num_gpu left to the engine
    best: TrialRecord | None  # the fastest feasible trial
    speedup: float | None  # best decode tok/s / baseline decode tok/s, when both were measured
    vram_ratio: float | None  # best peak VRAM / baseline peak VRAM, when both were measured
    summary: str  # what to tell the user, one or two sentences


# ---------------------------------------------------------------------------------------------------------
# Trial predicates
# ---------------------------------------------------------------------------------------------------------


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


def is_on_gpu(record: TrialRecord) -> bool:
    """Fully on the GPU: cpu_spill is False, or (unknown spill) tuner.schema.fully_on_gpu(gpu_fraction)."""
    if record.cpu_spill is not None and not (
        isinstance(record.cpu_spill, float) and math.isnan(record.cpu_spill)
    ):
        return not is_true(record.cpu_spill)
    return fully_on_gpu(record.gpu_fraction)


def is_spilled(record: TrialRecord) -> bool:
    if record.cpu_spill is not None and not (
        isinstance(record.cpu_spill, float) and math.isnan(record.cpu_spill)
    ):
        return is_true(record.cpu_spill)
    return finite(record.gpu_fraction) and not fully_on_gpu(record.gpu_fraction)


def has_vram(record: TrialRecord) -> bool:
    return finite(record.peak_vram_bytes)


def decode_of(record: TrialRecord) -> float:
    """Decode tok/s as a number: the measured value, NaN where there is none (never a placeholder 0)."""
    return float(record.decode_tok_s) if finite(record.decode_tok_s) else math.nan


def vram_of(record: TrialRecord) -> float:
    """Peak VRAM bytes as a number: the measured value, NaN where there is none."""
    return float(record.peak_vram_bytes) if finite(record.peak_vram_bytes) else math.nan


def effective_ctx(record: TrialRecord) -> int:
    """num_ctx, or what the engine says it actually uses when that is smaller (trained-length cap)."""
    if finite(record.context_length_loaded) and 0 < record.context_length_loaded < record.num_ctx:
        return int(record.context_length_loaded)
    return int(record.num_ctx)


def feasible_trials(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if is_feasible(r)]


# ---------------------------------------------------------------------------------------------------------
# Pareto front and picks
# ---------------------------------------------------------------------------------------------------------


def pareto_front(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Feasible COMPLETE trials not dominated on (max decode_tok_s, min peak_vram_bytes), by VRAM."""
    candidates = sorted((r for r in feasible_trials(records) if has_vram(r)), key=lambda r: r.number)
    return front_of(candidates, speed=decode_of, memory=vram_of)


def picks(meta: StudyMeta, records: Sequence[TrialRecord]) -> dict[str, Pick]:
    """The named recommendations that some trial qualifies for (see missing_picks for the others).
    A trial that breaks the study's limits (schema.honour_limits) never qualifies."""
    return _decide(meta, [honour_limits(meta, r) for r in records])[0]


def missing_picks(meta: StudyMeta, records: Sequence[TrialRecord]) -> dict[str, str]:
    """{pick name: why no trial qualifies} for the picks that picks() leaves out."""
    return _decide(meta, [honour_limits(meta, r) for r in records])[1]


def _decide(meta: StudyMeta, records: Sequence[TrialRecord]) -> tuple[dict[str, Pick], dict[str, str]]:
    feasible = feasible_trials(records)
    chosen: dict[str, Pick] = {}
    missing: dict[str, str] = {}
    if not feasible:
        why = _no_feasible_reason(records)
        return {}, {name: why for name in PICK_NAMES}

    fastest = min(feasible, key=lambda r: (-decode_of(r), _vram_or_inf(r), r.number))
    chosen["fastest"] = Pick(
        "fastest",
        fastest,
        f"Highest decode speed of the {len(feasible)} feasible trial{'s' if len(feasible) != 1 else ''}: "
        f"{fmt_tok_s(fastest.decode_tok_s)} tok/s at {fmt_gib(fastest.peak_vram_bytes)} peak VRAM.",
    )

    with_vram = [r for r in feasible if has_vram(r)]
    if with_vram:
        leanest = min(with_vram, key=lambda r: (vram_of(r), -decode_of(r), r.number))
        chosen["leanest"] = Pick(
            "leanest",
            leanest,
            f"Least peak VRAM of the feasible trials: {fmt_gib(leanest.peak_vram_bytes)}, "
            f"at {fmt_tok_s(leanest.decode_tok_s)} tok/s "
            f"({_percent(decode_of(leanest) / decode_of(fastest))} of the fastest).",
        )
        balanced, how = _knee(pareto_front(feasible))
        chosen["balanced"] = Pick(
            "balanced",
            balanced,
            f"{how}: {fmt_tok_s(balanced.decode_tok_s)} tok/s "
            f"({_percent(decode_of(balanced) / decode_of(fastest))} of the fastest) "
            f"for {fmt_gib(balanced.peak_vram_bytes)} peak VRAM.",
        )
    else:
        why = "No feasible trial has a peak VRAM measurement."
        missing["leanest"] = why
        missing["balanced"] = why

    on_gpu = [r for r in feasible if is_on_gpu(r)]
    if on_gpu:
        largest = min(on_gpu, key=lambda r: (-effective_ctx(r), -decode_of(r), r.number))
        ctx = effective_ctx(largest)
        capped = f" (the engine caps num_ctx {largest.num_ctx} at {ctx})" if ctx != largest.num_ctx else ""
        trained = meta.context_length.get(largest.tag) if isinstance(meta.context_length, dict) else None
        of_trained = f" of {trained} trained" if finite(trained) and trained >= ctx else ""
        chosen["largest_ctx_on_gpu"] = Pick(
            "largest_ctx_on_gpu",
            largest,
            f"Largest context that stays fully on the GPU: {ctx} tokens{of_trained}{capped}, "
            f"at {fmt_tok_s(largest.decode_tok_s)} tok/s.",
        )
    else:
        known = [r for r in feasible if r.cpu_spill is not None or finite(r.gpu_fraction)]
        missing["largest_ctx_on_gpu"] = (
            "Every feasible trial spilled part of the model to the CPU."
            if known
            else "No feasible trial reports how much of the model is on the GPU (size_vram / size)."
        )
    return chosen, missing


def _knee(front: list[TrialRecord]) -> tuple[TrialRecord, str]:
    """The front point farthest from the line joining its two ends, on axes normalised to [0, 1].

    Only points on the good side of that line (more speed than the line gives for their VRAM) count:
    a point below it is a dent, not a knee. Without a knee (one or two points, a straight or a convex
    front), the point with the most tokens/s per byte of VRAM is the balanced one.
    """
    if len(front) == 1:
        return front[0], "The only point on the speed/VRAM front"
    speeds = [decode_of(r) for r in front]
    vrams = [vram_of(r) for r in front]
    s_lo, s_span = min(speeds), (max(speeds) - min(speeds)) or 1.0
    v_lo, v_span = min(vrams), (max(vrams) - min(vrams)) or 1.0
    points = [((v - v_lo) / v_span, (s - s_lo) / s_span) for v, s in zip(vrams, speeds)]
    (x0, y0), (x1, y1) = points[0], points[-1]  # the leanest and the fastest end (sorted by VRAM)
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    # Signed distance: > 0 above the line, toward the ideal corner (little VRAM, high speed).
    above = [((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)) / length for x, y in points]
    best = max(range(len(front)), key=lambda i: (round(above[i], 9), -vrams[i]))
    if above[best] > 1e-9:
        return front[best], "Knee of the speed/VRAM front (farthest above the line between its ends)"
    best = max(range(len(front)), key=lambda i: (speeds[i] / max(vrams[i], 1.0), speeds[i]))
    return front[best], "The speed/VRAM front has no knee; the most tokens/s per GiB of VRAM"


def _no_feasible_reason(records: Sequence[TrialRecord]) -> str:
    complete = [r for r in records if is_complete(r)]
    if not records:
        return "The study has no trials yet."
    if not complete:
        return "No trial has finished yet."
    failed = [r for r in complete if not is_measured(r)]
    if len(failed) == len(complete):
        return f"None of the {len(complete)} finished trials loaded."
    return (
        f"No finished trial met every constraint ({len(failed)} did not load, "
        f"{len(complete) - len(failed)} loaded but broke a constraint)."
    )


# ---------------------------------------------------------------------------------------------------------
# Baseline
# ---------------------------------------------------------------------------------------------------------


def baseline_comparison(records: Sequence[TrialRecord]) -> BaselineComparison:
    """The engine's own placement (the baseline trial, num_gpu -1) against the fastest feasible trial."""
    feasible = feasible_trials(records)
    best = min(feasible, key=lambda r: (-decode_of(r), _vram_or_inf(r), r.number)) if feasible else None
    baselines = sorted((r for r in records if is_true(r.baseline)), key=lambda r: r.number)
    if not baselines:
        return BaselineComparison(
            None, best, None, None, "No baseline trial (num_gpu left to the engine) was run in this study."
        )
    finished = [r for r in baselines if is_complete(r)]
    same_tag = [r for r in finished if best is not None and r.tag == best.tag]
    baseline = (same_tag or finished or baselines)[0]
    label = (
        f"The engine's own placement (trial #{baseline.number}, {baseline.tag}, num_ctx {baseline.num_ctx})"
    )
    if not is_complete(baseline):
        return BaselineComparison(
            baseline, best, None, None, f"{label} did not finish (state {baseline.state})."
        )
    if not is_measured(baseline):
        message = f"{label} did not load: {baseline.error or 'no message from the server'}."
        if best is not None:
            message += (
                f" autotune's fastest setting runs at {fmt_tok_s(best.decode_tok_s)} tok/s "
                f"(trial #{best.number})."
            )
        return BaselineComparison(baseline, best, None, None, message)

    notes = []
    if is_spilled(baseline):
        notes.append(
            f"the baseline spilled to the CPU ({_percent(baseline.gpu_fraction)} of the model on the GPU)"
        )
    if not is_true(baseline.feasible):
        notes.append(f"the baseline breaks a constraint ({baseline.error or 'see the constraints'})")
    note = f" Note: {'; '.join(notes)}." if notes else ""
    if best is None:
        return BaselineComparison(
            baseline,
            None,
            None,
            None,
            f"{label} ran at {fmt_tok_s(baseline.decode_tok_s)} tok/s; no feasible trial to compare it with.{note}",
        )
    speedup = decode_of(best) / decode_of(baseline)
    alike_text = ""
    same = [
        r
        for r in feasible
        if r.tag == baseline.tag and r.num_ctx == baseline.num_ctx and not is_true(r.baseline)
    ]
    if same and best.number != baseline.number:
        alike = min(same, key=lambda r: (-decode_of(r), _vram_or_inf(r), r.number))
        if alike.number != best.number:
            alike_text = (
                f" At the baseline's own tag and context, the fastest feasible num_gpu is {alike.num_gpu} "
                f"(trial #{alike.number}): {fmt_tok_s(alike.decode_tok_s)} tok/s, "
                f"{decode_of(alike) / decode_of(baseline):.2f}x."
            )
    vram_ratio = (
        vram_of(best) / vram_of(baseline)
        if has_vram(best) and has_vram(baseline) and vram_of(baseline) > 0
        else None
    )
    if best.number == baseline.number:
        summary = f"{label} is already the fastest feasible setting ({fmt_tok_s(best.decode_tok_s)} tok/s)."
    else:
        summary = (
            f"The fastest pick (trial #{best.number}) decodes at {fmt_tok_s(best.decode_tok_s)} tok/s, "
            f"{speedup:.2f}x {label[0].lower() + label[1:]} at {fmt_tok_s(baseline.decode_tok_s)} tok/s"
        )
        if vram_ratio is not None:
            summary += f", using {vram_ratio:.2f}x its peak VRAM"
        summary += "."
    return BaselineComparison(baseline, best, speedup, vram_ratio, summary + alike_text + note)


# ---------------------------------------------------------------------------------------------------------
# Formatting shared by the report and the picks' reasons
# ---------------------------------------------------------------------------------------------------------


def fmt_tok_s(value: object) -> str:
    return f"{value:.1f}" if finite(value) else "n/a"


def fmt_gib(value: object) -> str:
    return f"{value / GiB:.2f} GiB" if finite(value) else "n/a"


def _percent(value: object) -> str:
    return f"{100 * value:.0f}%" if finite(value) else "n/a"


def _vram_or_inf(record: TrialRecord) -> float:
    return vram_of(record) if has_vram(record) else math.inf
