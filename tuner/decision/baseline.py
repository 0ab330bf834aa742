"""The user's current setting (the baseline trial) against the fastest pick, and what a pick changes
against it. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tuner.decision.trials import (
    decode_of,
    effective_ctx,
    fmt_gib,
    fmt_interval,
    fmt_percent,
    fmt_tok_s,
    has_vram,
    is_complete,
    is_measured,
    is_spilled,
    is_true,
    speed_interval,
    vram_of,
)
from tuner.schema import TrialRecord
from tuner.units import GiB


@dataclass(frozen=True)
class BaselineComparison:
    baseline: TrialRecord | None  # the trial with num_gpu left to the engine
    best: TrialRecord | None  # the fastest pick
    speedup: float | None  # best decode tok/s / baseline decode tok/s, when both were measured
    vram_ratio: float | None  # best peak VRAM / baseline peak VRAM, when both were measured
    summary: str  # what to tell the user, one or two sentences
    within_noise: bool = False  # the baseline is tied with the fastest (their intervals overlap)


def compare_baseline(
    records: Sequence[TrialRecord], best: TrialRecord | None, tied: Sequence[TrialRecord]
) -> BaselineComparison:
    baselines = sorted((r for r in records if is_true(r.baseline)), key=lambda r: r.number)
    if not baselines:
        return BaselineComparison(
            None, best, None, None, "No baseline trial (num_gpu left to the engine) was run in this study."
        )
    finished = [r for r in baselines if is_complete(r)]
    measured = [r for r in finished if is_measured(r)]
    baseline = (measured or finished or baselines)[0]
    label = (
        f"Your current setting, the engine's own placement (trial #{baseline.number}, {baseline.tag}, "
        f"num_ctx {baseline.num_ctx or 'default'})"
    )
    if not is_complete(baseline):
        return BaselineComparison(
            baseline, best, None, None, f"{label} did not finish (state {baseline.state})."
        )
    if not is_measured(baseline):
        message = f"{label} did not load: {baseline.error or 'no message from the server'}."
        if best is not None:
            message += (
                f" autotune's fastest setting runs at {fmt_tok_s(decode_of(best))} tok/s "
                f"(trial #{best.number})."
            )
        return BaselineComparison(baseline, best, None, None, message)

    notes = []
    if is_spilled(baseline):
        notes.append(
            f"your setting spills to the CPU ({fmt_percent(baseline.gpu_fraction)} of the model on the GPU)"
        )
    if not is_true(baseline.feasible):
        notes.append(f"your setting breaks a constraint ({baseline.error or 'see the constraints'})")
    note = f" Note: {'; '.join(notes)}." if notes else ""
    speed = f"{fmt_interval(speed_interval(baseline))} tok/s"
    if best is None:
        return BaselineComparison(
            baseline,
            None,
            None,
            None,
            f"{label} runs at {speed}; no feasible trial to compare it with.{note}",
        )
    within = any(r.number == baseline.number for r in tied)
    speedup = decode_of(best) / decode_of(baseline)
    vram_ratio = (
        vram_of(best) / vram_of(baseline)
        if has_vram(best) and has_vram(baseline) and vram_of(baseline) > 0
        else None
    )
    if within:
        summary = (
            f"{label} is within noise of the fastest: {speed}. You need not change anything for speed; "
            f"the best pick keeps your context ({effective_ctx(best)})."
        )
    else:
        summary = (
            f"The fastest pick (trial #{best.number}) decodes at {fmt_interval(speed_interval(best))} tok/s, "
            f"{speedup:.2f}x {label[0].lower() + label[1:]} at {speed}"
        )
        if vram_ratio is not None:
            summary += f", using {vram_ratio:.2f}x its peak VRAM"
        summary += "."
    return BaselineComparison(baseline, best, speedup, vram_ratio, summary + note, within)


def change_against(base: TrialRecord | None, r: TrialRecord) -> str:
    """What a pick changes against the user's current setting, in a few words."""
    if base is None:
        return "no current setting measured"
    if r.number == base.number:
        return "none: your current setting"
    parts = []
    if r.tag != base.tag:
        parts.append(f"tag {r.tag}")
    ctx, base_ctx = effective_ctx(r), effective_ctx(base)
    if ctx != base_ctx:
        parts.append(f"num_ctx {base_ctx} → {ctx}")
    if r.num_gpu >= 0:
        parts.append(f"num_gpu {r.num_gpu}")
    speed = decode_of(r) / decode_of(base) if is_measured(base) else None
    tied = (a := speed_interval(r)) is not None and (b := speed_interval(base)) is not None and a.overlaps(b)
    if speed is not None:
        parts.append("same speed within noise" if tied else f"{speed:.2f}x the speed")
    if has_vram(r) and has_vram(base):
        delta = vram_of(r) - vram_of(base)
        if abs(delta) < 0.005 * GiB:
            parts.append("same VRAM")
        else:
            parts.append(f"{'+' if delta >= 0 else '-'}{fmt_gib(abs(delta))} VRAM")
    return ", ".join(parts) or "same settings"
